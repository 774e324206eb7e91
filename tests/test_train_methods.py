"""The preference and distillation methods run end to end as jobs on a tiny model (fast; proofs of learning are
in test_train_real.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools import call_tool


@pytest.fixture
def pref_task(workspace):
    from runtime.samples import ticket_preference_records, write_split

    write_split(workspace, ticket_preference_records(24, seed=3), 16, prefix="pref_")
    return {"train_path": "pref_train.jsonl", "eval_path": "pref_eval.jsonl"}


@pytest.mark.parametrize("spec", [{"method": "dpo", "loss": "ipo"}, {"method": "kto"}, {"method": "orpo"}])
def test_preference_methods_run_as_jobs(tiny_model_dir, pref_task, spec):
    res = call_tool("train_dpo", {"model": str(tiny_model_dir), **pref_task, "max_steps": 2, "batch_size": 2,
                                  "max_length": 96, "precision": "fp32", "wait": True, **spec})
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    m = out["metrics"]
    assert m["global_step"] == 2
    assert 0.0 <= m["preference_accuracy"] <= 1.0 and "preference_accuracy_before" in m
    assert (Path(out["adapter_path"]) / "adapter_model.safetensors").exists()
    from runtime import jobs

    job = jobs.get_job(out["job_id"])
    assert job.method == ("ipo" if spec.get("loss") == "ipo" else spec["method"])
    result = json.loads((Path(out["run_dir"]) / "result.json").read_text())
    assert result["preference_method"] == job.method
    # on a CPU the trainers TRL gives its fused LM head train with the plain one (ORPO's has none)
    assert result["lm_head"] == ("trl" if spec["method"] == "orpo" else "plain")
    assert "DPOTrainer" in (Path(out["run_dir"]) / "reproduce.py").read_text()
    assert (Path(out["run_dir"]) / "reproduce.sh").exists()


def test_dpo_rejects_sft_data_with_a_hint(tiny_model_dir, workspace):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    write_jsonl(workspace / "sft.jsonl", ticket_records(8))
    res = call_tool("train_dpo", {"model": str(tiny_model_dir), "train_path": "sft.jsonl", "max_steps": 1,
                                  "wait": True})
    assert not res.ok and res.error["code"] == "bad_dataset_format"
    assert "preference" in res.error["message"]
    from runtime import jobs

    assert jobs.list_jobs() == []  # refused before any job started


@pytest.fixture
def sft_task(workspace):
    from runtime.samples import ticket_records, write_split

    write_split(workspace, ticket_records(24, seed=4), 16)
    return {"train_path": "train.jsonl", "eval_path": "eval.jsonl"}


@pytest.mark.parametrize("mode", ["logit", "sequence"])
def test_distill_makes_a_half_depth_student_and_saves_it(tiny_model_dir, sft_task, mode):
    res = call_tool("distill", {"model": str(tiny_model_dir), **sft_task, "mode": mode, "max_steps": 3,
                                "batch_size": 4, "max_new_tokens": 4, "precision": "fp32", "wait": True})
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    m = out["metrics"]
    assert (m["teacher_layers"], m["student_layers"]) == (2, 1)
    assert m["teacher_kl"] < m["teacher_kl_before"] or mode == "sequence"
    cfg = json.loads((Path(out["model_dir"]) / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1
    assert (Path(out["model_dir"]) / "model.safetensors").exists()
    if mode == "sequence":
        assert (Path(out["run_dir"]) / "teacher_answers.jsonl").exists()
    repro = json.loads((Path(out["run_dir"]) / "reproduce.py").read_text().split('r"""', 1)[1].split('"""', 1)[0])
    assert repro["mode"] == mode and Path(repro["student"], "config.json").exists()


def test_reproduce_sh_reruns_the_job_with_plain_accelerate_and_trl(tiny_model_dir, sft_task, tmp_path):
    import os
    import subprocess
    import sys

    run = call_tool("train_sft", {"model": str(tiny_model_dir), **sft_task, "max_steps": 2, "batch_size": 4,
                                  "precision": "fp32", "wait": True})
    assert run.ok and run.output["status"] == "succeeded"
    run_dir = Path(run.output["run_dir"])
    script = (run_dir / "reproduce.py").read_text()
    assert "import ftpilot" not in script and "from runtime" not in script and "from tools" not in script
    env = {k: v for k, v in os.environ.items() if not k.startswith("FTPILOT_")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = ""
    out = tmp_path / "again"
    proc = subprocess.run(["bash", str(run_dir / "reproduce.sh"), "--output_dir", str(out)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "adapter_model.safetensors").exists()
    assert "'train_loss'" in proc.stdout or "train_loss" in proc.stderr + proc.stdout


def test_same_job_under_accelerate_launch_with_two_cpu_processes(tiny_model_dir, sft_task):
    """DDP on the CPU (gloo): two ranks, one writer of metrics and artifacts."""
    res = call_tool("train_sft", {"model": str(tiny_model_dir), **sft_task, "max_steps": 3, "batch_size": 2,
                                  "precision": "fp32", "num_processes": 2, "wait": True, "timeout_s": 600})
    assert res.ok, res.error
    out = res.output
    log = open(out["log_path"]).read()
    assert out["status"] == "succeeded", log[-3000:]
    assert "accelerate.commands.launch --multi_gpu --num_processes 2" in log
    assert out["metrics"]["world_size"] == 2
    from runtime import jobs

    steps = [m["step"] for m in jobs.read_metrics(out["job_id"]) if "loss" in m]
    assert steps == [1, 2, 3]  # rank 0 alone writes metrics
    assert (Path(out["adapter_path"]) / "adapter_model.safetensors").exists()
    assert "--num_processes 2" in (Path(out["run_dir"]) / "reproduce.sh").read_text()
