"""Training jobs under attack (issue 8) and honest numbers (issue 12), on a tiny model: cancel in any phase, a
diverging run fails naming its step, the queue advances after kill -9, over-long rows are bounded before any
tokenizer sees them, tokens/s counts real tokens, the pre-flight measures before training, eval is sized."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from test_jobs import sft_args as args, tiny_task, wait_for  # noqa: F401 - the job tests' helpers and fixture
from tools import call_tool


def test_a_diverging_run_fails_naming_the_step_and_metrics_stay_json(tiny_model_dir, tiny_task):
    res = call_tool("train_sft", args(tiny_model_dir, tiny_task, learning_rate=1e30, wait=True, eval_path=None))
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "failed", out
    assert "diverged" in out["error"] and "step" in out["error"], out["error"]

    def strict(text):  # NaN and Infinity are not JSON
        return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))

    rows = [strict(line) for line in Path(out["metrics_path"]).read_text().splitlines()]
    assert any(r.get("diverged") for r in rows)


def test_cancel_during_data_preparation_stops_the_job(tiny_model_dir, workspace):
    from runtime import jobs
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    write_jsonl(workspace / "big.jsonl", ticket_records(60_000, seed=2))  # tokenizing it takes a while
    res = call_tool("train_sft", {"model": str(tiny_model_dir), "train_path": "big.jsonl", "max_steps": 2,
                                  "batch_size": 2, "max_length": 64, "precision": "fp32"})
    assert res.ok, res.error
    job_id = res.output["job_id"]
    wait_for(lambda: "preparing model and data" in Path(jobs.get_job(job_id).log_path).read_text())
    time.sleep(2)
    t = time.monotonic()
    out = call_tool("cancel_run", {"job_id": job_id})
    took = time.monotonic() - t
    log = Path(jobs.get_job(job_id).log_path).read_text()
    assert out.ok and out.output["status"] == "cancelled", (out.output, log[-2000:])
    assert took < 30, took  # SIGTERM used to wait for the whole data preparation
    assert not [m for m in jobs.read_metrics(job_id) if "loss" in m]


def test_after_kill_9_the_next_queued_job_starts_when_anyone_looks(tiny_model_dir, tiny_task):
    from runtime import jobs

    a = call_tool("train_sft", args(tiny_model_dir, tiny_task, max_steps=200, eval_path=None)).output
    b = call_tool("train_sft", args(tiny_model_dir, tiny_task, max_steps=2, eval_path=None)).output
    assert a["status"] == "running" and b["status"] == "queued"
    wait_for(lambda: (jobs.get_job(a["job_id"]).step or 0) >= 1)
    os.killpg(jobs.get_job(a["job_id"]).pid, signal.SIGKILL)
    time.sleep(1)
    listed = wait_for(lambda: call_tool("list_runs", {}).output, timeout=30)  # a listing detects the death
    states = {r["job_id"]: r["status"] for r in listed["runs"]}
    assert states[a["job_id"]] == "failed"
    assert jobs.get_job(b["job_id"]).status in ("running", "succeeded")  # nobody waited on it
    assert jobs.wait_job(b["job_id"], timeout=300).status == "succeeded"


def test_over_long_rows_are_cut_before_tokenizing_or_refused(tiny_model_dir, workspace):
    from runtime import jobs
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    rows = ticket_records(8, seed=3)
    rows.append({"messages": [{"role": "user", "content": "word " * 1_000_000},  # 5 MB in one row
                              {"role": "assistant", "content": "billing"}]})
    write_jsonl(workspace / "long.jsonl", rows)
    common = {"model": str(tiny_model_dir), "train_path": "long.jsonl", "max_steps": 2, "batch_size": 3,
              "max_length": 64, "precision": "fp32", "wait": True}
    res = call_tool("train_sft", common)
    assert res.ok and res.output["status"] == "succeeded", res.output or res.error
    assert res.output["metrics"]["rows_truncated"] == 1
    assert res.output["metrics"]["peak_memory_mb"] < 4000
    refused = call_tool("train_sft", {**common, "too_long": "refuse"})
    assert refused.ok and refused.output["status"] == "failed"
    assert "longer than max_length" in refused.output["error"] and "8" in refused.output["error"]
    assert jobs.get_job(refused.output["job_id"]).step == 0


def test_tokens_per_s_counts_real_tokens_and_eval_is_sized(tiny_model_dir, workspace):
    from transformers import AutoTokenizer

    rows = [{"messages": [{"role": "user", "content": "x " * n}, {"role": "assistant", "content": "yes"}]}
            for n in (2, 3, 50, 4)]  # one long row: padding is most of the batch
    from runtime.outputs import write_jsonl

    write_jsonl(workspace / "t.jsonl", rows)
    write_jsonl(workspace / "e.jsonl", rows * 3)
    res = call_tool("train_sft", {"model": str(tiny_model_dir), "train_path": "t.jsonl", "eval_path": "e.jsonl",
                                  "max_steps": 1, "batch_size": 4, "max_length": 128, "precision": "fp32",
                                  "eval_rows": 5, "wait": True})
    assert res.ok and res.output["status"] == "succeeded", res.output or res.error
    m = res.output["metrics"]
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    def n_tokens(messages):
        ids = tok.apply_chat_template(messages, tokenize=True)
        return len(ids["input_ids"] if hasattr(ids, "keys") else ids)

    real = sum(n_tokens(r["messages"]) for r in rows)
    assert abs(m["input_tokens"] - real) <= len(rows) * 2, (m["input_tokens"], real)
    assert 0 < m["label_tokens"] < m["input_tokens"]
    assert m["tokens_per_s"] > 0 and m["label_tokens_per_s"] > 0
    assert m["eval_rows"] == 5 and "eval_s" in m
    st = call_tool("run_status", {"job_id": res.output["job_id"]}).output
    assert st["tokens_per_s"] == st["last_metrics"]["tokens_per_s"] and st["label_tokens_per_s"]


def test_preflight_measures_before_training_and_run_status_shows_it(tiny_model_dir, tiny_task):
    res = call_tool("train_sft", args(tiny_model_dir, tiny_task, preflight=True, max_steps=3, eval_path=None,
                                      wait=True))
    assert res.ok and res.output["status"] == "succeeded", res.output or res.error
    st = call_tool("run_status", {"job_id": res.output["job_id"]}).output
    pf = st["preflight"]
    assert pf and pf["peak_memory_mb"] > 0 and pf["tokens_per_s"] > 0 and pf["eta_s"] > 0, pf
    assert pf["planned_mb"] and pf.get("corrected") is None


def test_preflight_correction_keeps_the_effective_batch():
    from runtime.training.config import SFTRun
    from runtime.training.preflight import _correct

    cfg = SFTRun(train_path="t.jsonl", batch_size=8, grad_accum=1)
    fixed = _correct(cfg, {"peak_memory_mb": 3000.0}, budget=1000.0)
    assert fixed.batch_size == 2 and fixed.batch_size * fixed.grad_accum == 8
    oom = _correct(cfg, {"out_of_memory": True}, budget=None)
    assert oom.batch_size == 4 and oom.grad_accum == 2
    one = _correct(SFTRun(train_path="t.jsonl", batch_size=1), {"out_of_memory": True}, budget=None)
    assert one.gradient_checkpointing and one.batch_size == 1
    assert _correct(cfg, {"peak_memory_mb": 500.0}, budget=1000.0) is None
