"""OpenAI-compatible engine: any server speaking /v1/chat/completions (`vllm serve`, `transformers serve`, ...),
through the `openai` package (no hand-written HTTP).

Requests run concurrently (a thread pool over one client) so a server that batches (vLLM) gets a batch.
Structured output: the engine first sends `response_format={"type": "json_schema", ...}` (vLLM enforces it).
A server that rejects it with an error, or silently ignores it (transformers 5.24's `transformers serve` logs
"Ignoring unsupported fields" and answers free text), is remembered as unconstrained: a constrained decoder never
returns invalid JSON unless cut off by max_tokens, so an invalid reply to a response_format request proves the
field was ignored (as does a cut-off reply that does not even start like JSON). From then on the schema goes into
the prompt as an instruction and the reply is *validated*, not guaranteed: a completion whose text does not parse
or match gets `error` set. `structured="prompt"` skips the probe; `structured="response_format"` trusts the server.
A request's grammar goes as vLLM's `structured_outputs` extension. A request's `adapter` is sent as the model name
(a vLLM server serves each LoRA adapter under its own name). With `token_ids=True` (vLLM's `return_token_ids`)
each completion's `extra` holds the prompt and answer token ids the server used.

URLs are loopback only unless the `allow_remote_engines` setting says otherwise: prompts (evaluation rows, a
person's data) never leave the machine by accident.
"""

from __future__ import annotations

import ipaddress
import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from runtime.engines.base import ChatRequest, Completion, Engine, Sampling, check_schema
from runtime.errors import BadInput, FtpilotError

JSON_INSTRUCTION = ("Reply with only a JSON value that matches this JSON schema, no prose, no code fences:\n{schema}")


def check_url(base_url: str) -> str:
    """The URL with a /v1 suffix, refused unless it is on this machine or remote engines are allowed."""
    from runtime.settings import get_settings

    url = base_url.strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadInput(f"not an http(s) URL: {base_url!r}", code="bad_engine_url",
                       hint="e.g. openai:http://127.0.0.1:8000/v1")
    if not _is_loopback(parsed.hostname) and not get_settings().allow_remote_engines:
        raise BadInput(f"the engine URL {url} is not on this machine; ftpilot sends prompts only to loopback "
                       "servers unless allowed", code="remote_engine_refused",
                       hint="Set FTPILOT_ALLOW_REMOTE_ENGINES=1 (or allow_remote_engines = true in the config) "
                            "to send data to other hosts.")
    return url if url.endswith("/v1") else url + "/v1"


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class OpenAIEngine(Engine):
    backend = "openai"

    def __init__(self, base_url: str, model: str | None = None, *, api_key: str | None = None,
                 timeout: float = 300.0, concurrency: int = 8, structured: str = "auto", token_ids: bool = False):
        self.base_url = check_url(base_url)
        self.token_ids = token_ids
        self.api_key, self.timeout = api_key, timeout
        self.client = self._client()
        self.concurrency = concurrency
        # learnt from the first schema request unless told
        self.supports_response_format: bool | None = {"auto": None, "prompt": False}.get(structured, True)
        super().__init__(model or self._first_model())

    def _client(self):
        import openai

        # One retry: a local server either answers or is down (the vllm engine then recovers it).
        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY", timeout=self.timeout,
                             max_retries=1)

    def _first_model(self) -> str:
        import openai

        try:
            data = self.client.models.list().data
        except openai.OpenAIError as e:
            raise FtpilotError(f"cannot reach an OpenAI-compatible server at {self.base_url}: {e}", code="engine_down",
                               hint="Start one (`ftpilot serve start`) or fix the URL.") from e
        if not data:
            raise FtpilotError(f"{self.base_url}/models lists no model", code="engine_down",
                               hint="Name the model explicitly: openai:URL#MODEL")
        return data[0].id

    def _model_for(self, req: ChatRequest) -> str:
        return req.adapter or self.model

    def _post(self, body: dict) -> tuple[int, dict | str]:
        """One chat completion; (HTTP status, response dict or error text). Connection errors raise."""
        import openai

        known = ("model", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "response_format")
        kwargs = {k: v for k, v in body.items() if k in known}
        extra = {k: v for k, v in body.items() if k not in known}
        try:
            resp = self.client.chat.completions.create(**kwargs, extra_body=extra or None)
        except openai.APIStatusError as e:
            return e.status_code, e.body if isinstance(e.body, dict) else str(e.body or e.message)
        return 200, resp.model_dump()

    def _one(self, req: ChatRequest, sampling: Sampling) -> Completion:
        body: dict = {"model": self._model_for(req), "messages": req.messages,
                      "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                      "top_p": sampling.top_p}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = sampling.stop
        if req.grammar:
            body["structured_outputs"] = {"grammar": req.grammar}
        if self.token_ids:
            body["return_token_ids"] = True
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
        if self.token_ids:
            comp.extra.update(prompt_token_ids=data.get("prompt_token_ids"), token_ids=choice.get("token_ids"))
        if req.json_schema:
            comp.parsed, comp.error = check_schema(_strip_fences(text), req.json_schema)
        return comp

    def _safe(self, req: ChatRequest, sampling: Sampling) -> Completion:
        """A request's failure is its completion's error, never an exception for the whole call."""
        import openai

        try:
            return self._one(req, sampling)
        except openai.APIConnectionError as e:
            return _failed(f"cannot connect to {self.base_url}: {e}", connection=True)
        except openai.OpenAIError as e:
            return _failed(f"{type(e).__name__}: {e}")

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        # A first schema request alone teaches us whether response_format works, before fanning out.
        probe = self.supports_response_format is None and reqs[0].json_schema is not None
        first = [self._safe(reqs[0], sampling)] if probe else []
        with ThreadPoolExecutor(max_workers=batch_size or self.concurrency) as pool:
            return first + list(pool.map(lambda r: self._safe(r, sampling), reqs[len(first):]))

    def close(self) -> None:
        self.client.close()

    def describe(self) -> dict:
        return {**super().describe(), "base_url": self.base_url,
                "supports_response_format": self.supports_response_format}


def _failed(error: str, connection: bool = False) -> Completion:
    return Completion(text="", prompt_tokens=0, completion_tokens=0, latency_s=0.0, finish_reason="error",
                      error=error, extra={"connection_error": True} if connection else {})


def _strip_fences(text: str) -> str:
    t = text.strip()
    if t.startswith("```"):
        t = t.split("\n", 1)[1] if "\n" in t else t[3:]
        if t.rstrip().endswith("```"):
            t = t.rstrip()[:-3]
    return t.strip()
