"""One training runner in torchtune's recipe shape.

A recipe (sft.py, dpo.py, distill.py) sets up the model, data and trainer and hands in its hooks: what it measures
before and after training, its reproduce template and, where TRL has a command for it, the config that command
accepts. The runner does the rest in one order for every method: pre-flight (when asked or the run is long),
evaluate before, train, evaluate after, save. It alone writes result.json, once.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from runtime import jobs
from runtime.hardware import memory_mb
from runtime.training.common import CANCEL, JobContext, is_main, precision
from runtime.training.config import RunConfig
from runtime.training.lm_head import plain_lm_head_on_cpu

# Metrics every result carries (when measured); a recipe adds its own with `metric_keys`.
METRIC_KEYS = ("train_loss", "train_loss_first", "train_loss_last5", "eval_loss", "eval_loss_before", "global_step",
               "train_runtime_s", "model_memory_mb", "peak_memory_mb", "world_size", "tokens_per_s",
               "label_tokens_per_s", "input_tokens", "label_tokens", "rows_truncated", "eval_rows", "eval_s")
# Evaluation before and after training is sized to take about this long each on this machine (issue 9: 60 rows'
# eval loss once took 320 s after a 10-step CPU run); `eval_rows` in the config overrides it.
EVAL_BUDGET_S = 30.0


@dataclass
class Setup:
    """What a recipe's setup hands the runner."""

    trainer: Any
    tokenizer: Any
    model_path: str
    artifact: str = "adapter"              # adapter | model
    info: dict = field(default_factory=dict)   # extra result fields (e.g. the derived student's layers)


class Recipe:
    """A training method: `setup` builds the trainer; the hooks default to nothing."""

    config_cls: ClassVar[type[RunConfig]]
    reproduce_template: ClassVar[str]
    metric_keys: ClassVar[tuple[str, ...]] = ()

    def setup(self, ctx: JobContext) -> Setup:
        raise NotImplementedError

    def measure(self, ctx: JobContext, s: Setup, when: str) -> dict:
        """Method-specific measurements `before` and `after` training (preference accuracy, KL to the teacher)."""
        return {}

    def reproduce_config(self, ctx: JobContext, s: Setup, result: dict) -> dict:
        """Fields the reproduce template needs beyond the common ones."""
        return {}

    def trl_config(self, ctx: JobContext, s: Setup) -> tuple[str, dict] | None:
        """(TRL CLI command, the method's fields of its `--config` YAML); None where no TRL command runs it."""
        return None


# --- the run ---------------------------------------------------------------------------------------------

def run(recipe: Recipe, ctx: JobContext) -> dict:
    s = _set_up(recipe, ctx)
    result: dict = {}
    if _wants_preflight(ctx):
        from runtime.training.preflight import preflight

        report, corrected = preflight(ctx, s.trainer)
        result["preflight"] = report
        if is_main():
            jobs.merge_json(ctx.job_id, "result", preflight=report)
        if corrected is not None:
            ctx.config = corrected
            del s
            _release_memory()
            s = _set_up(recipe, ctx)
    result.update(_describe(ctx, s))
    trainer = s.trainer
    eval_ds = _sized_eval(ctx, trainer, result)
    if eval_ds is not None and ctx.config.eval_before and not ctx.resume_from:
        before = _evaluate(trainer, eval_ds, result)
        result["eval_loss_before"] = before.get("eval_loss")
        if is_main():
            jobs.record_metric(ctx.job_id, ctx.metrics_path, {"step": 0, "eval_loss": before.get("eval_loss")})
    if not ctx.resume_from and not CANCEL.is_set():
        result.update(recipe.measure(ctx, s, "before"))
    out = trainer.train(resume_from_checkpoint=ctx.resume_from)
    result.update(_train_summary(trainer, out.metrics))
    if CANCEL.is_set():
        ckpt = jobs.last_checkpoint(jobs.get_job(ctx.job_id))
        result["checkpoint"] = str(ckpt) if ckpt else None
        result["metrics"] = _metrics(result, recipe)
        return result
    if eval_ds is not None:
        after = _evaluate(trainer, eval_ds, result)
        result["eval_loss"] = after.get("eval_loss")
        result.update({k: v for k, v in after.items() if k.startswith(("eval_rewards", "eval_logps"))})
        if is_main():
            jobs.record_metric(ctx.job_id, ctx.metrics_path,
                               {"step": trainer.state.global_step,
                                **{k: v for k, v in after.items() if isinstance(v, (int, float))}})
    if trainer.state.global_step:
        result.update(recipe.measure(ctx, s, "after"))
    result.update(s.info)
    result["metrics"] = _metrics(result, recipe)
    if is_main():
        save(recipe, ctx, s, result)
    return result


def _set_up(recipe: Recipe, ctx: JobContext) -> Setup:
    """The recipe's trainer, on a CPU with the plain LM head where TRL gave it the fused one (every method that
    has it); the result names the head the run trained with."""
    s = recipe.setup(ctx)
    s.info["lm_head"] = plain_lm_head_on_cpu(s.trainer, ctx.device)
    return s


def _release_memory() -> None:
    """Free the first setup's model before building the corrected one (on a GPU its memory is what ran out)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _wants_preflight(ctx: JobContext) -> bool:
    cfg = ctx.config
    if ctx.resume_from or cfg.num_processes > 1:
        return False
    if cfg.preflight is not None:
        return cfg.preflight
    steps = cfg.max_steps or (cfg.plan or {}).get("expected_steps") or 0
    return steps >= 100  # a long run: a few measured steps now are cheap against an OOM an hour in


def _describe(ctx: JobContext, s: Setup) -> dict:
    model = s.trainer.model
    _, bf16 = precision(ctx.config)
    weights = getattr(ctx.config, "method", None) if ctx.kind == "train_sft" else (
        "lora" if ctx.config.uses_lora else "full")
    out = {"method": weights, "model_path": s.model_path, "device": ctx.device,
           "world_size": s.trainer.args.world_size, "precision": "bf16" if bf16 else "fp32",
           "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
           "total_params": sum(p.numel() for p in model.parameters())}
    try:
        out["model_memory_mb"] = round(model.get_memory_footprint() / 2**20, 1)
    except Exception:  # noqa: BLE001 - informative only
        pass
    rows_cut = getattr(s.trainer, "ftpilot_rows_truncated", 0)
    if rows_cut:
        out["rows_truncated"] = rows_cut
    return out


def _sized_eval(ctx: JobContext, trainer, result: dict):
    """The held-out rows scored before and after (the same ones both times): `eval_rows` when given, else as
    many as take about EVAL_BUDGET_S here, from the time of one forward pass over a batch of them."""
    ds = trainer.eval_dataset
    if ds is None or ctx.config.eval_rows == 0:
        return None
    total = len(ds)
    n = min(total, ctx.config.eval_rows or total)
    # timed on one process only: ranks timing on their own could pick different subsets and hang DDP's gather
    timed = ctx.config.eval_rows is None and ctx.config.num_processes == 1
    if timed and total > trainer.args.per_device_eval_batch_size:
        per_row = _seconds_per_eval_row(trainer, ds)
        if per_row:
            n = min(total, max(trainer.args.per_device_eval_batch_size, int(EVAL_BUDGET_S / per_row)))
    result["eval_rows"], result["eval_rows_total"] = n, total
    return ds if n == total else ds.select(range(n))


def _seconds_per_eval_row(trainer, ds) -> float | None:
    """One timed forward pass over the first eval batch (no logging, no metrics); None if it cannot be timed."""
    import torch

    rows = [ds[i] for i in range(min(len(ds), trainer.args.per_device_eval_batch_size))]
    try:
        batch = trainer._prepare_inputs(trainer.data_collator(rows))
        start = time.perf_counter()
        with torch.no_grad(), trainer.accelerator.autocast():
            trainer.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"))
    except Exception:  # noqa: BLE001 - a collator of another shape: score every row
        return None
    return (time.perf_counter() - start) / len(rows)


def _evaluate(trainer, ds, result: dict) -> dict:
    t = time.perf_counter()
    out = trainer.evaluate(eval_dataset=ds)
    result["eval_s"] = round(result.get("eval_s", 0.0) + time.perf_counter() - t, 1)
    return out


def _train_summary(trainer, metrics: dict) -> dict:
    out: dict[str, Any] = {"train_runtime_s": round(metrics.get("train_runtime", 0.0), 2),
                           "peak_memory_mb": round(memory_mb(peak=True), 1),
                           "global_step": trainer.state.global_step}
    logs = trainer.state.log_history
    losses = [h["loss"] for h in logs if "loss" in h]
    if losses:
        out["train_loss_first"], out["train_loss"] = losses[0], losses[-1]
        out["train_loss_last5"] = sum(losses[-5:]) / len(losses[-5:])
    counted = [h for h in logs if "input_tokens" in h]
    runtime = metrics.get("train_runtime") or 0.0
    if counted and runtime > 0:
        out["input_tokens"], out["label_tokens"] = counted[-1]["input_tokens"], counted[-1]["label_tokens"]
        out["tokens_per_s"] = round(out["input_tokens"] / runtime, 1)
        out["label_tokens_per_s"] = round(out["label_tokens"] / runtime, 1)
    return out


def _metrics(result: dict, recipe: Recipe) -> dict:
    out = {k: result[k] for k in (*METRIC_KEYS, *recipe.metric_keys) if k in result}
    out.update({k: v for k, v in result.items() if k.startswith("eval_rewards")})
    return out


# --- artifacts -------------------------------------------------------------------------------------------

def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def save(recipe: Recipe, ctx: JobContext, s: Setup, result: dict) -> None:
    """Weights (safetensors), tokenizer, the exact config, dataset hashes, reproduce.sh and TRL's CLI config;
    then result.json, once. Checkpoints (optimizer state is pickled by the Trainer) go: the run needs none."""
    run_dir = ctx.run_dir
    target = run_dir / s.artifact
    s.trainer.model.save_pretrained(target, safe_serialization=True)
    s.tokenizer.save_pretrained(target)
    result["adapter_path" if s.artifact == "adapter" else "model_dir"] = str(target)
    s.tokenizer.save_pretrained(run_dir / "tokenizer")
    write_json(run_dir / "config.json", {"kind": ctx.kind, "method": ctx.method,
                                          "config": ctx.config.model_dump(mode="json"),
                                          "training_args": s.trainer.args.to_dict()})
    data = {"train": dataset_info(ctx.config.train_path), "eval": dataset_info(ctx.config.eval_path)}
    write_json(run_dir / "dataset.json", data)
    result["dataset_sha256"] = (data["train"] or {}).get("sha256")
    repro = {**reproduce_base(ctx, s), **recipe.reproduce_config(ctx, s, result)}
    write_reproduce(ctx, recipe.reproduce_template.replace("__CONFIG__", json.dumps(repro, indent=4)))
    result["reproduce"] = str(run_dir / "reproduce.sh")
    trl = recipe.trl_config(ctx, s)
    if trl is not None:
        result["trl_config"] = str(write_trl_config(ctx, s, *trl))
    write_json(run_dir / "result.json", result)
    if not ctx.config.keep_checkpoints:
        shutil.rmtree(ctx.checkpoints_dir, ignore_errors=True)


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


def reproduce_base(ctx: JobContext, s: Setup) -> dict:
    from runtime.paths import resolve_path

    cfg, a = ctx.config, s.trainer.args
    return {"model": s.model_path, "train_path": str(resolve_path(cfg.train_path)),
            "eval_path": str(resolve_path(cfg.eval_path)) if cfg.eval_path else None,
            "method": getattr(cfg, "method", None), "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
            "lora_dropout": cfg.lora_dropout, "lora_targets": cfg.lora_targets or "all-linear",
            "learning_rate": a.learning_rate, "max_steps": a.max_steps, "epochs": a.num_train_epochs,
            "batch_size": a.per_device_train_batch_size, "grad_accum": a.gradient_accumulation_steps,
            "max_length": cfg.max_length, "bf16": a.bf16, "gradient_checkpointing": a.gradient_checkpointing,
            "seed": a.seed, "lr_scheduler": str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)),
            "warmup_steps": a.warmup_steps}


def write_reproduce(ctx: JobContext, script: str) -> None:
    """reproduce.py (plain TRL/PEFT, no ftpilot) and reproduce.sh that runs it with `accelerate launch`."""
    (ctx.run_dir / "reproduce.py").write_text(script)
    nproc = ctx.config.num_processes
    device = " --multi_gpu" if nproc > 1 else (" --cpu" if ctx.device == "cpu" else "")
    sh = ("#!/usr/bin/env bash\n# Reruns this job with plain accelerate + TRL + PEFT; ftpilot is not needed.\n"
          "set -euo pipefail\ncd \"$(dirname \"$0\")\"\nexport HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}\n"
          f"accelerate launch --num_processes {nproc} --num_machines 1 --mixed_precision no --dynamo_backend no{device} "
          "reproduce.py \"$@\"\n")
    p = ctx.run_dir / "reproduce.sh"
    p.write_text(sh)
    p.chmod(0o755)


def write_trl_config(ctx: JobContext, s: Setup, command: str, method_fields: dict) -> Path:
    """trl_config.yaml: what `trl <command> --config trl_config.yaml` accepts (TRL's script, model and dataset
    arguments plus the trainer's config), beside reproduce.sh."""
    import yaml

    cfg, a = ctx.config, s.trainer.args
    train = _abs(cfg.train_path)
    doc: dict[str, Any] = {
        "model_name_or_path": s.model_path, "dtype": "bfloat16" if a.bf16 else "float32",
        "datasets": [{"path": _builder(train), "data_files": train}],
        "output_dir": "trl-output", "bf16": a.bf16, "use_cpu": ctx.device == "cpu",
        "learning_rate": a.learning_rate, "max_steps": a.max_steps,
        "num_train_epochs": a.num_train_epochs, "per_device_train_batch_size": a.per_device_train_batch_size,
        "gradient_accumulation_steps": a.gradient_accumulation_steps,
        "gradient_checkpointing": a.gradient_checkpointing, "seed": a.seed,
        "lr_scheduler_type": str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type)),
        "warmup_steps": a.warmup_steps, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
        "max_length": cfg.max_length,
    }
    if cfg.uses_lora:
        doc.update(use_peft=True, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                   lora_target_modules=cfg.lora_targets or "all-linear",
                   load_in_4bit=cfg.load_method == "qlora")
    doc.update(method_fields)
    path = ctx.run_dir / "trl_config.yaml"
    head = (f"# ftpilot run {ctx.job_id}: `trl {command} --config trl_config.yaml` reruns it with TRL's own CLI.\n"
            "# Differences from the job: TRL's CLI trains on the file as is (for conversations: every assistant\n"
            "# turn; the job trains on the last one) and evaluates nothing.\n")
    path.write_text(head + yaml.safe_dump(doc, sort_keys=False))
    return path


def _abs(path: str) -> str:
    from runtime.paths import resolve_path

    return str(resolve_path(path))


def _builder(path: str) -> str:
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".parquet": "parquet"}.get(suffix, "json")


# The start of main() and the end of every reproduce.py (sft, dpo, distill): each script still runs alone with
# plain TRL; only its source text is assembled from these shared pieces.
SCRIPT_MAIN = '''def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", default="reproduced")
    out = p.parse_args().output_dir
    c = CONFIG
    dtype = torch.bfloat16 if c["bf16"] else torch.float32
'''
SCRIPT_END = '''    trainer.save_model(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
'''
