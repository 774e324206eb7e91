"""`ftpilot ask "..." [--yes] [--json]`: one turn through the same agent as the app, headless.

The transcript (prose, tool calls with arguments and results) goes to stdout; `--json` prints it as one JSON
document. Tools that need approval run only with `--yes`; without it they are rejected and the reply says so.
`--yes` approves only what the message asks for (the step it routes to, or the one its slash command names): a
call the brain proposes after reading tool output is rejected with the reason (tool output is data).
"""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("ask", help="one chat turn, headless: prints the transcript")
    p.add_argument("message", help="what to ask (slash commands work: '/audit data/train.jsonl')")
    p.add_argument("--yes", action="store_true",
                   help="approve the costly steps this message asks for (train, generate, overwrite); other calls "
                        "the brain proposes after reading tool output are still rejected")
    p.add_argument("--json", action="store_true", help="print the transcript as JSON")
    p.add_argument("--conversation", "-c", default=None, help="continue this conversation id")
    p.add_argument("--brain", default=None, choices=["auto", "embedded", "openai", "vllm"],
                   help="override the brain setting")
    p.add_argument("--wait", action="store_true", help="wait for jobs this turn starts, then summarize them")
    p.set_defaults(handler=run_ask)


def _event_dict(ev) -> dict:
    from dataclasses import asdict

    return {"type": type(ev).__name__, **asdict(ev)}


def run_ask(args) -> int:
    from assistant.agent import (Agent, AssistantDelta, AssistantMessage, JobEnded, Notice, ToolFinished,
                                 ToolStarted, TurnDone, approve_requested, reject_all)
    from assistant.brains import BrainUnavailable, make_brain
    from runtime.errors import FtpilotError

    events: list = []
    streamed = [False]

    def emit(ev) -> None:
        if not isinstance(ev, AssistantDelta):
            events.append(ev)
        if args.json:
            return
        out = sys.stdout
        if isinstance(ev, AssistantDelta):
            out.write(ev.text)
            streamed[0] = True
        elif isinstance(ev, AssistantMessage):
            if not streamed[0] and ev.content:
                out.write(ev.content)
            out.write(f"\n  [{ev.brain}{', ' + ev.note if ev.note else ''}]\n")
            streamed[0] = False
        elif isinstance(ev, ToolStarted):
            out.write(f"→ {ev.name}({json.dumps(ev.arguments)})  [{ev.cost}]\n")
        elif isinstance(ev, ToolFinished):
            mark = "✓" if ev.ok else "✗"
            out.write(f"{mark} {ev.name} {ev.duration_s:.2f}s: {json.dumps(ev.result, default=str)[:2000]}\n")
        elif isinstance(ev, Notice):
            out.write(f"! {ev.text}\n")
        elif isinstance(ev, JobEnded):
            out.write(f"● job {ev.job_id} {ev.status}\n")
        out.flush()

    try:
        brain = make_brain(None if args.brain in (None, "auto") else args.brain)
        print(f"loading brain ({type(brain).__name__})…", file=sys.stderr)
        brain.load()
        agent = Agent(brain, conversation_id=args.conversation, approver=approve_requested if args.yes else reject_all,
                      emit=emit)
        done = agent.send(args.message)
        if args.wait:
            import time

            while agent.watched_jobs:
                time.sleep(2)
                agent.check_jobs()
    except (BrainUnavailable, FtpilotError) as e:
        msg = e.to_dict() if isinstance(e, FtpilotError) else {"code": "brain_unavailable", "message": str(e)}
        if args.json:
            print(json.dumps({"error": msg}, indent=2))
        else:
            print(f"ftpilot: {msg['message']}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"conversation_id": agent.conversation_id, "brain": brain.describe(),
                          "events": [_event_dict(e) for e in events]}, indent=2, default=str))
    else:
        print(f"(conversation {agent.conversation_id}; continue with --conversation {agent.conversation_id})",
              file=sys.stderr)
    failed = isinstance(done, TurnDone) and done.stopped in ("brain_error",)
    return 1 if failed else 0
