"""Shared pieces of the training entry points: the job context, the ftpilot callback, data and model loading,
training arguments chosen from the hardware (never from library defaults), and run artifacts."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime import jobs
from runtime.errors import BadInput

CANCEL = threading.Event()


def install_signal_handlers() -> None:
    """SIGTERM (cancel) sets a flag; the callback saves a checkpoint at the current step and stops."""

    def on_term(signum, _frame):
        CANCEL.set()

    signal.signal(signal.SIGTERM, on_term)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@dataclass
class JobContext:
    job_id: str
    kind: str
    method: str | None
    config: dict
    run_dir: Path
    metrics_path: str
    device: str
    resume_from: str | None = None
    result: dict = field(default_factory=dict)

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"


# --- the callback ----------------------------------------------------------------------------------------

def make_callback(ctx: JobContext):
    from transformers import TrainerCallback

    class FtpilotCallback(TrainerCallback):
        """Metrics JSONL + JobMetric rows, heartbeat and step in the Job row, cancel -> checkpoint and stop."""

        def __init__(self):
            self._t = time.perf_counter()
            self._tokens = 0
            self._step = 0
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._stop = threading.Event()

        def _heartbeat(self):
            while not self._stop.wait(10.0):
                try:
                    jobs.heartbeat(ctx.job_id)
                except Exception:  # noqa: BLE001 - a busy store must not kill training
                    pass

        def on_train_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()
            self._tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            self._step = state.global_step
            if is_main():
                jobs.update_job(ctx.job_id, total_steps=state.max_steps, step=state.global_step)
                self._beat.start()
            if CANCEL.is_set():
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kw):
            if CANCEL.is_set():
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if not is_main() or not logs:
                return
            now = time.perf_counter()
            row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4),
                                   "time": round(time.time(), 3)}
            for key, value in logs.items():
                if isinstance(value, (int, float)) and not key.startswith("total_flos"):
                    row[key] = round(float(value), 6)
            tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
            dt = now - self._t
            if "loss" in row and dt > 0 and state.global_step > self._step:
                if tokens > self._tokens:
                    row["tokens_per_s"] = round((tokens - self._tokens) / dt, 1)
                row["s_per_step"] = round(dt / (state.global_step - self._step), 3)
                self._t, self._tokens, self._step = now, tokens, state.global_step
            row["memory_mb"] = round(memory_mb(), 1)
            jobs.record_metric(ctx.job_id, ctx.metrics_path, row)

        def on_train_end(self, args, state, control, **kw):
            self._stop.set()

    return FtpilotCallback()


def memory_mb() -> float:
    """Peak memory of this process: CUDA max allocated on a GPU, else the process RSS."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except ImportError:
        pass
    import psutil

    return psutil.Process().memory_info().rss / 2**20


# --- data ------------------------------------------------------------------------------------------------

def load_rows(path: str):
    """A datasets.Dataset from JSONL/JSON/CSV/Parquet (TRL's standard formats are the input)."""
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    try:
        from runtime import dataio  # written by the datasets helper; use it when present

        if hasattr(dataio, "load_dataset"):
            return dataio.load_dataset(str(p))
    except ImportError:
        pass
    from datasets import load_dataset

    suffix = p.suffix.lower()
    builder = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}.get(suffix)
    if builder is None:
        raise BadInput(f"cannot read {p.name}: unknown format {suffix!r}", hint="Use .jsonl, .json, .csv or .parquet.")
    return load_dataset(builder, data_files=str(p), split="train")


def to_prompt_completion(ds):
    """Conversations -> prompt/completion (loss only on the last assistant turn); other formats pass through."""
    cols = set(ds.column_names)
    if "messages" not in cols:
        if {"prompt", "completion"} <= cols or "text" in cols:
            return ds
        raise BadInput(f"unknown dataset columns {sorted(cols)}",
                       hint="Use TRL's standard formats: messages, prompt/completion, or text.")

    def split(row):
        msgs = row["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise BadInput("a conversation does not end with an assistant turn",
                           hint="Each row's last message must be the assistant's answer.")
        return {"prompt": msgs[:-1], "completion": [msgs[-1]]}

    return ds.map(split, remove_columns=[c for c in ds.column_names])


def dataset_info(path: str | None) -> dict | None:
    """sha256 and rows of a dataset file, plus the store's audit summary when one exists."""
    if not path:
        return None
    from runtime.paths import resolve_path, sha256_file

    p = resolve_path(path, must_exist=True)
    info: dict[str, Any] = {"path": str(p), "sha256": sha256_file(p)}
    try:
        from sqlmodel import select

        from runtime import store
        from runtime.store import Audit, Dataset

        with store.session() as s:
            ds = s.exec(select(Dataset).where(Dataset.sha256 == info["sha256"]).order_by(Dataset.id.desc())).first()
            if ds is not None:
                info["rows"] = ds.rows
                audit = s.get(Audit, ds.last_audit_id) if ds.last_audit_id else None
                if audit is not None:
                    info["audit_summary"] = audit.summary
    except Exception:  # noqa: BLE001 - the audit summary is informative only
        pass
    return info


# --- model and arguments ---------------------------------------------------------------------------------

def precision(cfg: dict | None = None):
    """(torch dtype, bf16 flag) from the hardware probe (bf16 only where it is native), unless the run names one."""
    import torch

    from runtime.hardware import probe

    asked = (cfg or {}).get("precision") or "auto"
    bf16 = probe().bf16 if asked == "auto" else asked == "bf16"
    return (torch.bfloat16 if bf16 else torch.float32), bf16


def load_model(path: str, method: str, cfg: dict):
    import torch
    from transformers import AutoModelForCausalLM

    dtype, _ = precision(cfg)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": "cpu"} if not torch.cuda.is_available() else {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(cfg.get("gradient_checkpointing")))
    return model


def lora_config(cfg: dict):
    from peft import LoraConfig

    targets = cfg.get("lora_targets") or "all-linear"
    return LoraConfig(r=int(cfg.get("lora_r", 16)), lora_alpha=int(cfg.get("lora_alpha", 32)),
                      lora_dropout=float(cfg.get("lora_dropout", 0.05)), target_modules=targets,
                      task_type="CAUSAL_LM")


def common_args(ctx: JobContext, has_eval: bool) -> dict:
    """TrainingArguments fields every method shares, chosen here (never the library defaults)."""
    cfg = ctx.config
    _, bf16 = precision(cfg)
    max_steps = int(cfg.get("max_steps") or -1)
    save_steps = int(cfg.get("save_steps") or (max(10, max_steps // 4) if max_steps > 0 else 50))
    args = dict(
        output_dir=str(ctx.checkpoints_dir), bf16=bf16, fp16=False,
        use_cpu=ctx.device == "cpu",
        per_device_train_batch_size=int(cfg.get("batch_size", 8)),
        per_device_eval_batch_size=int(cfg.get("eval_batch_size") or cfg.get("batch_size", 8)),
        gradient_accumulation_steps=int(cfg.get("grad_accum", 1)),
        gradient_checkpointing=bool(cfg.get("gradient_checkpointing", False)),
        learning_rate=float(cfg["learning_rate"]), max_steps=max_steps,
        num_train_epochs=float(cfg.get("epochs") or 1.0), lr_scheduler_type=cfg.get("lr_scheduler", "linear"),
        warmup_steps=int(cfg.get("warmup_steps", 0)), weight_decay=0.0,
        logging_steps=1, logging_first_step=True, save_strategy="steps", save_steps=save_steps,
        save_total_limit=int(cfg.get("save_total_limit", 2)),
        eval_strategy="steps" if has_eval and cfg.get("eval_steps") else "no",
        eval_steps=int(cfg.get("eval_steps") or 0) or None,
        report_to="none", disable_tqdm=True, seed=int(cfg.get("seed", 0)), data_seed=int(cfg.get("seed", 0)),
        dataloader_num_workers=0, include_num_input_tokens_seen=True, remove_unused_columns=True,
        ddp_find_unused_parameters=False if int(cfg.get("num_processes") or 1) > 1 else None,
    )
    return args


# --- artifacts -------------------------------------------------------------------------------------------

def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def write_reproduce(ctx: JobContext, script: str, argv: list[str]) -> None:
    """reproduce.py (plain TRL/PEFT, no ftpilot) and reproduce.sh that runs it with `accelerate launch`."""
    (ctx.run_dir / "reproduce.py").write_text(script)
    nproc = int(ctx.config.get("num_processes") or 1)
    cpu = " --multi_gpu" if nproc > 1 else (" --cpu" if ctx.device == "cpu" else "")
    sh = ("#!/usr/bin/env bash\n# Reruns this job with plain accelerate + TRL + PEFT; ftpilot is not needed.\n"
          "set -euo pipefail\ncd \"$(dirname \"$0\")\"\nexport HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}\n"
          f"accelerate launch --num_processes {nproc} --num_machines 1 --mixed_precision no --dynamo_backend no{cpu} "
          f"reproduce.py {' '.join(shlex.quote(a) for a in argv)} \"$@\"\n")
    p = ctx.run_dir / "reproduce.sh"
    p.write_text(sh)
    p.chmod(0o755)
