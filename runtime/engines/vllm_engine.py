"""The vLLM engine: the managed vLLM server (runtime/serving.py) through the OpenAI-compatible client.

`get_engine("vllm:MODEL")` starts the server for MODEL if none runs (or returns the running one), sends every
request concurrently so vLLM's scheduler batches them, loads each request's adapter into the server once
(`serving.ensure_adapter`, no restart), and decodes JSON-schema requests under vLLM's structured outputs.
A request that cannot connect makes the engine ask `serving.recover()` (restart once) and retry it.
"""

from __future__ import annotations

from runtime.engines.base import ChatRequest, Completion, Sampling
from runtime.engines.openai_http import OpenAIEngine


class VLLMEngine(OpenAIEngine):
    backend = "vllm"

    def __init__(self, model: str = "default", *, timeout_s: float = 600, concurrency: int = 32):
        from runtime import serving

        st = serving.start(model, timeout_s=timeout_s)
        self.start_timeout = timeout_s
        self._served: dict[str, str] = {}  # adapter dir -> served name
        super().__init__(st.url, st.model, concurrency=concurrency, structured="response_format")

    def _model_for(self, req: ChatRequest) -> str:
        return self._served[req.adapter] if req.adapter else self.model

    def _load_adapters(self, reqs: list[ChatRequest]) -> None:
        from runtime import serving

        for path in {r.adapter for r in reqs if r.adapter}:
            resolved = serving.adapter_dir(path)
            self._served[path] = serving.ensure_adapter(serving.adapter_name(resolved), resolved)

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        from runtime import serving

        self._load_adapters(reqs)
        out = super()._generate(reqs, sampling, batch_size=batch_size)
        lost = [i for i, c in enumerate(out) if c.extra.get("connection_error")]
        if lost:  # the server died or moved: bring it back (once) and resend what was lost
            st = serving.recover(self.start_timeout)
            if st.url != self.base_url:
                self.client.close()
                self.base_url = st.url
                self.client = self._client()
            self._served.clear()
            self._load_adapters(reqs)
            again = super()._generate([reqs[i] for i in lost], sampling, batch_size=batch_size)
            for i, comp in zip(lost, again):
                out[i] = comp
        return out

    def describe(self) -> dict:
        from runtime import serving

        st = serving.status()
        return {**super().describe(), "server": st.state, "device": st.device, "dtype": st.dtype,
                "model_path": st.model_path}
