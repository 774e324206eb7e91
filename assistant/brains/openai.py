"""The openai brain: any OpenAI-compatible chat-completions URL, through the `openai` package (the one HTTP
client layer ftpilot uses for servers).

Prose deltas stream as they arrive; tool-call fragments are buffered by index and handed over whole at the
end of the turn (the agent validates them before anything runs).
"""

from __future__ import annotations

import time
from typing import Iterator

from assistant.brains import BrainUnavailable, TextDelta, ToolCall, TurnEnd, TurnRequest


def api_base(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBrain:
    kind = "openai"

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, timeout: float = 600.0,
                 temperature: float = 0.2, max_tokens: int = 1024):
        self.base = api_base(url)
        self.model = model or ""
        self.api_key = api_key
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.ready = False
        self.state = "not connected"
        self.last: TurnEnd | None = None
        self.rejects_tool_choice = False
        self._client = None

    @property
    def client(self):
        if self._client is None or str(self._client.base_url).rstrip("/") != self.base:
            from openai import OpenAI

            # No silent retries: a dead server should say so at once (the brain then falls back or reports).
            self._client = OpenAI(base_url=self.base, api_key=self.api_key or "not-needed", timeout=self.timeout,
                                  max_retries=0)
        return self._client

    def load(self) -> None:
        """Check the server answers and learn its model name when none was given."""
        import openai

        try:
            models = [m.id for m in self.client.models.list()]
        except openai.APIError as e:
            raise BrainUnavailable(f"no OpenAI-compatible server at {self.base}: {e}") from e
        if not self.model:
            if not models:
                raise BrainUnavailable(f"{self.base} serves no models; set brain_model")
            self.model = models[0]
        self.ready, self.state = True, "ready"

    def describe(self) -> str:
        speed = f", {self.last.tokens_per_s:.1f} tok/s" if self.last and self.last.tokens else ""
        return f"{self.kind} · {self.model or '?'} @ {self.base}{speed}"

    def _payload(self, req: TurnRequest, with_choice: bool) -> dict:
        body = {"model": self.model, "messages": req.messages, "stream": True,
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        if req.tools:
            body["tools"] = req.tools
            if with_choice and req.tool_choice not in (None, "auto"):
                body["tool_choice"] = req.tool_choice
        return body

    def stream(self, req: TurnRequest) -> Iterator[TextDelta | TurnEnd]:
        import openai

        if not self.ready:
            self.load()
        with_choice = not self.rejects_tool_choice
        forced = req.tool_choice not in (None, "auto")
        for attempt in range(2):
            start = time.perf_counter()
            content, first, chunks = [], None, 0
            calls: dict[int, dict] = {}
            try:
                for chunk in self.client.chat.completions.create(**self._payload(req, with_choice)):
                    for choice in chunk.choices[:1]:
                        delta = choice.delta
                        if delta.content:
                            if first is None:
                                first = time.perf_counter() - start
                            chunks += 1
                            content.append(delta.content)
                            yield TextDelta(delta.content)
                        for tc in delta.tool_calls or []:
                            slot = calls.setdefault(tc.index if tc.index is not None else len(calls),
                                                    {"id": "", "name": "", "args": ""})
                            slot["id"] = tc.id or slot["id"]
                            if tc.function is not None:
                                slot["name"] += tc.function.name or ""
                                slot["args"] += tc.function.arguments or ""
                            chunks += 1
                    if chunk.usage and chunk.usage.completion_tokens:
                        chunks = chunk.usage.completion_tokens
            except openai.APIStatusError as e:
                if with_choice and forced and attempt == 0:
                    # transformers serve rejects tool_choice (docs/FACTS.md): ask again without it.
                    self.rejects_tool_choice, with_choice = True, False
                    continue
                raise BrainUnavailable(f"{self.base} answered {e.status_code}: {str(e)[:500]}") from e
            except openai.APIError as e:
                raise BrainUnavailable(f"lost the brain at {self.base}: {e}") from e
            tool_calls = [ToolCall(c["id"] or f"call_{i}", c["name"], c["args"] or "{}")
                          for i, c in sorted(calls.items())]
            self.last = TurnEnd("".join(content), tool_calls, tokens=chunks, seconds=time.perf_counter() - start,
                                first_token_s=first)
            yield self.last
            return
