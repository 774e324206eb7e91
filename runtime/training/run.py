"""The job process: `python -m runtime.training.run JOB_ID` (or under `accelerate launch`).

Reads the job row, validates its config again with the method's typed config, runs the method's recipe through
the runner, writes status and result, and starts the next queued job when it ends. Rank 0 alone writes to the
store under `accelerate launch`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

from pydantic import ValidationError

from runtime import jobs
from runtime.errors import FtpilotError
from runtime.store import utcnow
from runtime.training.common import CANCEL, JobContext, install_signal_handlers, is_main
from runtime.training.config import RUN_CONFIGS

RECIPES = {"train_sft": ("runtime.training.sft", "SFTRecipe"),
           "train_dpo": ("runtime.training.dpo", "PreferenceRecipe"),
           "distill": ("runtime.training.distill", "DistillRecipe")}


def recipe_for(kind: str):
    if kind not in RECIPES:
        raise FtpilotError(f"unknown job kind {kind!r}", code="unknown_job_kind")
    module, name = RECIPES[kind]
    return getattr(importlib.import_module(module), name)()


def context(job) -> JobContext:
    """The job's context with its config validated again (a bad or outdated stored config fails here, clearly)."""
    if job.kind not in RUN_CONFIGS:
        raise FtpilotError(f"unknown job kind {job.kind!r}", code="unknown_job_kind")
    try:
        config = RUN_CONFIGS[job.kind].model_validate(dict(job.config or {}))
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5])
        raise FtpilotError(f"the stored config of job {job.id} is not a valid {job.kind} config: {problems}",
                           hint="Start a new run with the tool; stored configs are not edited by hand.",
                           code="bad_job_config") from None
    return JobContext(job_id=job.id, kind=job.kind, method=job.method, config=config, run_dir=Path(job.run_dir),
                      metrics_path=job.metrics_path, device=job.device or "cpu")


def _resume_point(ctx: JobContext, job) -> None:
    ckpt = jobs.last_checkpoint(job)
    ctx.resume_from = str(ckpt) if ckpt else None
    if is_main():
        step = int(ckpt.name.split("-")[-1]) if ckpt else 0
        dropped = jobs.truncate_metrics(job.id, job.metrics_path, step)
        jobs.update_job(job.id, step=step)
        print(f"[ftpilot] resuming from {ckpt or 'the start'} (step {step}); dropped {dropped} metric lines "
              "logged after it", flush=True)


def main(job_id: str) -> int:
    install_signal_handlers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    job = jobs.get_job(job_id)
    if is_main():
        jobs.update_job(job_id, heartbeat_at=utcnow(), **({} if job.started_at else {"started_at": utcnow()}))
    status, error, result = "failed", None, {}
    try:
        ctx = context(job)
        if ctx.config.resume:
            _resume_point(ctx, job)
        print("[ftpilot] preparing model and data", flush=True)
        from runtime.training.runner import run

        result = run(recipe_for(job.kind), ctx) or {}
        status = "cancelled" if CANCEL.is_set() else "succeeded"
    except FtpilotError as e:
        error = f"{e.message}" + (f" (hint: {e.hint})" if e.hint else "")
        traceback.print_exc()
    except BaseException as e:  # noqa: BLE001 - the row must say why the job died
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        if CANCEL.is_set():  # SIGTERM before the training loop raises Cancelled: that is a cancel, not a failure
            status, error = "cancelled", None
    if is_main():
        current = jobs.get_job(job_id)
        merged = {**(current.result or {}), **result}
        merged.pop("cancel_requested_at", None) if status == "succeeded" else None
        jobs.update_job(job_id, status=status, error=error, result=merged, ended_at=utcnow(), heartbeat_at=utcnow())
        print(f"[ftpilot] job {job_id} {status}" + (f": {error}" if error else ""), flush=True)
        try:
            jobs.schedule()  # start the next queued job on this device
        except Exception:  # noqa: BLE001
            traceback.print_exc()
    return 0 if status != "failed" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
