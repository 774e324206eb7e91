"""Memory planning: estimate peak training memory and pick a config that fits the machine.

Peak = framework (the Python process with torch/transformers/TRL loaded, or the CUDA context)
     + weights (fp32 / bf16 / 4-bit nf4 with double quant; embeddings stay unquantized)
     + trainable state (gradients + AdamW's two moments, fp32)
     + activations (per layer: the saved tensors of attention and MLP; with gradient checkpointing only each
       layer's input plus one layer's worth) + logits (fp32 logits, their softmax and gradient).
The constants were fitted to peak process RSS of SFT runs of the bundled 135M model on this CPU (bf16, batch 8,
65 tokens): LoRA 2674 MB, LoRA + checkpointing 1774, QLoRA 2590, full 2668; the estimates land within 5%.
tests/test_planning.py checks other shapes against new measurements (25%).
No torch import: reads config.json only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.errors import BadInput

MB = 2**20
CPU_FRAMEWORK_MB = 1000.0    # python + torch/transformers/TRL/PEFT/datasets (~600 MB) + allocator caches, data
CUDA_CONTEXT_MB = 500.0      # CUDA context + kernels (device memory outside torch's allocator)
LINEAR_NAMES = ("q", "k", "v", "o", "gate", "up", "down")


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
                   heads=heads, kv_heads=int(c.get("num_key_value_heads", heads)),
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


def estimate(shape: ModelShape, method: str, *, batch_size: int, seq_len: int, gradient_checkpointing: bool,
             bf16: bool = False, lora_r: int = 16, device: str = "cpu") -> dict:
    """Peak memory in MB, by part."""
    wbytes = 2 if bf16 else 4
    if method == "qlora":
        # nf4 with double quant: ~0.5 byte per weight + ~0.127 bit/weight of constants; embeddings stay dense.
        weights = shape.layers * shape.block_params * (0.5 + 0.127 / 8) + shape.embed_params * wbytes
    else:
        weights = shape.params * wbytes
    trainable = shape.params if method == "full" else shape.lora_params(lora_r)
    if method == "full":
        # gradients + AdamW's two moments in the weights' dtype (the model is loaded in the training dtype)
        optimizer = trainable * 3 * wbytes
    else:
        # LoRA weights, gradients and AdamW moments stay fp32 (PEFT keeps adapters in fp32)
        optimizer = trainable * 16
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
    attn_scores = batch_size * shape.heads * seq_len * seq_len * abytes * 2  # eager attention probabilities
    if gradient_checkpointing:
        activations = tokens * h * abytes * shape.layers + tokens * per_token_layer + attn_scores
    else:
        activations = (tokens * per_token_layer + attn_scores) * shape.layers
    logits = tokens * shape.vocab * 4 * 4  # fp32 logits, log-softmax, their gradient, TRL's entropy/accuracy
    framework = CPU_FRAMEWORK_MB * MB if device == "cpu" else CUDA_CONTEXT_MB * MB
    parts = {"framework_mb": framework, "weights_mb": weights, "optimizer_mb": optimizer,
             "activations_mb": activations, "logits_mb": logits}
    parts = {k: round(v / MB, 1) for k, v in parts.items()}
    parts["total_mb"] = round(sum(parts.values()), 1)
    parts["trainable_params"] = int(trainable)
    parts["params"] = int(shape.params)
    return parts


def token_stats(train_path: str | None, tokenizer_dir: str, sample: int = 200) -> dict | None:
    """Token length statistics of the first rows of a dataset (chat template applied)."""
    if not train_path:
        return None
    from runtime.paths import resolve_path

    p = resolve_path(train_path, must_exist=True)
    if p.suffix.lower() not in (".jsonl", ".json"):
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths, rows = [], 0
    with open(p, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            rows += 1
            if len(lengths) >= sample:
                continue
            r = json.loads(line)
            if "messages" in r:
                ids = tok.apply_chat_template(r["messages"], tokenize=True)
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                lengths.append(len(ids))
            elif "prompt" in r and "completion" in r and isinstance(r["prompt"], str):
                lengths.append(len(tok(r["prompt"] + r["completion"])["input_ids"]))
            elif "text" in r:
                lengths.append(len(tok(r["text"])["input_ids"]))
    if not lengths:
        return {"rows": rows}
    lengths.sort()
    return {"rows": rows, "mean_tokens": round(sum(lengths) / len(lengths), 1), "max_tokens": lengths[-1],
            "p95_tokens": lengths[int(0.95 * (len(lengths) - 1))]}


def plan_for(model_path: str, method: str, *, seq_len: int = 512, train_path: str | None = None,
             batch_size: int | None = None, gradient_checkpointing: bool | None = None, lora_r: int = 16,
             budget_mb: float | None = None, target_batch: int = 8, max_steps: int | None = None,
             epochs: float = 1.0, columns: dict | None = None) -> dict:
    """A config that fits: precision, batch size, accumulation, checkpointing, QLoRA if needed, steps and time."""
    from runtime.hardware import probe

    hw = probe()
    shape = ModelShape.from_dir(model_path)
    stats = None
    try:
        stats = token_stats(train_path, model_path)
    except Exception:  # noqa: BLE001 - statistics only sharpen the plan
        stats = None
    # sequences are padded to the longest in a batch: plan with the p95 length, capped by max_length
    eff_len = min(seq_len, int(stats["max_tokens"])) if stats and stats.get("max_tokens") else seq_len
    device = "cuda" if hw.has_gpu else "cpu"
    if budget_mb is None:
        budget_mb = (min(g.memory_gb for g in hw.gpus) * 1024 * 0.9) if hw.has_gpu else hw.ram_gb * 1024 * 0.6
    notes = []
    chosen = None
    methods = [method] + (["qlora"] if method in ("lora", "full") else [])
    for m in methods:
        for gc in ([gradient_checkpointing] if gradient_checkpointing is not None else [False, True]):
            for bs in ([batch_size] if batch_size else [b for b in (target_batch, 4, 2, 1) if b <= target_batch]):
                est = estimate(shape, m, batch_size=bs, seq_len=eff_len, gradient_checkpointing=gc, bf16=hw.bf16,
                               lora_r=lora_r, device=device)
                if est["total_mb"] <= budget_mb:
                    chosen = (m, gc, bs, est)
                    break
            if chosen:
                break
        if chosen:
            break
        notes.append(f"{m} does not fit in {budget_mb:.0f} MB at batch 1")
    if chosen is None:
        est = estimate(shape, method, batch_size=1, seq_len=eff_len, gradient_checkpointing=True, bf16=hw.bf16,
                       lora_r=lora_r, device=device)
        return {"fits": False, "method": method, "estimate": est, "budget_mb": round(budget_mb, 1), "notes": notes,
                "batch_size": 1, "grad_accum": target_batch, "gradient_checkpointing": True,
                "precision": "bf16" if hw.bf16 else "fp32"}
    m, gc, bs, est = chosen
    if m != method:
        notes.append(f"{method} does not fit; use qlora")
    grad_accum = max(1, math.ceil(target_batch / bs)) if not batch_size else 1
    rows = (stats or {}).get("rows")
    steps = max_steps or (math.ceil(rows * epochs / (bs * grad_accum)) if rows else None)
    # seconds per step: measured ~4 s for batch 8 x ~48 tokens with LoRA on the 135M model on 2 CPU cores
    s_per_step = None
    if device == "cpu":
        flops_per_token = 6 * shape.params if m == "full" else 4 * shape.params
        s_per_step = round(flops_per_token * bs * grad_accum * eff_len / (4e9 * max(1, hw.cpu_cores)), 2)
    return {"fits": True, "method": m, "precision": "bf16" if hw.bf16 else "fp32", "batch_size": bs,
            "grad_accum": grad_accum, "gradient_checkpointing": gc, "seq_len": eff_len, "estimate": est,
            "budget_mb": round(budget_mb, 1), "token_stats": stats, "expected_steps": steps,
            "expected_s_per_step": s_per_step,
            "expected_minutes": round(steps * s_per_step / 60, 1) if steps and s_per_step else None,
            "notes": notes, "shape": asdict(shape)}
