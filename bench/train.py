"""Training throughput: `train_sft` vs plain TRL SFTTrainer with its defaults vs plain TRL configured by hand.

Same model, data, LoRA (r16, all linear), batch and steps, each case in its own process, in one run. Tokens/s =
real (non-padding) input tokens trained on / the Trainer's own train_runtime (model loading excluded for all):
TRL's `num_tokens` and ftpilot's `input_tokens` both sum the attention masks. Prints the ratios.

    .venv/bin/python bench/train.py [--steps N] [--batch B] [--data tickets|spread] [--model DIR]

`--data spread` draws row lengths like the GPU check's data (mean ~418 tokens, long tail), where padding matters.
`--rounds N` interleaves N rounds of the cases and prints the median ratio (a shared machine's load drifts).
`--cases` picks cases (ftpilot, ftpilot_qlora, ftpilot_planned, trl_defaults, trl_hand, trl_liger); on a GPU each
case also reports its peak CUDA memory and, for ftpilot, the plan's prediction of it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CASES = ("ftpilot", "trl_hand", "trl_defaults")


def plain_trl(a, variant: str) -> dict:
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from runtime.hardware import probe

    ds = load_dataset("json", data_files=a.train, split="train")
    ds = ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                remove_columns=ds.column_names)
    tok = AutoTokenizer.from_pretrained(a.model)
    common = dict(output_dir=tempfile.mkdtemp(), max_steps=a.steps, per_device_train_batch_size=a.batch,
                  learning_rate=2e-4, report_to="none", save_strategy="no", disable_tqdm=True, seed=0,
                  logging_steps=1, max_length=a.max_length, use_cpu=not torch.cuda.is_available())
    if variant == "trl_defaults":  # TRL's defaults (bf16 on, gradient checkpointing on), model loaded as shipped
        args = SFTConfig(**common)
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    else:  # what a careful person sets by hand: precision from the hardware, no checkpointing (+ Liger)
        bf16 = probe().bf16
        args = SFTConfig(**common, bf16=bf16, gradient_checkpointing=False,
                         use_liger_kernel=variant == "trl_liger")
        model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16 if bf16 else torch.float32)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res = trainer.train()
    tokens = [h["num_tokens"] for h in trainer.state.log_history if h.get("num_tokens")]
    return {"train_runtime_s": res.metrics["train_runtime"], "tokens": int(tokens[-1]), "bf16": args.bf16,
            "gradient_checkpointing": args.gradient_checkpointing, "batch": a.batch,
            "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
            "planned_mb": planned(a, args.gradient_checkpointing, args.bf16)}


def planned(a, checkpointing: bool, bf16: bool) -> float:
    """The planner's peak for a plain TRL run (batches padded to their longest row, no grouping)."""
    import torch

    from runtime.planning import ModelShape, estimate, padded_length, token_stats

    stats = token_stats(a.train, a.model, a.max_length, sample=400)
    longest, _ = padded_length(stats, a.max_length, a.batch, grouped=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return estimate(ModelShape.from_dir(a.model), "lora", batch_size=a.batch, seq_len=longest, bf16=bf16,
                    gradient_checkpointing=checkpointing, device=device)["total_mb"]


def ftpilot_run(a, variant: str) -> dict:
    from runtime import jobs
    from tools import call_tool

    call = {"model": a.model, "train_path": a.train, "max_steps": a.steps, "max_length": a.max_length,
            "method": "qlora" if variant == "ftpilot_qlora" else "lora", "wait": True, "eval_rows": 0}
    if variant != "ftpilot_planned":
        call["batch_size"] = a.batch
    if a.preflight:
        call["preflight"] = True
    res = call_tool("train_sft", call)
    if not res.ok or res.output["status"] != "succeeded":
        log = Path(res.output["log_path"]).read_text()[-3000:] if res.ok else ""
        raise SystemExit(f"train_sft failed: {res.error or res.output.get('error')}\n{log}")
    job = jobs.get_job(res.output["job_id"])
    m, cfg = job.result["metrics"], job.config
    return {"train_runtime_s": m["train_runtime_s"], "tokens": m["input_tokens"], "label_tokens": m["label_tokens"],
            "bf16": job.result["precision"] == "bf16", "gradient_checkpointing": cfg["gradient_checkpointing"],
            "batch": cfg["batch_size"], "grad_accum": cfg["grad_accum"], "group_by_length": cfg["group_by_length"],
            "peak_mb": m["peak_memory_mb"], "planned_mb": cfg["plan"]["estimate"]["total_mb"],
            "preflight": job.result.get("preflight")}


def write_data(a, root: Path) -> str:
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    path = root / "train.jsonl"
    if a.data == "tickets":
        write_jsonl(path, ticket_records(a.steps * a.batch * 2, seed=0))
        return str(path)
    rng = random.Random(0)
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "ban", "cor", "fel", "gin", "hum", "jet", "vor"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(800)]
    rows = []
    for _ in range(max(400, a.steps * a.batch * 2)):
        n = int(min(700, max(8, rng.lognormvariate(4.6, 0.8))))
        k = int(min(300, max(3, rng.lognormvariate(3.5, 0.9))))
        rows.append({"messages": [{"role": "user", "content": " ".join(rng.choice(words) for _ in range(n))},
                                  {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(k))}]})
    write_jsonl(path, rows)
    return str(path)


def one_case(a) -> dict:
    out = ftpilot_run(a, a.case) if a.case.startswith("ftpilot") else plain_trl(a, a.case)
    out["tokens_per_s"] = round(out["tokens"] / out["train_runtime_s"], 1)
    return {"case": a.case, **out}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--data", choices=("tickets", "spread"), default="tickets")
    p.add_argument("--model", default=None, help="a model dir (default: the bundled model)")
    p.add_argument("--root", default=None, help="workspace for data and runs (it must hold --model's dir)")
    p.add_argument("--cases", default=",".join(CASES))
    p.add_argument("--preflight", action="store_true")
    p.add_argument("--out", default=None, help="append each case's JSON line to this file")
    p.add_argument("--case-timeout", type=float, default=None, help="seconds one case may take")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of all cases (median ratio)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--train", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:  # one case, in this process
        print(json.dumps(one_case(a)), flush=True)
        return 0
    from runtime.settings import get_settings, reset_settings

    root = Path(a.root) if a.root else Path(tempfile.mkdtemp(prefix="ftpilot-bench-"))
    os.environ.setdefault("FTPILOT_MODELS_DIR", str(get_settings().resolved_models_dir))  # the prepared model
    os.environ.update(FTPILOT_DATA_DIR=str(root / "data"), FTPILOT_WORKSPACE_ROOT=str(root))
    reset_settings()
    from runtime.models import resolve_model

    model = a.model or resolve_model("default").path
    train = write_data(a, root)
    results: dict[str, list[dict]] = {}
    for round_ in range(a.rounds):  # rounds interleave the cases: a shared machine's load drifts
        for case in a.cases.split(","):
            row = run_case(a, case, model, train)
            results.setdefault(case, []).append(row)
            report(row, round_)
    speed = {k: [r["tokens_per_s"] for r in rows if "tokens_per_s" in r] for k, rows in results.items()}
    for other in ("trl_hand", "trl_defaults", "trl_liger"):
        pairs = [f / o for f, o in zip(speed.get("ftpilot", []), speed.get(other, []))]
        if pairs:
            print(f"ratio ftpilot / {other}: {statistics.median(pairs):.3f} (median of {len(pairs)} rounds: "
                  f"{', '.join(f'{x:.3f}' for x in pairs)})")
    print(json.dumps(results))
    return 0


def run_case(a, case: str, model: str, train: str) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--model", model, "--train", train, "--steps", str(a.steps),
           "--batch", str(a.batch), "--max-length", str(a.max_length)] + (["--preflight"] if a.preflight else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                              timeout=a.case_timeout)
        line = next((x for x in reversed(proc.stdout.splitlines()) if x.startswith("{")), None)
        row = json.loads(line) if line else {"case": case, "error": proc.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        row = {"case": case, "error": f"timed out after {a.case_timeout} s"}
    if a.out:
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def report(row: dict, round_: int) -> None:
    if "tokens_per_s" in row:
        print(f"{row['case']:16} {row['tokens_per_s']:9.1f} real tokens/s  ({row['tokens']} tokens in "
              f"{row['train_runtime_s']:.1f} s; batch {row['batch']}; bf16={row['bf16']} "
              f"checkpointing={row['gradient_checkpointing']}; peak {row.get('peak_mb')} MB; round {round_ + 1})",
              flush=True)
    else:
        print(f"{row['case']:16} failed: {row['error'][-1500:]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
