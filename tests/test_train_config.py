"""Typed run configs and the tool contracts around them: defaults in one place, cross-field rules as validators,
bounds that keep typos (max_steps = 2e20) from reaching the store, and model paths under the workspace rule."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tools import call_tool


def test_one_config_per_method_with_defaults_and_cross_field_rules():
    from runtime.training.config import LORA_R, RUN_CONFIGS, DistillRun, PreferenceRun, SFTRun

    assert set(RUN_CONFIGS) == {"train_sft", "train_dpo", "distill"}
    assert SFTRun(train_path="t.jsonl").learning_rate == 2e-4
    assert SFTRun(train_path="t.jsonl", method="full").learning_rate == 2e-5
    assert PreferenceRun(train_path="t.jsonl").learning_rate == 5e-5
    assert DistillRun(train_path="t.jsonl").learning_rate == 1e-4
    assert SFTRun(train_path="t.jsonl").lora_r == LORA_R
    assert PreferenceRun(train_path="p.jsonl", loss="ipo").job_method == "ipo"
    with pytest.raises(ValidationError):
        PreferenceRun(train_path="p.jsonl", method="kto", loss="ipo")  # a DPO loss for KTO means nothing
    with pytest.raises(ValidationError):
        SFTRun(train_path="t.jsonl", columns={"answer": "out"})       # unknown role
    with pytest.raises(ValidationError):
        SFTRun(train_path="t.jsonl", learning_rate=float("inf"))
    with pytest.raises(ValidationError):
        SFTRun(train_path="t.jsonl", surprise=1)                      # a stored config holds known fields only
    stored = SFTRun(train_path="t.jsonl", max_steps=7).model_dump(mode="json")
    assert SFTRun.model_validate(stored).max_steps == 7              # what the job process does with it


def test_max_steps_2e20_is_refused_and_leaves_no_run_folder(tiny_model_dir, workspace):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records
    from runtime.settings import get_settings

    write_jsonl(workspace / "train.jsonl", ticket_records(8))
    res = call_tool("train_sft", {"model": str(tiny_model_dir), "train_path": "train.jsonl", "max_steps": 2 * 10**20})
    assert not res.ok and res.error["code"] == "validation_error", res.error
    runs = get_settings().data_dir / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    from runtime import jobs

    assert jobs.list_jobs() == []


def test_the_job_process_validates_its_stored_config_again(tiny_model_dir, workspace):
    from runtime import jobs

    job = jobs.create_job("train_sft", method="lora", config={"train_path": "t.jsonl", "max_steps": "lots"})
    job = jobs.wait_job(job.id, timeout=300)
    assert job.status == "failed"
    assert "not a valid train_sft config" in job.error and "max_steps" in job.error


def test_model_paths_follow_the_workspace_rule(tiny_model_dir, workspace, tmp_path):
    import shutil

    outside = tmp_path / "elsewhere" / "model"
    shutil.copytree(tiny_model_dir, outside)
    res = call_tool("plan_training", {"model": str(outside)})
    assert not res.ok and res.error["code"] == "outside_workspace"
    assert call_tool("plan_training", {"model": str(tiny_model_dir)}).ok  # the models dir is allowed
    # an adapter inside the workspace whose base lies outside it
    adapter = workspace / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(outside),
                                                             "peft_type": "LORA"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_preference_records

    write_jsonl(workspace / "pref.jsonl", ticket_preference_records(4))
    res = call_tool("train_dpo", {"model": str(tiny_model_dir), "train_path": "pref.jsonl",
                                  "adapter_path": "adapter"})
    assert not res.ok and res.error["code"] == "outside_workspace", res.error


def test_a_model_folder_holding_only_a_pickle_is_a_clear_error(tiny_model_dir, workspace, monkeypatch):
    import shutil

    d = workspace / "pickled"
    d.mkdir()
    shutil.copy(tiny_model_dir / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    res = call_tool("plan_training", {"model": "pickled"})
    assert not res.ok and res.error["code"] == "pickle_weights" and "safetensors" in res.error["message"]
    assert "FTPILOT_ALLOW_PICKLE" in res.error["hint"]
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_ALLOW_PICKLE", "1")  # asked for by name
    reset_settings()
    assert call_tool("plan_training", {"model": "pickled"}).ok


def test_train_sft_refuses_a_fifo_before_any_job(tiny_model_dir, workspace):
    import os

    os.mkfifo(workspace / "pipe.jsonl")
    res = call_tool("train_sft", {"model": str(tiny_model_dir), "train_path": "pipe.jsonl", "max_steps": 1})
    assert not res.ok and res.error["code"] == "not_a_regular_file"
    from runtime import jobs

    assert jobs.list_jobs() == []
