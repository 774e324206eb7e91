"""Merging a LoRA adapter into its base and saving plain safetensors weights."""

from __future__ import annotations

from pathlib import Path


def merge_adapter(base: str, adapter_dir: str, out: Path) -> int:
    """Load the base in full precision (also for QLoRA adapters), merge the adapter, save; returns bytes written."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out, safe_serialization=True)
    tok_src = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").exists() else base
    AutoTokenizer.from_pretrained(tok_src).save_pretrained(out)
    return sum(p.stat().st_size for p in out.glob("*.safetensors"))
