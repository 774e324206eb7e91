"""`ftpilot chat` (and `ftpilot` alone): open the Textual app. Start-up imports only Textual; the brain loads
in a worker after the first frame."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("chat", help="open the chat app (the default command)")
    p.add_argument("--conversation", "-c", default=None,
                   help="open this conversation id (default: the last one, or a new one)")
    p.add_argument("--new", action="store_true", help="start a new conversation instead of resuming the last")
    p.add_argument("--brain", default=None, choices=["auto", "embedded", "openai", "vllm"],
                   help="override the brain setting")
    p.add_argument("--list", action="store_true", help="list conversations (JSON) and exit")
    p.set_defaults(handler=run_chat)


def run_chat(args) -> int:
    if getattr(args, "list", False):
        from assistant.agent import list_conversations
        from assistant.cli import emit

        emit(list_conversations())
        return 0
    from assistant.app import create_app

    app = create_app(conversation_id=getattr(args, "conversation", None), brain_kind=getattr(args, "brain", None),
                     resume_last=not getattr(args, "new", False))
    return run_app(app)


def run_app(app, **run_kw) -> int:
    """Run the app and quit at once: no waiting, on a blank screen, for a tool still running in a thread."""
    import asyncio

    app.run(loop=asyncio.new_event_loop(), **run_kw)  # asyncio.run() would wait for the default executor
    code = int(app.return_code or 0)
    if app.threads_at_work:
        _exit_now(code)  # a tool or the brain's loading still runs in a thread; the app said what stopped
    return code


def _exit_now(code: int) -> None:
    import logging
    import os
    import sys

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
