"""The Textual app. `create_app` is the factory (tests pass a brain; the CLI passes settings).

Only Textual is imported at start-up; the store, the tools and the brain load in workers after the first frame.
"""

from __future__ import annotations


def create_app(conversation_id: str | None = None, brain_kind: str | None = None, brain=None,
               resume_last: bool = True):
    """The app on `conversation_id`, else the last conversation (`resume_last`), else a new one."""
    from assistant.app.main import FtpilotApp

    return FtpilotApp(conversation_id=conversation_id, brain_kind=brain_kind, brain=brain, resume_last=resume_last)
