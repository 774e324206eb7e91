"""Agent events as Textual messages.

The agent is UI-free: from its worker thread it calls `emit(event)` with plain dataclasses and `approver(call)`.
`AgentBridge` turns each event into one of the messages below and posts it to the app (`post_message` is
thread-safe), where handlers take them with `@on`; the UI state is only ever changed on the UI thread.
Streamed prose coalesces: each `Streamed` carries the whole reply so far, so a newer one replaces an older one
still waiting in the queue (Toolong's habit for high-rate updates); so do `ToolProgress` and `JobUpdate`.
"""

from __future__ import annotations

import threading
from typing import Callable

from textual.message import Message


class AgentMessage(Message):
    """Base of the messages that carry an agent event (`event` is the agent's dataclass)."""

    def __init__(self, event=None):
        super().__init__()
        self.event = event


class Streamed(AgentMessage):
    """The assistant's reply so far (whole text, not a delta)."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, Streamed)


class Replied(AgentMessage):
    """A finished assistant message (`event`: AssistantMessage)."""


class ToolStarted(AgentMessage):
    """A tool call starts (`event`: agent.ToolStarted)."""


class ToolFinished(AgentMessage):
    """A tool call ended, or was refused before it ran (`event`: agent.ToolFinished)."""


class Notice(AgentMessage):
    """Something the person should know (`event`: agent.Notice)."""


class JobEnded(AgentMessage):
    """A watched job reached a terminal state (`event`: agent.JobEnded)."""


class TurnFinished(AgentMessage):
    """The agent finished what it does about one message (`event`: agent.TurnDone)."""


class ToolProgress(Message):
    """The last progress line a running tool wrote (on stderr)."""

    def __init__(self, line: str):
        super().__init__()
        self.line = line

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ToolProgress)


class JobUpdate(Message):
    """A watched job's row as the poll read it."""

    def __init__(self, job):
        super().__init__()
        self.job = job

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobUpdate) and message.job.id == self.job.id


class ApprovalNeeded(Message):
    """A costly (or unrequested) call waits for the person. The agent's thread blocks until `answer`."""

    def __init__(self, pending):
        super().__init__()
        self.pending = pending
        self.decision = None
        self.answered = threading.Event()

    def answer(self, decision) -> None:
        if not self.answered.is_set():
            self.decision = decision
            self.answered.set()


_EVENT_MESSAGES: dict[str, type[AgentMessage]] = {
    "AssistantMessage": Replied, "ToolStarted": ToolStarted, "ToolFinished": ToolFinished, "Notice": Notice,
    "JobEnded": JobEnded, "TurnDone": TurnFinished}


class AgentBridge:
    """The agent's `emit` and `approver`, called in the agent's thread; everything goes to `post`."""

    def __init__(self, post: Callable[[Message], bool], stop_waiting: Callable[[], str | None]):
        self.post = post
        self.stop_waiting = stop_waiting  # returns why a pending approval must end now (app closing, stop)
        self.text = ""

    def emit(self, event) -> None:
        name = type(event).__name__
        if name == "AssistantDelta":
            self.text += event.text
            self.post(Streamed(self.text))
            return
        self.text = ""
        self.post(_EVENT_MESSAGES[name](event))

    def approve(self, pending):
        from assistant.agent import Decision

        msg = ApprovalNeeded(pending)
        if not self.post(msg):
            return Decision("reject", reason="the app is closing")
        while not msg.answered.wait(0.1):
            if (why := self.stop_waiting()) is not None:
                msg.answer(Decision("reject", reason=why))
        return msg.decision
