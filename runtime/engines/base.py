"""The engine interface: chat messages in, text + token counts + latency out.

Every backend (transformers in-process, OpenAI-compatible HTTP, vLLM in-process) implements
`Engine.generate(requests, sampling) -> list[Completion]`, one completion per request, in order.
A request may carry a `json_schema` (structured output: the text is JSON matching it) and an `adapter`
(a PEFT/LoRA adapter dir applied to that request only). No heavy imports here.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence


@dataclass
class ChatRequest:
    """One generation request. `messages` are OpenAI-style chat messages ({"role", "content"})."""

    messages: list[dict]
    json_schema: dict | None = None     # constrain the output to JSON matching this schema
    adapter: str | None = None          # a PEFT adapter dir (LoRA) for this request only
    grammar: str | None = None          # an EBNF grammar (xgrammar/vLLM syntax) instead of a schema
    id: str | None = None               # caller's tag, echoed back on the completion


@dataclass
class Sampling:
    """Sampling settings shared by a call. temperature 0 means greedy (deterministic)."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float                    # wall time of the call (or of the batch the request was part of)
    finish_reason: str = "stop"         # stop | length | error
    id: str | None = None
    parsed: Any = None                  # the parsed JSON when the request had a json_schema and it parsed
    error: str | None = None            # e.g. JSON did not match the schema (HTTP backend without constraints)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def as_request(item: ChatRequest | dict | list | str) -> ChatRequest:
    """Accept a ChatRequest, a dict with its fields, a message list, or a bare user string."""
    if isinstance(item, ChatRequest):
        return item
    if isinstance(item, str):
        return ChatRequest(messages=[{"role": "user", "content": item}])
    if isinstance(item, list):
        return ChatRequest(messages=item)
    if isinstance(item, dict):
        if "messages" in item:
            return ChatRequest(**{k: v for k, v in item.items() if k in ChatRequest.__dataclass_fields__})
        raise ValueError("a request dict needs 'messages'")
    raise TypeError(f"cannot make a request from {type(item).__name__}")


def check_schema(text: str, schema: dict | None) -> tuple[Any, str | None]:
    """Parse `text` as JSON and validate it against `schema`; return (parsed or None, error or None)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as e:
        return None, f"not JSON: {e}"
    if schema:
        import jsonschema

        try:
            jsonschema.validate(value, schema)
        except (jsonschema.ValidationError, jsonschema.SchemaError) as e:
            return value, f"does not match the schema: {getattr(e, 'message', e)}"
    return value, None


class Engine:
    """Base class: subclasses implement `_generate` on already-normalised requests."""

    backend = "base"

    def __init__(self, model: str):
        self.model = model

    def generate(self, requests: Sequence[ChatRequest | dict | list | str],
                 sampling: Sampling | dict | None = None, *, batch_size: int | None = None) -> list[Completion]:
        reqs = [as_request(r) for r in requests]
        if isinstance(sampling, dict):
            sampling = Sampling(**sampling)
        sampling = sampling or Sampling()
        if not reqs:
            return []
        out = self._generate(reqs, sampling, batch_size=batch_size)
        for req, comp in zip(reqs, out):
            comp.id = req.id
        return out

    def chat(self, messages: list[dict], *, json_schema: dict | None = None, adapter: str | None = None,
             **sampling) -> Completion:
        """One request, convenience wrapper."""
        return self.generate([ChatRequest(messages, json_schema=json_schema, adapter=adapter)],
                             Sampling(**sampling))[0]

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> dict:
        return {"backend": self.backend, "model": self.model}


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t0
