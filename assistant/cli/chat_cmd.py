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
    app.run()
    return int(app.return_code or 0)
