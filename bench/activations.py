"""What a training step keeps for backward, per token and per decoder layer: the numbers the CUDA planner uses.

Runs one real SFTTrainer training step (TRL's own loss path, accelerate's autocast, PEFT's LoRA) of a random Llama
with the given widths, on this CPU, and sums the bytes of every tensor autograd saves (parameters excluded, shared
storage counted once). Two depths are measured and differenced, so the per-layer figure is free of the embedding
and head. SDPA keeps no attention matrix on the CPU either (its flash kernel saves q, k, v, the output and the
log-sum-exp), so the figures carry over to CUDA, where the planner adds the allocator's view (weights, optimizer
state, backward transients). Run: .venv/bin/python bench/activations.py [--hidden 2048 --intermediate 5632 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def saved_bytes(layers: int, method: str, a, tok_dir: str) -> tuple[float, int]:
    """(bytes autograd saved in one forward, non-padding tokens) for a model of `layers` decoder layers."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.bf16 else torch.float32
    with tempfile.TemporaryDirectory() as d:
        LlamaForCausalLM(cfg).to(dtype).save_pretrained(d)
        kwargs = {"dtype": dtype}
        if method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs.update(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                                 bnb_4bit_use_double_quant=True,
                                                                 bnb_4bit_compute_dtype=dtype), device_map="cpu")
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(d, **kwargs)
    # rows of about `seq` tokens (max_length leaves room: a cut answer would drop the row); the last is shorter,
    # so padding is present as in training
    words = " ".join(["alpha beta gamma delta"] * (a.seq // 4))
    rows = [{"prompt": [{"role": "user", "content": words}], "completion": [{"role": "assistant", "content": "ok"}]}
            for _ in range(a.batch)]
    rows[-1]["prompt"][0]["content"] = words[: len(words) // 2]
    args = SFTConfig(output_dir=tempfile.mkdtemp(), max_steps=1, per_device_train_batch_size=a.batch,
                     bf16=a.bf16, use_cpu=True, report_to="none", save_strategy="no", max_length=2 * a.seq + 64,
                     gradient_checkpointing=False, logging_steps=1, disable_tqdm=True)
    peft = None if method == "full" else LoraConfig(r=16, lora_alpha=32, lora_dropout=a.dropout,
                                                    target_modules="all-linear", task_type="CAUSAL_LM")
    seen: dict = {"bytes": 0.0, "tokens": 0}

    class Measuring(SFTTrainer):
        def compute_loss(self, model, inputs, *args_, **kw):
            params = {p.untyped_storage().data_ptr() for p in model.parameters()}
            storages: dict[int, int] = {}

            def pack(t):
                s = t.untyped_storage()
                if s.data_ptr() not in params and t.device.type != "meta":
                    storages[s.data_ptr()] = s.nbytes()
                return t

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                loss = super().compute_loss(model, inputs, *args_, **kw)
            seen["bytes"] = sum(storages.values())
            seen["tokens"] = int(inputs["attention_mask"].sum())
            seen["padded"] = int(inputs["attention_mask"].numel())
            return loss

    trainer = Measuring(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                        peft_config=peft)
    trainer.train()
    return seen["bytes"], seen["padded"]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=5632)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--methods", default="lora,full,qlora")
    a = p.parse_args()
    from runtime.models import resolve_model

    tok_dir = resolve_model("default").path
    out = {}
    for method in a.methods.split(","):
        b1, t1 = saved_bytes(1, method, a, tok_dir)
        b2, t2 = saved_bytes(2, method, a, tok_dir)
        per_layer = (b2 - b1) / t2
        out[method] = {"per_token_layer_bytes": round(per_layer),
                       "outside_layers_per_token": round((b1 - per_layer * t1) / t1),
                       "per_layer_in_hidden_units": round(per_layer / a.hidden, 2), "padded_tokens": t2}
        print(method, json.dumps(out[method]), flush=True)
    print(json.dumps({"widths": vars(a), "saved": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
