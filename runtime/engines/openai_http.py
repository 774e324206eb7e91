"""OpenAI-compatible HTTP engine: any server speaking /v1/chat/completions (`vllm serve`, `transformers serve`, ...).

Requests run concurrently (a thread pool over one httpx client) so a server that batches (vLLM) gets a batch.
Structured output: the engine first sends `response_format={"type": "json_schema", ...}` (vLLM honours it).
A server that rejects it with an error, or silently ignores it (transformers 5.24's `transformers serve` logs
"Ignoring unsupported fields" and answers free text), is remembered as unconstrained: a constrained decoder never
returns invalid JSON unless cut off by max_tokens, so an invalid reply to a response_format request proves the
field was ignored (as does a cut-off reply that does not even start like JSON). From then on the schema goes into the prompt as an instruction and the reply is *validated*,
not guaranteed: a completion whose text does not parse or match gets `error` set. `structured="prompt"` skips
the probe; `structured="response_format"` trusts the server. Adapters: a vLLM server started with `--enable-lora
--lora-modules NAME=DIR` serves each adapter as a model named NAME; a request's `adapter` is sent as the model.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from runtime.engines.base import ChatRequest, Completion, Engine, Sampling, check_schema
from runtime.errors import FtpilotError

JSON_INSTRUCTION = ("Reply with only a JSON value that matches this JSON schema, no prose, no code fences:\n{schema}")


class OpenAIEngine(Engine):
    backend = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 timeout: float = 300.0, concurrency: int = 8, structured: str = "auto"):
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)
        self.concurrency = concurrency
        # learnt from the first schema request unless told
        self.supports_response_format: bool | None = {"auto": None, "prompt": False}.get(structured, True)
        super().__init__(model or self._first_model())

    def _first_model(self) -> str:
        import httpx

        try:
            r = self.client.get("/models")
            r.raise_for_status()
            data = r.json().get("data") or []
        except (httpx.HTTPError, ValueError) as e:
            raise FtpilotError(f"cannot reach an OpenAI-compatible server at {self.base_url}: {e}", code="engine_down",
                               hint="Start one (`vllm serve MODEL` or `transformers serve MODEL_DIR`) or fix the URL.")
        if not data:
            raise FtpilotError(f"{self.base_url}/models lists no model", code="engine_down",
                               hint="Name the model explicitly: openai:URL#MODEL")
        return data[0]["id"]

    def _post(self, body: dict) -> tuple[int, dict | str]:
        r = self.client.post("/chat/completions", json=body)
        try:
            return r.status_code, r.json()
        except ValueError:
            return r.status_code, r.text

    def _one(self, req: ChatRequest, sampling: Sampling) -> Completion:
        body: dict = {"model": req.adapter or self.model, "messages": req.messages,
                      "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                      "top_p": sampling.top_p, "stream": False}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        constrained = False
        if req.json_schema and self.supports_response_format is not False:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "output", "schema": req.json_schema, "strict": True}}
            constrained = True
        t0 = time.perf_counter()
        status, data = self._post(body)
        if constrained and status >= 400 and "response_format" in json.dumps(data):
            # The server refuses constrained decoding: fall back to instructing + validating.
            self.supports_response_format = False
            constrained = False
            body.pop("response_format")
        elif constrained and status < 400 and isinstance(data, dict) and self.supports_response_format is None:
            choice = (data.get("choices") or [{}])[0]
            text = (choice.get("message") or {}).get("content") or ""
            _, err = check_schema(_strip_fences(text), req.json_schema)
            if err is None:
                self.supports_response_format = True
            elif choice.get("finish_reason") != "length" or not _strip_fences(text)[:1] in ("{", "["):
                self.supports_response_format = False  # the field was ignored: free text came back
                constrained = False
                body.pop("response_format")
        if req.json_schema and not constrained:
            instr = JSON_INSTRUCTION.format(schema=json.dumps(req.json_schema))
            msgs = [dict(m) for m in req.messages]
            if msgs and msgs[0].get("role") == "system":
                msgs[0]["content"] = f"{msgs[0]['content']}\n\n{instr}"
            else:
                msgs.insert(0, {"role": "system", "content": instr})
            body["messages"] = msgs
            t0 = time.perf_counter()
            status, data = self._post(body)
        latency = time.perf_counter() - t0
        if status >= 400 or not isinstance(data, dict):
            return Completion(text="", prompt_tokens=0, completion_tokens=0, latency_s=round(latency, 4),
                              finish_reason="error", error=f"HTTP {status}: {str(data)[:500]}")
        choice = (data.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        usage = data.get("usage") or {}
        comp = Completion(text=text, prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0), latency_s=round(latency, 4),
                          finish_reason=choice.get("finish_reason") or "stop",
                          extra={"constrained": constrained} if req.json_schema else {})
        if req.json_schema:
            comp.parsed, comp.error = check_schema(_strip_fences(text), req.json_schema)
        return comp

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        import httpx

        def safe(req: ChatRequest) -> Completion:
            try:
                return self._one(req, sampling)
            except httpx.HTTPError as e:
                return Completion(text="", prompt_tokens=0, completion_tokens=0, latency_s=0.0,
                                  finish_reason="error", error=f"{type(e).__name__}: {e}")

        # The first schema request alone teaches us whether response_format works, before fanning out.
        first = [safe(reqs[0])]
        with ThreadPoolExecutor(max_workers=batch_size or self.concurrency) as pool:
            return first + list(pool.map(safe, reqs[1:]))

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict:
        return {**super().describe(), "base_url": self.base_url,
                "supports_response_format": self.supports_response_format}


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else t[3:]
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()
