"""The pre-flight: before a long run, a few real forward/backward passes at the planned shape.

It measures what the plan predicted, on this machine: the peak memory of the longest batch the data holds, and the
time and real (non-padding) tokens per second of ordinary batches. From those it gives a wall-clock ETA, and
when the peak would not fit (or CUDA runs out of memory) it corrects the plan before training starts: a smaller
batch with more accumulation (the same effective batch), then checkpointing. The weights are not updated (no
optimizer step), so training starts from the same point. Its report is stored with the run (run_status shows it).
"""

from __future__ import annotations

import time

from runtime.hardware import memory_mb
from runtime.training.common import JobContext
from runtime.training.config import RunConfig

WARMUP_BATCHES, TIMED_BATCHES = 2, 3  # the first batches pay for kernel compilation (Triton) and allocator growth


def preflight(ctx: JobContext, trainer) -> tuple[dict, RunConfig | None]:
    """(report, corrected config or None)."""
    cfg = ctx.config
    plan = cfg.plan or {}
    budget = plan.get("budget_mb")
    report: dict = {"batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum,
                    "gradient_checkpointing": cfg.gradient_checkpointing,
                    "planned_mb": (plan.get("estimate") or {}).get("total_mb"), "budget_mb": budget}
    try:
        measured = _measure(trainer, cfg)
    except Exception as e:  # noqa: BLE001 - out of memory (or anything else): the batch is too big
        if not _is_oom(e):
            report["error"] = f"{type(e).__name__}: {e}"[:300]
            return report, None
        report["out_of_memory"] = True
        measured = None
    if measured is not None:
        report.update(measured)
        steps = trainer.args.max_steps if trainer.args.max_steps > 0 else plan.get("expected_steps")
        if steps and measured.get("s_per_step"):
            report["eta_s"] = round(steps * measured["s_per_step"], 3)   # as s_per_step: a fast run is no 0.0
    corrected = _correct(cfg, report, budget)
    if corrected is not None:
        report["corrected"] = {"batch_size": corrected.batch_size, "grad_accum": corrected.grad_accum,
                               "gradient_checkpointing": corrected.gradient_checkpointing}
    return report, corrected


def _measure(trainer, cfg: RunConfig) -> dict:
    import torch

    model = trainer.model
    model.train()
    if cfg.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    cuda = torch.cuda.is_available() and next(model.parameters()).is_cuda
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    _step(trainer, model, _longest_batch(trainer))          # the peak: the longest rows the data holds
    peak = memory_mb(peak=True)
    batches = iter(trainer.get_train_dataloader())
    for _, batch in zip(range(WARMUP_BATCHES), batches):   # warm-up at ordinary shapes
        _step(trainer, model, batch)
    t, timed, tokens, labels = 0.0, 0, 0, 0
    for _, batch in zip(range(TIMED_BATCHES), batches):
        start = time.perf_counter()
        _step(trainer, model, batch)
        if cuda:
            torch.cuda.synchronize()
        t += time.perf_counter() - start
        timed += 1
        tokens += int(batch["attention_mask"].sum()) if "attention_mask" in batch else int(batch["input_ids"].numel())
        if batch.get("labels") is not None:
            labels += int((batch["labels"][..., 1:] != -100).sum())
    model.zero_grad(set_to_none=True)
    if not timed:  # too few rows to time anything beyond the warm-up
        return {"peak_memory_mb": round(peak, 1), "device": "cuda" if cuda else "cpu"}
    per_micro = t / timed
    # the optimizer's moments are not allocated until its first step: add them from the plan
    optimizer = ((cfg.plan or {}).get("estimate") or {}).get("optimizer_mb", 0.0) / 2
    return {"peak_memory_mb": round(peak + optimizer, 1), "s_per_step": round(per_micro * cfg.grad_accum, 3),
            "tokens_per_s": round(tokens / t, 1) if t else None,
            "label_tokens_per_s": round(labels / t, 1) if t and labels else None, "device": "cuda" if cuda else "cpu"}


def _step(trainer, model, batch) -> None:
    inputs = trainer._prepare_inputs(batch)
    with trainer.accelerator.autocast():
        loss = trainer.compute_loss(model, inputs)
    loss.backward()
    model.zero_grad(set_to_none=True)


def _longest_batch(trainer):
    """A batch of the `batch_size` longest training rows, collated as training collates them."""
    ds = trainer.train_dataset
    size = trainer.args.per_device_train_batch_size
    cols = [c for c in ds.column_names if c.endswith("input_ids")]
    if not cols:
        return next(iter(trainer.get_train_dataloader()))
    lengths = [sum(len(row[c]) for c in cols) for row in ds.select_columns(cols)]
    top = sorted(range(len(lengths)), key=lengths.__getitem__, reverse=True)[:size]
    rows = [ds[i] for i in top]
    return trainer.data_collator([{k: v for k, v in r.items() if k in ds.column_names} for r in rows])


def _is_oom(e: Exception) -> bool:
    return "out of memory" in str(e).lower() or type(e).__name__ == "OutOfMemoryError"


def _correct(cfg: RunConfig, report: dict, budget: float | None) -> RunConfig | None:
    """A smaller batch (same effective batch through accumulation), then checkpointing, when the measured peak
    would not fit the budget (or ran out of memory); None when it fits."""
    peak = report.get("peak_memory_mb")
    if not report.get("out_of_memory") and (not budget or peak is None or peak <= budget):
        return None
    if cfg.batch_size > 1:
        batch = cfg.batch_size // 2
        if peak and budget and not report.get("out_of_memory"):
            while batch > 1 and peak * batch / cfg.batch_size > budget:
                batch //= 2
        effective = cfg.batch_size * cfg.grad_accum
        return cfg.model_copy(update={"batch_size": batch, "grad_accum": max(1, -(-effective // batch))})
    if not cfg.gradient_checkpointing:
        return cfg.model_copy(update={"gradient_checkpointing": True})
    return None
