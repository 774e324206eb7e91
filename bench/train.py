"""Training throughput: `train_sft` vs plain TRL SFTTrainer with its defaults vs plain TRL configured by hand.

Same model (the bundled SmolLM2-135M-Instruct), same data (the ticket task), same LoRA, batch and steps, in one
run. Tokens/s = tokens the Trainer consumed / its own train_runtime (model loading excluded for all three).
Prints the ratios. Run: .venv/bin/python bench/train.py [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def plain_trl(model_dir: str, train_path: str, steps: int, batch: int, hand: bool) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from runtime.hardware import probe

    ds = load_dataset("json", data_files=train_path, split="train")
    ds = ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                remove_columns=ds.column_names)
    tok = AutoTokenizer.from_pretrained(model_dir)
    out = tempfile.mkdtemp()
    common = dict(output_dir=out, max_steps=steps, per_device_train_batch_size=batch, learning_rate=2e-4,
                  report_to="none", save_strategy="no", include_num_input_tokens_seen=True, disable_tqdm=True,
                  seed=0, use_cpu=not torch.cuda.is_available())
    if hand:  # what a careful person sets by hand: precision from the hardware, no checkpointing on a small run
        bf16 = probe().bf16
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
        args = SFTConfig(**common, bf16=bf16, gradient_checkpointing=False, logging_steps=1, max_length=512)
    else:  # TRL's defaults (bf16 on, gradient checkpointing on), model loaded as shipped
        model = AutoModelForCausalLM.from_pretrained(model_dir)
        args = SFTConfig(**common)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    res = trainer.train()
    return {"train_runtime_s": res.metrics["train_runtime"], "tokens": trainer.state.num_input_tokens_seen,
            "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing}


def ftpilot_run(train_path: str, steps: int, batch: int) -> dict:
    from runtime import jobs
    from tools import call_tool

    res = call_tool("train_sft", {"model": "default", "train_path": train_path, "max_steps": steps,
                                  "batch_size": batch, "wait": True})
    if not res.ok or res.output["status"] != "succeeded":
        raise SystemExit(f"train_sft failed: {res.error or res.output}")
    rows = [m for m in jobs.read_metrics(res.output["job_id"]) if "num_input_tokens_seen" in m]
    job = jobs.get_job(res.output["job_id"])
    cfg = json.loads((Path(job.run_dir) / "config.json").read_text())["training_args"]
    return {"train_runtime_s": job.result["train_runtime_s"], "tokens": int(rows[-1]["num_input_tokens_seen"]),
            "bf16": cfg["bf16"], "gradient_checkpointing": cfg["gradient_checkpointing"]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    a = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ftpilot-bench-"))
    os.environ.update(FTPILOT_DATA_DIR=str(root / "data"), FTPILOT_WORKSPACE_ROOT=str(root))
    from runtime.models import resolve_model
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    model_dir = resolve_model("default").path
    train = write_jsonl(root / "train.jsonl", ticket_records(a.steps * a.batch, seed=0))
    results = {}
    for name, fn in [("ftpilot", lambda: ftpilot_run(str(train), a.steps, a.batch)),
                     ("trl_hand", lambda: plain_trl(model_dir, str(train), a.steps, a.batch, hand=True)),
                     ("trl_defaults", lambda: plain_trl(model_dir, str(train), a.steps, a.batch, hand=False))]:
        t = time.perf_counter()
        r = fn()
        r["wall_s"] = round(time.perf_counter() - t, 1)
        r["tokens_per_s"] = round(r["tokens"] / r["train_runtime_s"], 1)
        results[name] = r
        print(f"{name:13} {r['tokens_per_s']:8.1f} tokens/s  ({r['tokens']} tokens in {r['train_runtime_s']:.1f} s; "
              f"bf16={r['bf16']} checkpointing={r['gradient_checkpointing']})", flush=True)
    f, h, d = (results[k]["tokens_per_s"] for k in ("ftpilot", "trl_hand", "trl_defaults"))
    print(f"ratio ftpilot / TRL by hand:   {f / h:.3f}")
    print(f"ratio ftpilot / TRL defaults:  {f / d:.3f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
