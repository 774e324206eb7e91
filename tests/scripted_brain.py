"""A brain that replays a script of turns: for tests only, never the product default."""

from __future__ import annotations

import json

from assistant.brains import TextDelta, ToolCall, TurnEnd


class ScriptedBrain:
    """Each script item is a str (prose, streamed word by word), a (tool_name, args) tuple, a list of those
    tuples (parallel calls), or a callable(request) returning one of these."""

    kind = "scripted"
    model = "script"

    def __init__(self, script):
        self.script = list(script)
        self.requests = []
        self.ready = True
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
        if isinstance(item, str):
            for i, word in enumerate(item.split(" ")):
                yield TextDelta(word if i == 0 else " " + word)
            yield TurnEnd(item, [], tokens=len(item.split()), seconds=0.01)
            return
        calls = item if isinstance(item, list) else [item]
        out = []
        for name, args in calls:
            self.n += 1
            out.append(ToolCall(f"call_{self.n}", name, args if isinstance(args, str) else json.dumps(args)))
        yield TurnEnd("", out, tokens=5, seconds=0.01)
