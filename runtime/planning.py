"""Memory planning: predict a training run's peak memory and choose a config that fits a machine: this one, or a
named target (`{"device": "cuda", "gpu_memory_gb": 24}`) so a person can ask before renting one.

Peak = weights (fp32 / bf16 / 4-bit nf4 with double quant; embeddings stay dense)
     + trainable state (gradients + AdamW's two moments)
     + activations autograd keeps for backward, at the longest padded batch the data will produce
     + on the CPU the Python process itself; on CUDA backward's transients (the CUDA context is outside torch's
       allocator, so it is left out of `total_mb`, which predicts `torch.cuda.max_memory_allocated`, and kept out
       of the budget instead).

CUDA activations per token and decoder layer were measured with bench/activations.py (the tensors a real TRL step
saves for backward; SDPA keeps no attention matrix and TRL's chunked cross-entropy no logits): full fine-tuning
keeps about 1.135 x (12h + 6q + 4kv + 8i) bytes in bf16 (norm inputs in fp32, q/k/v, the attention output, the
MLP's gate, up, activation and product); LoRA drops what only frozen weights' gradients need (the norms' bf16
outputs and the down projection's input, 4h + 2i) and adds, per adapted linear, its dropout mask and its bf16
input (3 bytes per input feature; 2 without dropout). This reproduces the H200 table of the GPU-training issue
(0.82B Llama, LoRA r16, batch 8, rows up to ~1k tokens): 17.6 GB without checkpointing, 3.7 GB with it.
CPU constants were fitted to peak process RSS of SFT runs of the bundled 135M model here (bf16, batch 8, 65
tokens): LoRA 2674 MB, LoRA + checkpointing 1774, QLoRA 2590, full 2668; the estimates land within 5%.
No torch import: reads config.json (and, for token statistics, the tokenizer) only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.errors import BadInput
from runtime.training.config import BYTES_PER_TOKEN, LORA_DROPOUT, LORA_R

MB = 2**20
CPU_FRAMEWORK_MB = 1000.0    # python + torch/transformers/TRL/PEFT/datasets (~600 MB) + allocator caches, data
CUDA_CONTEXT_MB = 600.0      # CUDA context + kernels: device memory outside torch's allocator
CUDA_USABLE = 0.92           # share of a card's memory the allocator can fill without fragmentation failures
CUDA_FULL_FACTOR = 1.135     # measured saved bytes / the analytic count (RoPE and transpose copies, SDPA's lse)
CUDA_MAX_BATCH = 64          # "fill the card" stops here: past it a bigger batch changes the optimisation more
# Sustained training throughput measured for a 0.82B LoRA run on an H200 (issue 12: ~0.33 s for 8 rows of ~800
# padded tokens at ~4 x params FLOP per token): a rough per-GPU rate until the pre-flight measures the real one.
CUDA_FLOPS_ASSUMED = 65e12
# Sustained training FLOP/s per CPU core, measured with train_sft (LoRA r16 on the bundled 135M, batch 16 of ~66
# tokens, AVX-512 EPYC with native bf16): 400 tokens/s in bf16 (2.7 s a step), 224 in fp32, on 2 cores
CPU_BF16_FLOPS = 1.0e11
CPU_FP32_FLOPS = 5.5e10


@dataclass
class ModelShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @classmethod
    def from_dir(cls, path: str | Path) -> "ModelShape":
        cfg_path = Path(path) / "config.json"
        if not cfg_path.exists():
            raise BadInput(f"{path} has no config.json", hint="Plan with a local model dir or `default`.")
        c = json.loads(cfg_path.read_text())
        c = c.get("text_config", c)
        h = int(c["hidden_size"])
        heads = int(c.get("num_attention_heads", 1))
        return cls(hidden=h, intermediate=int(c.get("intermediate_size", 4 * h)), layers=int(c["num_hidden_layers"]),
                   heads=heads, kv_heads=int(c.get("num_key_value_heads") or heads),
                   head_dim=int(c.get("head_dim") or h // heads), vocab=int(c["vocab_size"]),
                   tied=bool(c.get("tie_word_embeddings", False)))

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one decoder block."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [(h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h)]

    @property
    def block_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.layers * self.block_params + self.embed_params + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes())

    @property
    def lora_inputs(self) -> int:
        """Input features of one block's linears: what the LoRA paths keep per token."""
        return sum(a for a, _ in self.linear_shapes())


@dataclass(frozen=True)
class Target:
    """The machine a plan is for: this one by default, or one the person names."""

    device: str                  # cpu | cuda
    memory_mb: float             # per device: RAM on a CPU, one card's memory on CUDA
    gpu_count: int = 1
    bf16: bool = False
    cpu_cores: int = 1
    named: bool = False          # the person named it (else: this machine)

    @classmethod
    def of(cls, target: dict | None = None) -> "Target":
        from runtime.hardware import probe

        hw = probe()
        target = dict(target or {})
        device = target.get("device") or ("cuda" if hw.has_gpu else "cpu")
        if device not in ("cpu", "cuda"):
            raise BadInput(f"target device {device!r}", hint="cpu or cuda")
        here = (device == "cuda") == hw.has_gpu
        if device == "cuda":
            gb = target.get("gpu_memory_gb") or (min(g.memory_gb for g in hw.gpus) if hw.has_gpu else 80.0)
            count = target.get("gpu_count") or (len(hw.gpus) if hw.has_gpu else 1)
            bf16 = target.get("bf16") if target.get("bf16") is not None else (hw.bf16 if hw.has_gpu else True)
        else:
            gb = target.get("gpu_memory_gb") or hw.ram_gb  # a CPU target's memory is its RAM
            count, bf16 = 1, target.get("bf16") if target.get("bf16") is not None else (hw.cpu_bf16 if here else False)
        return cls(device, float(gb) * 1024, int(count), bool(bf16), hw.cpu_cores, named=bool(target))

    @property
    def budget_mb(self) -> float:
        """Memory a run may plan to use: on CUDA what the allocator can fill (the context stays out of both the
        budget and the estimate); on a CPU 60% of RAM (the rest is the OS, the app and other work)."""
        if self.device == "cuda":
            return self.memory_mb * CUDA_USABLE - CUDA_CONTEXT_MB
        return self.memory_mb * 0.6


def estimate(shape: ModelShape, method: str, *, batch_size: int, seq_len: int, gradient_checkpointing: bool,
             bf16: bool = False, lora_r: int = LORA_R, device: str = "cpu", lora_dropout: float = LORA_DROPOUT,
             chunked_ce: bool = True, answer_share: float = 1.0) -> dict:
    """Peak memory in MB, by part, for batches padded to `seq_len` tokens; on a CPU the LM head's logits cover
    `answer_share` of them (see plan_for's `answers_only`)."""
    wbytes = 2 if bf16 else 4
    if method == "qlora":
        # nf4 with double quant: ~0.5 byte per weight + ~0.127 bit/weight of constants; embeddings stay dense.
        weights = shape.layers * shape.block_params * (0.5 + 0.127 / 8) + shape.embed_params * wbytes
    else:
        weights = shape.params * wbytes
    trainable = shape.params if method == "full" else shape.lora_params(lora_r)
    if method == "full":
        optimizer = trainable * 3 * wbytes  # gradients + AdamW's two moments in the weights' dtype
    else:
        optimizer = trainable * 16  # LoRA weights, gradients and AdamW moments in fp32 (PEFT's adapters)
    tokens = batch_size * seq_len
    if device == "cuda":
        activations, logits, transient = _cuda_activations(shape, method, tokens, gradient_checkpointing, bf16,
                                                           lora_dropout, chunked_ce)
        framework = 0.0
    else:
        activations, logits = _cpu_activations(shape, method, batch_size, seq_len, gradient_checkpointing, bf16)
        logits *= answer_share
        framework, transient = CPU_FRAMEWORK_MB * MB, 0.0
    parts = {"framework_mb": framework, "weights_mb": weights, "optimizer_mb": optimizer,
             "activations_mb": activations + transient, "logits_mb": logits}
    parts = {k: round(v / MB, 1) for k, v in parts.items()}
    parts["total_mb"] = round(sum(parts.values()), 1)
    parts["trainable_params"] = int(trainable)
    parts["params"] = int(shape.params)
    return parts


def _cuda_activations(shape: ModelShape, method: str, tokens: int, checkpointing: bool, bf16: bool,
                      lora_dropout: float, chunked_ce: bool) -> tuple[float, float, float]:
    """(saved activations, head/logits, backward transient) in bytes on CUDA (see the module docstring)."""
    h, i = shape.hidden, shape.intermediate
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    scale = 1.0 if bf16 else 2.0  # fp32 activations take twice the bytes
    full = CUDA_FULL_FACTOR * (12 * h + 6 * q + 4 * kv + 8 * i) * scale
    if method == "full":
        per_layer = full
    else:
        per_input = (3 if lora_dropout > 0 else 2) * scale
        per_layer = full - (4 * h + 2 * i) * scale + per_input * shape.lora_inputs
    if checkpointing:  # each layer's input, plus one layer recomputed during backward
        saved = tokens * (shape.layers * 2 * h * scale + per_layer)
    else:
        saved = tokens * shape.layers * per_layer
    # the final norm and the head: TRL's chunked CE keeps hidden states, not (tokens x vocab) logits
    head = tokens * 8 * h if chunked_ce else tokens * shape.vocab * 10
    transient = tokens * (6 * i + 8 * h) * scale  # gradients of the last block's MLP while backward starts
    return saved, head, transient


def _cpu_activations(shape: ModelShape, method: str, batch_size: int, seq_len: int, checkpointing: bool,
                     bf16: bool) -> tuple[float, float]:
    """(activations, logits) in bytes of process RSS on the CPU (fitted; see the module docstring)."""
    tokens = batch_size * seq_len
    abytes = 2 if bf16 else 4
    h, i = shape.hidden, shape.intermediate
    q = shape.heads * shape.head_dim
    kv = shape.kv_heads * shape.head_dim
    # saved for backward per token in one block (fitted to measured RSS): norms, q/k/v, MLP gate/up/act
    per_token_layer = (2 * h + q + 2 * kv + 3 * i) * abytes
    if method != "full":
        # each adapted linear keeps its input again on the LoRA path: dropout output (+ an fp32 cast under bf16)
        per_token_layer += (5 * h + q + i) * 4 * (2 if bf16 else 1)
    if method == "qlora":
        per_token_layer += 2 * i * abytes  # dequantised copies held by the 4-bit matmul backward
    attn_scores = batch_size * shape.heads * seq_len * seq_len * abytes * 2  # attention probabilities
    if checkpointing:
        activations = tokens * h * abytes * shape.layers + tokens * per_token_layer + attn_scores
    else:
        activations = (tokens * per_token_layer + attn_scores) * shape.layers
    logits = tokens * shape.vocab * 4 * 4  # fp32 logits, log-softmax, their gradient, the metrics' softmax
    return activations, logits


# --- token statistics ------------------------------------------------------------------------------------

def token_stats(train_path: str | None, tokenizer_dir: str, max_length: int, sample: int = 200,
                columns: dict | None = None) -> dict | None:
    """Token lengths of the first `sample` rows (chat template applied) and the row count. Each row's text is cut
    at max_length x BYTES_PER_TOKEN bytes before tokenizing, so a 50 MB row costs what a long row costs."""
    if not train_path:
        return None
    from runtime import dataio
    from runtime.paths import resolve_path

    p = resolve_path(train_path, must_exist=True)
    texts, cut, rows = [], [], 0
    cap = max_length * BYTES_PER_TOKEN
    for _, rec in dataio.iter_records(p, columns=columns):
        rows += 1
        if len(texts) >= sample or not isinstance(rec, dict):
            continue
        text, was_cut = _row_text(rec, cap)
        if text is not None:
            texts.append(text)
            cut.append(was_cut)
    if not texts:
        return {"rows": rows}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    counted = tok([_render(tok, t) for t in texts], add_special_tokens=False)["input_ids"]
    prompts = tok([_render(tok, t[:-1], prompt=True) if _answered(t) else "" for t in texts],
                  add_special_tokens=False)["input_ids"]
    scored = sum(len(ids) - len(p) if p else len(ids) for ids, p in zip(counted, prompts))
    # a cut row is longer than max_length by construction (its count is a lower bound)
    lengths = sorted(max(max_length + 1, len(ids)) if c else len(ids) for ids, c in zip(counted, cut))
    return {"rows": rows, "sampled": len(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1),
            "max_tokens": lengths[-1], "p95_tokens": lengths[int(0.95 * (len(lengths) - 1))],
            "over_max_length": sum(n > max_length for n in lengths),
            "answer_share": round(min(1.0, max(0.0, scored / max(1, sum(len(i) for i in counted)))), 3),
            "lengths": lengths}


def _answered(value) -> bool:
    """A conversation whose last turn is the assistant's: SFT scores that answer alone."""
    return isinstance(value, list) and len(value) > 1 and isinstance(value[-1], dict) \
        and value[-1].get("role") == "assistant"


def _row_text(rec: dict, cap: int):
    """(messages or text, whether it was cut) for one record, bounded to `cap` bytes; (None, 0) if unknown."""
    from runtime import dataio
    from runtime.training.common import cut_text, text_bytes

    try:
        conv = dataio.to_conversational(rec)
    except Exception:  # noqa: BLE001 - statistics skip what training would refuse
        return None, 0
    value = conv.get("messages") or conv.get("text") or (conv.get("prompt", []) + conv.get("chosen", []))
    if text_bytes(value) <= cap:
        return value, 0
    return cut_text(value, [cap]), 1


def _render(tok, value, prompt: bool = False) -> str:
    if isinstance(value, str):
        return value
    try:
        return tok.apply_chat_template(value, tokenize=False, add_generation_prompt=prompt)
    except Exception:  # noqa: BLE001 - no chat template: plain concatenation
        return "\n".join(str(m.get("content", "")) for m in value)


def padded_length(stats: dict | None, seq_len: int, batch_size: int, grouped: bool) -> tuple[int, float]:
    """(the longest padded batch the run will meet: what peak memory needs, the expected padded length of a batch:
    what time needs). Batches pad to their longest row; with length grouping rows of similar length share one."""
    lengths = [min(n, seq_len) for n in (stats or {}).get("lengths") or []]
    if not lengths:
        return seq_len, float(seq_len)
    longest = max(lengths)
    if grouped:
        return longest, sum(lengths) / len(lengths) * 1.05
    n = len(lengths)  # E[max of batch_size draws] from the sampled lengths (order statistics)
    expected = sum(x * (((k + 1) / n) ** batch_size - (k / n) ** batch_size) for k, x in enumerate(sorted(lengths)))
    return longest, expected


# --- the plan --------------------------------------------------------------------------------------------

def plan_for(model_path: str, method: str, *, seq_len: int = 512, train_path: str | None = None,
             batch_size: int | None = None, gradient_checkpointing: bool | None = None, lora_r: int = LORA_R,
             budget_mb: float | None = None, target_batch: int = 8, max_steps: int | None = None,
             epochs: float = 1.0, columns: dict | None = None, target: dict | None = None,
             answers_only: bool = False) -> dict:
    """A config that fits: precision, batch size, accumulation, checkpointing, QLoRA if needed, steps and time.
    `answers_only`: the run projects only the answer's positions through the LM head on a CPU (SFT's plain head,
    runtime/training/lm_head.py), so the logits scale with the answers' share of the tokens."""
    machine = Target.of(target)
    shape = ModelShape.from_dir(model_path)
    try:
        stats = token_stats(train_path, model_path, seq_len, columns=columns)
    except Exception:  # noqa: BLE001 - statistics only sharpen the plan
        stats = None
    budget_mb = budget_mb or machine.budget_mb
    longest, mean_padded = padded_length(stats, seq_len, batch_size or target_batch, grouped=False)
    grouped = _group_by_length(stats, longest, mean_padded)
    if grouped:
        longest, mean_padded = padded_length(stats, seq_len, batch_size or target_batch, grouped=True)
    share = (stats or {}).get("answer_share", 1.0) if answers_only else 1.0
    chosen, notes = _choose(shape, method, machine, budget_mb, longest, batch_size, gradient_checkpointing, lora_r,
                            target_batch, share)
    common = {"precision": "bf16" if machine.bf16 else "fp32", "budget_mb": round(budget_mb, 1),
              "token_stats": _public(stats), "target": asdict(machine), "seq_len": longest,
              "group_by_length": grouped, "shape": asdict(shape)}
    if chosen is None:
        est = estimate(shape, method, batch_size=1, seq_len=longest, gradient_checkpointing=True, bf16=machine.bf16,
                       lora_r=lora_r, device=machine.device, answer_share=share)
        return {"fits": False, "method": method, "estimate": est, "notes": notes, "batch_size": 1,
                "grad_accum": target_batch, "gradient_checkpointing": True,
                "reason": f"even batch 1 with checkpointing needs {est['total_mb']:.0f} MB of {budget_mb:.0f}",
                **common}
    m, gc, bs, est, reason = chosen
    grad_accum = max(1, math.ceil(target_batch / bs)) if not batch_size else 1
    rows = (stats or {}).get("rows")
    steps = max_steps or (math.ceil(rows * epochs / (bs * grad_accum * machine.gpu_count)) if rows else None)
    s_per_step = _seconds_per_step(shape, m, machine, bs * grad_accum * mean_padded, gc)
    if grouped:
        notes.append(f"length-grouped batches: padding to ~{mean_padded:.0f} tokens instead of the batch's longest")
    return {"fits": True, "method": m, "batch_size": bs, "grad_accum": grad_accum, "gradient_checkpointing": gc,
            "estimate": est, "reason": reason, "expected_steps": steps, "expected_s_per_step": s_per_step,
            "expected_minutes": round(steps * s_per_step / 60, 1) if steps and s_per_step else None,
            "expected_padded_tokens": round(mean_padded, 1), "notes": notes, **common}


def _public(stats: dict | None) -> dict | None:
    return None if stats is None else {k: v for k, v in stats.items() if k != "lengths"}


def _group_by_length(stats: dict | None, longest: int, mean_padded: float) -> bool:
    """Length-grouped batches when padding would waste a fifth of the compute (the attention implementation keeps
    padded rows apart, so grouping changes nothing but the order rows are drawn in)."""
    if not stats or not stats.get("mean_tokens") or stats.get("rows", 0) < 64:
        return False
    return 1 - stats["mean_tokens"] / max(mean_padded, 1) > 0.2


def _choose(shape, method, machine, budget_mb, seq, batch_size, checkpointing, lora_r, target_batch, answer_share):
    """(method, checkpointing, batch, estimate, reason) of the first candidate that fits, and notes.

    Order: the asked method without checkpointing at the largest batch up to the target (on a GPU: up to
    CUDA_MAX_BATCH, filling the card), then with checkpointing, then QLoRA; a fixed batch or checkpointing is kept."""
    notes: list[str] = []
    cap = CUDA_MAX_BATCH if machine.device == "cuda" else target_batch
    sizes = [batch_size] if batch_size else [b for b in (64, 32, 16, 8, 4, 2, 1) if b <= cap]
    floor = 1 if machine.device == "cpu" else min(4, target_batch)  # below it, checkpointing at a bigger batch wins
    for m in [method] + (["qlora"] if method in ("lora", "full") else []):
        options = [checkpointing] if checkpointing is not None else [False, True]
        for gc in options:
            for bs in sizes:
                if not gc and checkpointing is None and not batch_size and bs < floor:
                    continue
                est = estimate(shape, m, batch_size=bs, seq_len=seq, gradient_checkpointing=gc, bf16=machine.bf16,
                               lora_r=lora_r, device=machine.device, answer_share=answer_share)
                if est["total_mb"] <= budget_mb:
                    why = (f"{m} at batch {bs}{' with checkpointing' if gc else ''} needs {est['total_mb']:.0f} MB of "
                           f"{budget_mb:.0f} MB" + ("" if bs == max(sizes) or batch_size else
                                                    f"; batch {sizes[sizes.index(bs) - 1]} would not fit"))
                    if gc and checkpointing is None:
                        why += "; without checkpointing no batch fits"
                    if m != method:
                        notes.append(f"{method} does not fit; use qlora")
                    return (m, gc, bs, est, why), notes
        notes.append(f"{m} does not fit in {budget_mb:.0f} MB at batch 1")
    return None, notes


def _seconds_per_step(shape: ModelShape, method: str, machine: Target, tokens: float, checkpointing: bool):
    """A rough time per optimizer step: training FLOPs at a sustained rate (the pre-flight measures the real one)."""
    flops_per_token = (6 if method == "full" else 4) * shape.params * (4 / 3 if checkpointing else 1)
    if machine.device == "cpu":
        rate = (CPU_BF16_FLOPS if machine.bf16 else CPU_FP32_FLOPS) * max(1, machine.cpu_cores)
    else:
        rate = CUDA_FLOPS_ASSUMED * machine.gpu_count
    return round(flops_per_token * tokens / rate, 3)
