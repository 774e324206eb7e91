"""The openai brain: any OpenAI-compatible chat-completions URL, streamed over SSE with httpx.

Prose deltas stream as they arrive; tool-call fragments are buffered by index and handed over whole at the
end of the turn (the agent validates them before anything runs).
"""

from __future__ import annotations

import json
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
        self.last: TurnEnd | None = None
        self.rejects_tool_choice = False

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def load(self) -> None:
        """Check the server answers and learn its model name when none was given."""
        import httpx

        try:
            r = httpx.get(f"{self.base}/models", headers=self._headers(), timeout=10)
            r.raise_for_status()
            models = [m["id"] for m in r.json().get("data", [])]
        except (httpx.HTTPError, ValueError, KeyError) as e:
            raise BrainUnavailable(f"no OpenAI-compatible server at {self.base}: {e}") from e
        if not self.model:
            if not models:
                raise BrainUnavailable(f"{self.base} serves no models; set brain_model")
            self.model = models[0]
        self.ready = True

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
        import httpx

        if not self.ready:
            self.load()
        with_choice = not self.rejects_tool_choice
        for attempt in range(2):
            start = time.perf_counter()
            content, first, chunks = [], None, 0
            calls: dict[int, dict] = {}
            try:
                with httpx.stream("POST", f"{self.base}/chat/completions", json=self._payload(req, with_choice),
                                  headers=self._headers(), timeout=self.timeout) as r:
                    if r.status_code >= 400:
                        body = r.read().decode(errors="replace")[:500]
                        if with_choice and req.tool_choice not in (None, "auto") and attempt == 0:
                            # transformers serve rejects tool_choice (docs/FACTS.md): ask again without it.
                            self.rejects_tool_choice, with_choice = True, False
                            continue
                        raise BrainUnavailable(f"{self.base} answered {r.status_code}: {body}")
                    for line in r.iter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[5:].strip()
                        if data == "[DONE]":
                            break
                        try:
                            chunk = json.loads(data)
                        except json.JSONDecodeError:
                            continue
                        for choice in chunk.get("choices", [])[:1]:
                            delta = choice.get("delta") or {}
                            text = delta.get("content")
                            if text:
                                if first is None:
                                    first = time.perf_counter() - start
                                chunks += 1
                                content.append(text)
                                yield TextDelta(text)
                            for tc in delta.get("tool_calls") or []:
                                slot = calls.setdefault(tc.get("index", len(calls)), {"id": "", "name": "", "args": ""})
                                slot["id"] = tc.get("id") or slot["id"]
                                fn = tc.get("function") or {}
                                slot["name"] += fn.get("name") or ""
                                slot["args"] += fn.get("arguments") or ""
                                chunks += 1
                        usage = chunk.get("usage") or {}
                        if usage.get("completion_tokens"):
                            chunks = usage["completion_tokens"]
            except httpx.HTTPError as e:
                raise BrainUnavailable(f"lost the brain at {self.base}: {e}") from e
            seconds = time.perf_counter() - start
            tool_calls = [ToolCall(c["id"] or f"call_{i}", c["name"], c["args"] or "{}")
                          for i, c in sorted(calls.items())]
            self.last = TurnEnd("".join(content), tool_calls, tokens=chunks, seconds=seconds, first_token_s=first)
            yield self.last
            return
