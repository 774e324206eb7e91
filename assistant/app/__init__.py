"""The Textual app. `create_app` is the factory (tests pass a brain; the CLI passes settings).

Only Textual is imported at start-up; the store, the tools and the brain load in workers after the first frame.
"""

from __future__ import annotations


def create_app(conversation_id: str | None = None, brain_kind: str | None = None, brain=None):
    from assistant.app.main import FtpilotApp

    return FtpilotApp(conversation_id=conversation_id, brain_kind=brain_kind, brain=brain)
