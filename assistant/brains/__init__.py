"""Brains: what writes the assistant's turns. All speak one protocol: stream a turn from chat messages and
OpenAI tool schemas, yielding prose deltas and, at the end, the buffered tool calls.

- `openai`: any OpenAI-compatible URL (`transformers serve`, `vllm serve`, a hosted API), via the `openai` package.
- `vllm`: the openai brain against a `vllm serve` URL, or a `vllm serve` it starts itself on a GPU.
- `embedded`: the bundled model with ftpilot's own router adapter (assistant/brains/router.py, built by
  `ftpilot brain build`): tool and arguments decoded under a JSON-schema grammar, replies from facts. With
  `brain=auto` and a vLLM runtime here it also starts the managed vLLM server and routes through it once up.

Nothing heavy is imported here: the embedded brain imports torch/transformers only in `load()`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text, as the protocol carries it

    def as_message_part(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def parsed(self) -> Any:
        return json.loads(self.arguments or "{}")


@dataclass
class TurnEnd:
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tokens: int = 0
    seconds: float = 0.0
    first_token_s: float | None = None
    note: str | None = None  # e.g. how the embedded brain chose its tool

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


BrainEvent = TextDelta | TurnEnd


@dataclass
class TurnRequest:
    """What the agent hands a brain for one assistant turn."""

    messages: list[dict]
    tools: list[dict]
    tool_choice: str | dict | None = None   # None/"auto" | "none" | "required" | {"type":"function","function":{...}}
    context: dict = field(default_factory=dict)  # workflow hints (plan's next step, known paths, run ids)


class Brain(Protocol):
    kind: str     # embedded | openai | vllm | scripted
    model: str
    ready: bool

    def load(self) -> None: ...

    def stream(self, req: TurnRequest) -> Iterator[BrainEvent]: ...

    def describe(self) -> str: ...


class BrainUnavailable(Exception):
    """The brain cannot start (no server, no GPU, no model); the message says what to do."""


def choose_kind(settings=None) -> str:
    """auto: a configured URL means openai-compatible (vllm when named), a GPU with vllm installed means
    a self-started vllm, else the embedded model."""
    from runtime.settings import get_settings

    s = settings or get_settings()
    if s.brain != "auto":
        return s.brain
    if s.brain_url:
        return "openai"
    import importlib.util
    import shutil

    if importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi"):
        return "vllm"
    return "embedded"


def make_brain(kind: str | None = None, settings=None) -> Brain:
    """Build (not load) the brain named by settings; `load()` it in a worker."""
    from runtime.settings import get_settings

    s = settings or get_settings()
    kind = kind or choose_kind(s)
    if kind == "openai":
        from assistant.brains.openai import OpenAIBrain

        if not s.brain_url:
            raise BrainUnavailable("brain=openai needs brain_url (FTPILOT_BRAIN_URL), e.g. http://localhost:8000/v1")
        return OpenAIBrain(s.brain_url, s.brain_model)
    if kind == "vllm":
        from assistant.brains.vllm import VLLMBrain

        return VLLMBrain(url=s.brain_url, model=s.brain_model)  # the server reads brain_tool_parser
    if kind == "embedded":
        from assistant.brains.embedded import EmbeddedBrain

        return EmbeddedBrain(s.brain_model or "default", serve=s.brain == "auto" and _serving_available())
    raise BrainUnavailable(f"unknown brain {kind!r}: use auto, vllm, openai or embedded")


def _serving_available() -> bool:
    """A vLLM runtime for the managed server exists here (runtime/serving.py decides)."""
    try:
        from runtime import serving
    except ImportError:
        return False
    return serving.available()
