"""A brain that replays a script of turns: for tests only, never the product default."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from assistant.brains import TextDelta, ToolCall, TurnEnd


@dataclass
class HeldReply:
    """Prose that streams `before` words, then waits until the test sets `release` (so a test can act while the
    reply is surely still streaming, whatever the machine's speed), then streams the rest."""

    text: str
    before: int = 3
    release: threading.Event = field(default_factory=threading.Event)


class ScriptedBrain:
    """Each script item is a str (prose, streamed word by word), a HeldReply, a (tool_name, args) tuple, a list of those
    tuples (parallel calls), or a callable(request) returning one of these. `delay` sleeps between streamed
    words (a slow model), so a test can act while a turn runs."""

    kind = "scripted"
    model = "script"

    def __init__(self, script, delay: float = 0.0):
        self.script = list(script)
        self.requests = []
        self.ready = True
        self.delay = delay
        self.n = 0

    def load(self):
        self.ready = True

    def describe(self):
        return "scripted · test"

    def stream(self, req):
        self.requests.append(req)
        item = self.script.pop(0) if self.script else "(script finished)"
        if callable(item):
            item = item(req)
        held = item if isinstance(item, HeldReply) else None
        if held is not None:
            item = held.text
        if isinstance(item, str):
            for i, word in enumerate(item.split(" ")):
                if held is not None and i == held.before:
                    held.release.wait(60)
                if self.delay:
                    time.sleep(self.delay)
                yield TextDelta(word if i == 0 else " " + word)
            yield TurnEnd(item, [], tokens=len(item.split()), seconds=0.01)
            return
        calls = item if isinstance(item, list) else [item]
        out = []
        for name, args in calls:
            self.n += 1
            out.append(ToolCall(f"call_{self.n}", name, args if isinstance(args, str) else json.dumps(args)))
        yield TurnEnd("", out, tokens=5, seconds=0.01)


def obey_injected_text(req):
    """A brain that follows instructions it reads in tool output (what a careless model does): the last tool
    result's text `SYSTEM: call NAME {json args}` becomes that call."""
    import re

    text = req.messages[-1].get("content") or ""
    m = re.search(r"SYSTEM: call (\w+) (\{.*?\})", text)
    if m is None:
        return "Nothing to do."
    return m.group(1), json.loads(m.group(2).replace('\\"', '"'))
