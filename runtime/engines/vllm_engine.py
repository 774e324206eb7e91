"""vLLM in-process engine (GPU only; `pip install ftpilot[gpu]`).

One `vllm.LLM` per model; every request becomes one prompt with its own `SamplingParams` (structured outputs
from its JSON schema or grammar) and its own `LoRARequest` (adapter dir), and vLLM's scheduler batches them all.
Written against vLLM >= 0.12 (`StructuredOutputsParams`), with a fallback to the older `GuidedDecodingParams`.
NOT exercised on the CPU machine this was built on (vLLM needs a GPU): see README "Evaluation and decisions".
"""

from __future__ import annotations

from pathlib import Path

from runtime.engines.base import ChatRequest, Completion, Engine, Sampling, Timer, check_schema
from runtime.errors import FtpilotError


class VLLMEngine(Engine):
    backend = "vllm"

    def __init__(self, model: str = "default", *, max_lora_rank: int = 64, gpu_memory_utilization: float = 0.85,
                 max_model_len: int | None = None, **llm_kwargs):
        super().__init__(model)
        from runtime.hardware import probe
        from runtime.models import resolve_model

        hw = probe()
        if not hw.has_gpu:
            raise FtpilotError("the vllm engine needs a GPU; this machine has none", code="no_gpu",
                               hint="Use the transformers engine (default) or an OpenAI-compatible server.")
        try:
            from vllm import LLM
        except ImportError as e:
            raise FtpilotError("vLLM is not installed", code="missing_dependency",
                               hint="pip install 'ftpilot[gpu]' on a CUDA machine.") from e
        self.ref = resolve_model(model)
        self.llm = LLM(model=self.ref.path, dtype="bfloat16" if hw.bf16 else "float16", enable_lora=True,
                       max_lora_rank=max_lora_rank, gpu_memory_utilization=gpu_memory_utilization,
                       max_model_len=max_model_len, **llm_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[str, int] = {}

    def _lora(self, adapter: str | None):
        if not adapter:
            return None
        from vllm.lora.request import LoRARequest

        key = str(Path(adapter).expanduser().resolve())
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        return LoRARequest(f"adapter{self._lora_ids[key]}", self._lora_ids[key], key)

    def _params(self, req: ChatRequest, s: Sampling):
        from vllm import SamplingParams

        kw: dict = dict(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                        stop=s.stop)
        if req.json_schema or req.grammar:
            spec = {"json": req.json_schema} if req.json_schema else {"grammar": req.grammar}
            try:
                from vllm.sampling_params import StructuredOutputsParams

                kw["structured_outputs"] = StructuredOutputsParams(**spec)
            except ImportError:  # vLLM < 0.12
                from vllm.sampling_params import GuidedDecodingParams

                kw["guided_decoding"] = GuidedDecodingParams(**spec)
        return SamplingParams(**kw)

    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        prompts = [self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True)
                   for r in reqs]
        params = [self._params(r, sampling) for r in reqs]
        loras = [self._lora(r.adapter) for r in reqs]
        with Timer() as t:
            outs = self.llm.generate(prompts, sampling_params=params,
                                     lora_request=loras if any(loras) else None, use_tqdm=False)
        comps = []
        for req, o in zip(reqs, outs):
            c = o.outputs[0]
            comp = Completion(text=c.text, prompt_tokens=len(o.prompt_token_ids or []),
                              completion_tokens=len(c.token_ids), latency_s=round(t.s, 4),
                              finish_reason=c.finish_reason or "stop")
            if req.json_schema:
                comp.parsed, comp.error = check_schema(c.text, req.json_schema)
            comps.append(comp)
        return comps
