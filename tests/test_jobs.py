"""Job lifecycle with a tiny model: detached process, metrics, artifacts, queueing, cancel, kill -9 + resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tools import call_tool


@pytest.fixture
def tiny_task(workspace):
    from runtime.samples import ticket_records, write_split

    write_split(workspace, ticket_records(40, seed=1), 32)
    return {"train_path": "train.jsonl", "eval_path": "eval.jsonl"}


def sft_args(tiny_model_dir, task, **kw):
    args = {"model": str(tiny_model_dir), **task, "max_steps": 4, "batch_size": 2, "max_length": 64,
            "precision": "fp32", "learning_rate": 1e-3}
    args.update(kw)
    return args


def wait_for(pred, timeout=120.0, poll=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("condition not reached in time")


def step_of(job_id):
    from runtime import jobs

    return jobs.get_job(job_id).step or 0


def test_train_sft_wait_runs_in_its_own_process_and_leaves_artifacts(tiny_model_dir, tiny_task, workspace):
    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, wait=True))
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    from runtime import jobs
    from runtime.paths import sha256_file
    from runtime.store import JobMetric

    job = jobs.get_job(out["job_id"])
    assert job.pid and job.pid != os.getpid() and job.started_at and job.ended_at and job.heartbeat_at
    metrics = jobs.read_metrics(job)
    assert all(isinstance(m, dict) and "step" in m for m in metrics)
    train_steps = [m["step"] for m in metrics if "loss" in m]
    assert train_steps == [1, 2, 3, 4]
    first = next(m for m in metrics if "loss" in m)
    for key in ("learning_rate", "grad_norm", "memory_mb"):
        assert key in first
    assert any("tokens_per_s" in m for m in metrics)
    from runtime import store
    from sqlmodel import select

    with store.session() as s:
        rows = s.exec(select(JobMetric).where(JobMetric.job_id == job.id)).all()
    assert {r.step for r in rows if "loss" in r.data} == {1, 2, 3, 4}
    m = out["metrics"]
    assert m["eval_loss"] < m["eval_loss_before"]  # lr 1e-3 on a random tiny model: it learns the labels' tokens
    run = Path(out["run_dir"])
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "tokenizer/tokenizer.json",
                 "config.json", "dataset.json", "metrics.jsonl", "job.log", "reproduce.sh", "reproduce.py"):
        assert (run / name).exists(), name
    pickles = [p for ext in ("*.bin", "*.pt", "*.pth", "*.pkl") for p in run.rglob(ext)]
    assert not pickles, "a finished run keeps safetensors only (resume state is dropped)"
    data = json.loads((run / "dataset.json").read_text())
    assert data["train"]["sha256"] == sha256_file(workspace / "train.jsonl")
    assert "accelerate launch" in (run / "reproduce.sh").read_text()
    code = (run / "reproduce.py").read_text().split('"""', 2)[-1]
    code = code.split('r"""', 1)[0] + code.split('"""', 2)[-1]  # the CONFIG JSON holds paths (data, not code)
    assert "ftpilot" not in code.replace("ftpilot SFT", "")
    # TRL's own CLI accepts the config written beside reproduce.sh (`trl sft --config trl_config.yaml`)
    from trl.scripts.sft import make_parser

    script, training, model_args, data = make_parser().parse_args_and_config(
        ["--config", str(run / "trl_config.yaml")])
    assert model_args.use_peft and model_args.lora_r == 16 and training.max_steps == 4
    assert data.datasets[0].data_files == str(workspace / "train.jsonl")
    # the adapter loads with plain PEFT
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = PeftModel.from_pretrained(base, out["adapter_path"])
    assert any("lora_A" in n for n, _ in peft_model.named_parameters())
    # a reread of the status gives the same picture
    st = call_tool("run_status", {"job_id": job.id})
    assert st.ok and st.output["job"]["status"] == "succeeded" and st.output["last_metrics"]["step"] == 4
    lst = call_tool("list_runs", {})
    assert lst.ok and lst.output["runs"][0]["job_id"] == job.id


def test_without_wait_returns_at_once_and_second_job_queues(tiny_model_dir, tiny_task):
    from runtime import jobs

    t0 = time.monotonic()
    a = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, max_steps=3))
    b = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, max_steps=2))
    assert a.ok and b.ok, (a.error, b.error)
    assert time.monotonic() - t0 < 20
    assert a.output["status"] == "running"
    assert b.output["status"] == "queued"  # one job per device at a time
    ja = jobs.wait_job(a.output["job_id"], timeout=300)
    jb = jobs.wait_job(b.output["job_id"], timeout=300)
    assert ja.status == jb.status == "succeeded", (ja.error, jb.error)
    assert jb.started_at >= ja.ended_at.replace(microsecond=0)


def test_bad_input_is_an_error_value_and_starts_nothing(tiny_model_dir, tiny_task):
    from runtime import jobs

    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, train_path="missing.jsonl"))
    assert not res.ok and res.error["code"] == "not_found"
    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, method="dora"))
    assert not res.ok and res.error["code"] == "validation_error"
    assert jobs.list_jobs() == []
    res = call_tool("cancel_run", {"job_id": "nope"})
    assert not res.ok and res.error["code"] == "unknown_job"


def test_cancel_saves_a_checkpoint_then_resume_finishes(tiny_model_dir, tiny_task):
    from runtime import jobs

    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, max_steps=40, save_steps=1000))
    job_id = res.output["job_id"]
    wait_for(lambda: step_of(job_id) >= 2, timeout=180)
    out = call_tool("cancel_run", {"job_id": job_id})
    assert out.ok, out.error
    assert out.output["status"] == "cancelled"
    job = jobs.get_job(job_id)
    ckpt = jobs.last_checkpoint(job)
    assert ckpt is not None, "cancel saves a checkpoint before it stops"
    saved_step = int(ckpt.name.split("-")[-1])
    assert 2 <= saved_step < 40
    assert job.step == saved_step
    res = call_tool("resume_run", {"job_id": job_id, "wait": True, "timeout_s": 600})
    assert res.ok, res.error
    assert res.output["status"] == "succeeded", res.output
    steps = [m["step"] for m in jobs.read_metrics(job_id) if "loss" in m]
    assert steps == list(range(1, 41))


def test_kill_9_is_detected_and_resume_continues_without_repeating_a_step(tiny_model_dir, tiny_task):
    """Resume continues at the checkpoint's step with the same data position: its losses equal an unbroken run."""
    from runtime import jobs

    common = dict(max_steps=12, save_steps=4, lora_dropout=0.0)
    ref = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, wait=True, **common))
    assert ref.ok and ref.output["status"] == "succeeded"
    ref_loss = {m["step"]: m["loss"] for m in jobs.read_metrics(ref.output["job_id"]) if "loss" in m}

    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, **common))
    job_id = res.output["job_id"]
    wait_for(lambda: step_of(job_id) >= 6, timeout=180)
    os.killpg(jobs.get_job(job_id).pid, signal.SIGKILL)
    st = wait_for(lambda: (r := call_tool("run_status", {"job_id": job_id})).output["job"]["status"] != "running"
                  and r, timeout=30)
    assert st.output["job"]["status"] == "failed"
    assert "dead" in st.output["job"]["error"]
    ckpt_step = int(Path(st.output["checkpoint"]).name.split("-")[-1])
    assert ckpt_step in (4, 8)
    res = call_tool("resume_run", {"job_id": job_id, "wait": True, "timeout_s": 600})
    assert res.ok and res.output["status"] == "succeeded", res.output
    log = Path(jobs.get_job(job_id).log_path).read_text()
    assert f"resuming from" in log and f"checkpoint-{ckpt_step}" in log
    metrics = [m for m in jobs.read_metrics(job_id) if "loss" in m]
    steps = [m["step"] for m in metrics]
    assert steps == list(range(1, 13)), "no step is run (or logged) twice"
    for m in metrics:  # same step, same data position: the same losses as the unbroken run
        assert m["loss"] == pytest.approx(ref_loss[m["step"]], rel=2e-3, abs=2e-3), m["step"]


def test_runs_cli_lists_shows_logs_and_refuses_bad_ids(tiny_model_dir, tiny_task, capsys):
    from assistant.cli import main

    res = call_tool("train_sft", sft_args(tiny_model_dir, tiny_task, max_steps=2, eval_path=None))
    job_id = res.output["job_id"]
    capsys.readouterr()
    assert main(["runs", "show", job_id, "--wait"]) == 0
    captured = capsys.readouterr()
    shown = json.loads(captured.out)
    assert shown["job"]["status"] == "succeeded" and shown["last_metrics"]["step"] == 2
    assert "step 2/2" in captured.err  # the progress bar is on stderr, JSON alone on stdout
    assert main(["runs", "list"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["job_id"] == job_id
    assert main(["runs", "logs", job_id]) == 0
    assert f"job {job_id} succeeded" in capsys.readouterr().out
    assert main(["runs", "cancel", job_id]) == 1
    assert json.loads(capsys.readouterr().out)["error"]["code"] == "job_not_active"
    assert main(["runs", "resume", "nope"]) == 1
