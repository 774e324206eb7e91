"""Jobs: long work (training) as detached OS processes recorded in the store.

A job is a row in the `Job` table plus a run dir holding its log, a metrics JSONL (flat JSON objects with a
`step` key), checkpoints and artifacts. The process is started with `start_new_session=True` so it survives the
UI or CLI that started it; it runs `python -m runtime.training.run JOB_ID` (or the same module under
`accelerate launch --num_processes N`). The job process writes its own status, heartbeat, step and metrics.

Scheduling: at most one job per device ("cpu", "cuda:0", ...) runs at a time; the others stay queued and the
next one is started when a job ends (by the ending job itself, or by whoever looks at the store next).
A job whose process is gone while its row still says running is detected as dead and marked failed.

This module imports no torch/transformers: tools import it at start-up.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from runtime import store
from runtime.errors import BadInput, FtpilotError, NotFound
from runtime.paths import data_subdir
from runtime.settings import get_settings
from runtime.store import Job, JobMetric, utcnow

# The one set of end states (the agent, the app and the CLI import it).
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE = ("queued", "running")
REPO_ROOT = Path(__file__).resolve().parent.parent

# Popen objects of jobs this process started: lets us reap them (a killed child stays a zombie otherwise).
_CHILDREN: dict[int, subprocess.Popen] = {}


# --- rows -----------------------------------------------------------------------------------------------

def get_job(job_id: str) -> Job:
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", hint="`ftpilot runs list` shows the jobs.", code="unknown_job")
        return job


def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 50) -> list[Job]:
    from sqlmodel import select

    with store.session() as s:
        q = select(Job)
        if status:
            q = q.where(Job.status == status)
        if kind:
            q = q.where(Job.kind == kind)
        return list(s.exec(q.order_by(Job.created_at.desc()).limit(limit)).all())


def update_job(job_id: str, **fields: Any) -> Job:
    with store.session() as s:
        job = s.get(Job, job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", code="unknown_job")
        for key, value in fields.items():
            setattr(job, key, value)
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def merge_json(job_id: str, column: str, **values: Any) -> Job:
    """Add keys to a JSON column (config/result) without losing the others."""
    with store.session() as s:
        job = s.get(Job, job_id)
        data = dict(getattr(job, column) or {})
        data.update(values)
        setattr(job, column, data)
        s.add(job)
        s.flush()
        s.refresh(job)
        return job


def run_dir_for(job_id: str) -> Path:
    return data_subdir("runs") / job_id


def default_device() -> str:
    from runtime.hardware import probe

    return "cuda:0" if probe().has_gpu else "cpu"


def create_job(kind: str, *, config: dict, method: str | None = None, model: str | None = None,
               dataset: str | None = None, device: str | None = None, start: bool = True) -> Job:
    """Record a queued job and start it when its device is free. The run dir is made only once the row is stored:
    a config the store refuses leaves no orphan folder."""
    job_id = store.new_id()
    run_dir = run_dir_for(job_id)
    job = Job(id=job_id, kind=kind, method=method, status="queued", model=model, dataset=dataset,
              device=device or default_device(), config=config, run_dir=str(run_dir),
              log_path=str(run_dir / "job.log"), metrics_path=str(run_dir / "metrics.jsonl"),
              total_steps=config.get("max_steps") if isinstance(config.get("max_steps"), int) else None, step=0)
    store.add(job)
    run_dir.mkdir(parents=True, exist_ok=True)
    if start:
        schedule()
    return get_job(job_id)


# --- processes ------------------------------------------------------------------------------------------

def _pid_alive(pid: int | None, job_id: str | None = None) -> bool:
    if not pid:
        return False
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        if job_id:  # guard against a reused pid
            with contextlib.suppress(psutil.Error):
                return job_id in " ".join(p.cmdline())
        return True
    except psutil.Error:
        return False


def is_alive(job: Job) -> bool:
    return _pid_alive(job.pid, job.id)


def job_command(job: Job) -> list[str]:
    nproc = int((job.config or {}).get("num_processes") or 1)
    if nproc > 1:
        # torch.distributed.run under accelerate's multi-process launcher; on a CPU the ranks use gloo
        # (TrainingArguments(use_cpu=True) in the job), which is how DDP is tested here with 2 processes.
        port = 29500 + (int(job.id[:4], 16) % 2000)
        return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(nproc),
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                "--main_process_port", str(port), "-m", "runtime.training.run", job.id]
    return [sys.executable, "-m", "runtime.training.run", job.id]


def _spawn(job: Job) -> Job:
    env = dict(os.environ)
    settings = get_settings()
    # The job process sees the same data dir, workspace and store as whoever started it.
    env.update(FTPILOT_DATA_DIR=str(settings.data_dir), FTPILOT_WORKSPACE_ROOT=str(settings.workspace_root),
               FTPILOT_MODELS_DIR=str(settings.resolved_models_dir), HF_HUB_OFFLINE=env.get("HF_HUB_OFFLINE", "1"),
               HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    if settings.database_url:
        env["FTPILOT_DATABASE_URL"] = settings.database_url
    if job.device and job.device.startswith("cuda:") and int((job.config or {}).get("num_processes") or 1) == 1:
        env["CUDA_VISIBLE_DEVICES"] = job.device.split(":", 1)[1]
    Path(job.run_dir).mkdir(parents=True, exist_ok=True)
    log = open(job.log_path, "ab")
    cmd = job_command(job)
    log.write(f"\n[ftpilot] {utcnow().isoformat()} start: {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    _CHILDREN[proc.pid] = proc
    return update_job(job.id, status="running", pid=proc.pid, heartbeat_at=utcnow(), started_at=utcnow(),
                      ended_at=None, error=None)


@contextlib.contextmanager
def _scheduler_lock() -> Iterator[None]:
    path = get_settings().data_dir / "jobs.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def refresh() -> list[str]:
    """Mark running jobs whose process is gone as failed (dead), and start what was queued behind them: the queue
    advances whoever notices the death (a listing, a status, the app). Returns the dead jobs' ids."""
    dead = _mark_dead()
    if dead:
        schedule()
    return dead


def _mark_dead() -> list[str]:
    dead = []
    for job in list_jobs(status="running", limit=1000):
        if is_alive(job):
            continue
        time.sleep(0.05)
        job = get_job(job.id)  # it may have just written its own ending
        if job.status != "running":
            continue
        cancel_asked = bool((job.result or {}).get("cancel_requested_at"))
        update_job(job.id, status="cancelled" if cancel_asked else "failed", ended_at=utcnow(),
                   error=None if cancel_asked else
                   f"dead: process {job.pid} ended without reporting (killed?); `ftpilot runs resume {job.id}` "
                   "continues from the last checkpoint")
        dead.append(job.id)
    return dead


def schedule() -> list[str]:
    """Start queued jobs whose device has no running job; returns the ids started."""
    started = []
    with _scheduler_lock():
        _mark_dead()
        busy = {j.device for j in list_jobs(status="running", limit=1000)}
        for job in sorted(list_jobs(status="queued", limit=1000), key=lambda j: j.created_at):
            if job.device in busy:
                continue
            _spawn(job)
            busy.add(job.device)
            started.append(job.id)
    return started


# --- control --------------------------------------------------------------------------------------------

def cancel_job(job_id: str, timeout: float = 600.0) -> Job:
    """Cancel a job. A running job gets SIGTERM: it saves a checkpoint at the end of the current step, then stops.

    Waits up to `timeout` seconds for that; a job still saving then is left to finish its cancel on its own
    (its row says running until it ends; `refresh` marks it cancelled if it dies first)."""
    job = get_job(job_id)
    if job.status in TERMINAL:
        raise BadInput(f"job {job_id} already {job.status}", code="job_not_active")
    if job.status == "queued":
        return update_job(job_id, status="cancelled", ended_at=utcnow())
    merge_json(job_id, "result", cancel_requested_at=utcnow().isoformat())
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(job_id)
        if job.status in TERMINAL or not is_alive(job):
            break
        time.sleep(0.25)
    schedule()
    return get_job(job_id)


def last_checkpoint(job: Job) -> Path | None:
    ckpt = Path(job.run_dir) / "checkpoints"
    if not ckpt.is_dir():
        return None
    found = [p for p in ckpt.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
             and (p / "trainer_state.json").exists()]
    return max(found, key=lambda p: int(p.name.split("-")[-1])) if found else None


def resume_job(job_id: str) -> Job:
    """Queue a failed or cancelled job again; it continues from its last checkpoint (same step and data)."""
    refresh()
    job = get_job(job_id)
    if job.status not in ("failed", "cancelled"):
        raise BadInput(f"job {job_id} is {job.status}; only failed or cancelled jobs can be resumed",
                       code="job_not_resumable")
    ckpt = last_checkpoint(job)
    attempts = int((job.config or {}).get("attempts") or 1) + 1
    merge_json(job_id, "config", resume=True, attempts=attempts)
    result = dict(job.result or {})
    result.pop("cancel_requested_at", None)
    update_job(job_id, status="queued", error=None, ended_at=None, pid=None,
               result={**result, "resumed_from": str(ckpt) if ckpt else None})
    schedule()
    return get_job(job_id)


def wait_job(job_id: str, timeout: float | None = None, poll: float = 1.0,
             on_progress: Callable[[Job, dict | None], None] | None = None) -> Job:
    """Block until the job ends (or timeout); `on_progress(job, last_metric)` is called on each poll."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        refresh()
        job = get_job(job_id)
        if job.status == "queued":
            schedule()
            job = get_job(job_id)
        if on_progress:
            on_progress(job, last_metric(job))
        if job.status in TERMINAL:
            proc = _CHILDREN.pop(job.pid, None) if job.pid else None
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            return job
        if deadline is not None and time.monotonic() > deadline:
            raise FtpilotError(f"job {job_id} still {job.status} after {timeout:.0f}s", code="timeout",
                               hint=f"It keeps running; `ftpilot runs show {job_id}` follows it.")
        time.sleep(poll)


# --- metrics --------------------------------------------------------------------------------------------

def read_metrics(job: Job | str, since_step: int = -1) -> list[dict]:
    job = get_job(job) if isinstance(job, str) else job
    path = Path(job.metrics_path or "")
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            if int(row.get("step", -1)) > since_step:
                out.append(row)
    return out


def last_metric(job: Job) -> dict | None:
    """The last metrics line with a training loss (or any line)."""
    rows = read_metrics(job)
    with_loss = [r for r in rows if "loss" in r]
    return (with_loss or rows or [None])[-1]


def record_metric(job_id: str, metrics_path: str, row: dict) -> None:
    """Append one flat metrics object (with `step`) to the JSONL and the store; beat the heart."""
    with open(metrics_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    with store.session() as s:
        s.add(JobMetric(job_id=job_id, step=int(row["step"]), data=row))
        job = s.get(Job, job_id)
        job.step = max(int(row["step"]), job.step or 0) if "loss" in row or "eval_loss" in row else job.step
        job.heartbeat_at = utcnow()
        s.add(job)


def truncate_metrics(job_id: str, metrics_path: str, after_step: int) -> int:
    """Drop metrics of steps after `after_step` (rolled back by a resume); returns how many were dropped."""
    from sqlmodel import delete

    path = Path(metrics_path)
    dropped = 0
    if path.exists():
        keep = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= after_step:
                    keep.append(line)
                else:
                    dropped += 1
            except json.JSONDecodeError:
                dropped += 1
        path.write_text("".join(k + "\n" for k in keep))
    with store.session() as s:
        s.exec(delete(JobMetric).where(JobMetric.job_id == job_id, JobMetric.step > after_step))
    return dropped


def heartbeat(job_id: str) -> None:
    update_job(job_id, heartbeat_at=utcnow())


def age_s(when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return round((utcnow() - when).total_seconds(), 1)


def job_summary(job: Job) -> dict:
    """A JSON-ready view of a job row for tools and the CLI."""
    return {"job_id": job.id, "kind": job.kind, "method": job.method, "status": job.status, "model": job.model,
            "dataset": job.dataset, "device": job.device, "step": job.step, "total_steps": job.total_steps,
            "pid": job.pid, "run_dir": job.run_dir, "log_path": job.log_path, "metrics_path": job.metrics_path,
            "error": job.error, "created_at": job.created_at, "started_at": job.started_at,
            "ended_at": job.ended_at, "heartbeat_age_s": age_s(job.heartbeat_at),
            "config": job.config, "result": job.result}
