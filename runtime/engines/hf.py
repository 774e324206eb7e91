"""transformers in-process engine: the CPU default.

Real batching: requests are grouped by (adapter, constraint) and run through `model.generate` in batches with
left padding and an attention mask, so a batch of 16 costs little more than one sequence on this CPU.
Adapters: PEFT LoRA dirs, loaded once each and switched per group; requests without one run with the
adapters disabled. Structured output: xgrammar's `xgrammar.contrib.hf.LogitsProcessor` (one per generate call,
one compiled grammar per row) constrains the tokens to JSON matching the schema (docs/FACTS.md).
Device and precision come from `runtime.hardware.probe()`: fp32 on a CPU without native bf16.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from runtime.engines.base import ChatRequest, Completion, Engine, Sampling, Timer, check_schema
from runtime.errors import BadInput, NotFound


class TransformersEngine(Engine):
    backend = "transformers"

    def __init__(self, model: str = "default", *, device: str | None = None, dtype: str | None = None,
                 batch_size: int = 16, tokenizer: str | None = None):
        super().__init__(model)
        self.tokenizer_path = tokenizer  # another tokenizer dir (a run's adapter keeps the one it trained with)
        from runtime.hardware import probe
        from runtime.models import resolve_model

        self.ref = resolve_model(model)
        hw = probe()
        self.device = device or hw.device
        self.dtype_name = dtype or ("bfloat16" if (hw.has_gpu and hw.bf16) else "float32")
        self.batch_size = batch_size
        self._lock = threading.Lock()   # one generate at a time on a shared model
        self._adapters: dict[str, str] = {}  # adapter dir -> peft adapter name
        self._grammar_cache: dict[str, object] = {}
        self._compiler = None
        self._load()

    # --- loading -----------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer_path or self.ref.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.lm = AutoModelForCausalLM.from_pretrained(self.ref.path, dtype=getattr(torch, self.dtype_name))
        self.lm.to(self.device)
        self.lm.eval()
        self.vocab_size = int(self.lm.config.vocab_size)

    def _adapter_name(self, path: str) -> str:
        """Load a PEFT adapter once; return its name inside the PeftModel."""
        key = str(Path(path).expanduser().resolve())
        if key in self._adapters:
            return self._adapters[key]
        if not (Path(key) / "adapter_config.json").is_file():
            raise NotFound(f"{path} is not a PEFT adapter dir (no adapter_config.json)",
                           hint="Point at the adapter folder a training run wrote (run_dir/adapter).")
        from peft import PeftModel

        name = f"a{len(self._adapters)}"
        if not self._adapters:
            self.lm = PeftModel.from_pretrained(self.lm, key, adapter_name=name)
            self.lm.eval()
        else:
            self.lm.load_adapter(key, adapter_name=name)
        self._adapters[key] = name
        return name

    # --- grammars ----------------------------------------------------------------------------------
    def _compiled(self, req: ChatRequest):
        key = req.grammar if req.grammar else json.dumps(req.json_schema, sort_keys=True)
        if key in self._grammar_cache:
            return self._grammar_cache[key]
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        try:
            if req.grammar:
                g = self._compiler.compile_grammar(req.grammar)
            else:
                # Compact JSON (no free whitespace): a small model cannot loop on blanks, and it is fewer tokens.
                g = self._compiler.compile_json_schema(json.dumps(req.json_schema), strict_mode=True,
                                                       any_whitespace=False)
        except Exception as e:  # xgrammar raises RuntimeError on a bad schema/grammar
            raise BadInput(f"cannot compile the output constraint: {e}",
                           hint="Give a valid JSON schema (or EBNF grammar).") from e
        self._grammar_cache[key] = g
        return g

    # --- prompts -----------------------------------------------------------------------------------
    def prompt_text(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # --- generation --------------------------------------------------------------------------------
    def _generate(self, reqs: list[ChatRequest], sampling: Sampling, *, batch_size: int | None) -> list[Completion]:
        bs = batch_size or self.batch_size
        out: list[Completion | None] = [None] * len(reqs)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(reqs):
            groups.setdefault((r.adapter or "", bool(r.json_schema or r.grammar)), []).append(i)
        with self._lock:
            for (adapter, constrained), idx in groups.items():
                for start in range(0, len(idx), bs):
                    chunk = idx[start:start + bs]
                    for i, comp in zip(chunk, self._run_batch([reqs[i] for i in chunk], adapter, constrained,
                                                              sampling)):
                        out[i] = comp
        return out  # type: ignore[return-value]

    def hold(self, adapter: str | None = None):
        """The loaded model, locked, with `adapter` active (None: adapters off), for callers that run their own
        forward passes on the one shared copy of the weights (the brain's router scores and decodes this way)."""
        import contextlib

        import torch

        @contextlib.contextmanager
        def held():
            with self._lock:
                ctx = contextlib.nullcontext()
                if adapter:
                    name = self._adapter_name(adapter)  # may wrap self.lm in a PeftModel: look it up after
                    self.lm.set_adapter(name)
                elif self._adapters:
                    ctx = self.lm.disable_adapter()
                with ctx, torch.inference_mode():
                    yield self.lm

        return held()

    def _run_batch(self, reqs: list[ChatRequest], adapter: str, constrained: bool,
                   sampling: Sampling) -> list[Completion]:
        import contextlib

        import torch

        texts = [self.prompt_text(r.messages) for r in reqs]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kwargs: dict = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id)
        if sampling.temperature and sampling.temperature > 0:
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if sampling.stop:
            kwargs.update(stop_strings=sampling.stop, tokenizer=self.tokenizer)
        if constrained:
            from xgrammar.contrib.hf import LogitsProcessor

            kwargs["logits_processor"] = [LogitsProcessor([self._compiled(r) for r in reqs])]
        ctx = contextlib.nullcontext()
        if adapter:
            name = self._adapter_name(adapter)
            self.lm.set_adapter(name)
        elif self._adapters:
            ctx = self.lm.disable_adapter()
        with Timer() as t, ctx, torch.inference_mode():
            gen = self.lm.generate(**enc, **kwargs)
        new = gen[:, enc["input_ids"].shape[1]:]
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        if isinstance(self.lm.generation_config.eos_token_id, list):
            eos |= set(self.lm.generation_config.eos_token_id)
        comps = []
        for row, req, mask in zip(new.tolist(), reqs, enc["attention_mask"]):
            n = 0
            for tok in row:
                if tok in eos:
                    break
                n += 1
            finished = n < len(row)
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            if sampling.stop:
                for s in sampling.stop:
                    if s in text:
                        text, finished = text[: text.index(s)], True
            comp = Completion(text=text, prompt_tokens=int(mask.sum()), completion_tokens=n,
                              latency_s=round(t.s, 4), finish_reason="stop" if finished else "length")
            if req.json_schema:
                comp.parsed, comp.error = check_schema(text, req.json_schema)
            comps.append(comp)
        return comps

    # --- scoring (perplexity / eval loss) ----------------------------------------------------------
    def score(self, conversations: list[list[dict]], *, adapter: str | None = None,
              batch_size: int | None = None) -> list[tuple[float, int]]:
        """Negative log-likelihood (sum, in nats) and token count of each conversation's LAST assistant turn
        given everything before it. Perplexity = exp(sum nll / sum tokens)."""
        import contextlib

        import torch

        bs = batch_size or self.batch_size
        results: list[tuple[float, int]] = []
        with self._lock:
            ctx = contextlib.nullcontext()
            if adapter:
                self.lm.set_adapter(self._adapter_name(adapter))
            elif self._adapters:
                ctx = self.lm.disable_adapter()
            with ctx, torch.inference_mode():
                for start in range(0, len(conversations), bs):
                    chunk = conversations[start:start + bs]
                    prompts, fulls = [], []
                    for conv in chunk:
                        if not conv or conv[-1].get("role") != "assistant":
                            raise BadInput("scoring needs conversations that end with an assistant turn")
                        p = self.prompt_text(conv[:-1])
                        prompts.append(p)
                        fulls.append(p + conv[-1]["content"] + (self.tokenizer.eos_token or ""))
                    self.tokenizer.padding_side = "right"
                    try:
                        enc = self.tokenizer(fulls, return_tensors="pt", padding=True, add_special_tokens=False)
                    finally:
                        self.tokenizer.padding_side = "left"
                    plen = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
                    enc = enc.to(self.device)
                    logits = self.lm(**enc).logits.float()
                    logp = torch.log_softmax(logits[:, :-1], dim=-1)
                    target = enc["input_ids"][:, 1:]
                    tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
                    for j in range(len(chunk)):
                        total = int(enc["attention_mask"][j].sum())
                        lo, hi = plen[j] - 1, total - 1
                        results.append((float(-tok_lp[j, lo:hi].sum()), max(hi - lo, 0)))
        return results

    def describe(self) -> dict:
        return {**super().describe(), "path": self.ref.path, "device": self.device, "dtype": self.dtype_name,
                "adapters": list(self._adapters)}
