"""The job process: `python -m runtime.training.run JOB_ID` (or under `accelerate launch`).

Reads the job row, runs the entry point for its kind, writes status, result and artifacts, and starts the next
queued job when it ends. Rank 0 alone writes to the store under `accelerate launch`.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from pathlib import Path

from runtime import jobs
from runtime.errors import FtpilotError
from runtime.store import utcnow
from runtime.training.common import CANCEL, JobContext, install_signal_handlers, is_main

ENTRY_POINTS = {"train_sft": "runtime.training.sft", "train_dpo": "runtime.training.dpo",
                "distill": "runtime.training.distill"}


def main(job_id: str) -> int:
    install_signal_handlers()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    job = jobs.get_job(job_id)
    ctx = JobContext(job_id=job.id, kind=job.kind, method=job.method, config=dict(job.config or {}),
                     run_dir=Path(job.run_dir), metrics_path=job.metrics_path, device=job.device or "cpu")
    if is_main():
        jobs.update_job(job_id, heartbeat_at=utcnow(), **({} if job.started_at else {"started_at": utcnow()}))
    if ctx.config.get("resume"):
        ckpt = jobs.last_checkpoint(job)
        ctx.resume_from = str(ckpt) if ckpt else None
        if is_main():
            step = int(ckpt.name.split("-")[-1]) if ckpt else 0
            dropped = jobs.truncate_metrics(job_id, job.metrics_path, step)
            jobs.update_job(job_id, step=step)
            print(f"[ftpilot] resuming from {ckpt or 'the start'} (step {step}); dropped {dropped} metric lines "
                  "logged after it", flush=True)
    status, error, result = "failed", None, {}
    try:
        module = importlib.import_module(ENTRY_POINTS[job.kind])
        result = module.train(ctx) or {}
        status = "cancelled" if CANCEL.is_set() else "succeeded"
    except FtpilotError as e:
        error = f"{e.message}" + (f" (hint: {e.hint})" if e.hint else "")
        traceback.print_exc()
    except KeyError:
        error = f"unknown job kind {job.kind!r}"
    except BaseException as e:  # noqa: BLE001 - the row must say why the job died
        error = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        if CANCEL.is_set():
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
