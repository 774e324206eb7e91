"""Shared fixtures: an isolated data dir, workspace and store per test; tiny models built from a config."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Prepared models are shared across tests (the bundled one takes ~20 s to prepare once).
MODELS_DIR = Path(os.environ.get("FTPILOT_MODELS_DIR") or Path(platformdirs.user_data_dir("ftpilot")) / "models")


@pytest.fixture(autouse=True)
def ftpilot_env(tmp_path, monkeypatch):
    """Each test gets its own data dir, workspace root, config file and SQLite store."""
    from runtime.settings import reset_settings
    from runtime.store import reset_engines

    data, ws = tmp_path / "data", tmp_path / "ws"
    ws.mkdir()
    monkeypatch.setenv("FTPILOT_DATA_DIR", str(data))
    monkeypatch.setenv("FTPILOT_WORKSPACE_ROOT", str(ws))
    monkeypatch.setenv("FTPILOT_MODELS_DIR", str(MODELS_DIR))
    monkeypatch.setenv("FTPILOT_CONFIG_FILE", str(tmp_path / "config.toml"))
    for key in [k for k in os.environ if k.startswith("FTPILOT_") and k not in
                ("FTPILOT_DATA_DIR", "FTPILOT_WORKSPACE_ROOT", "FTPILOT_MODELS_DIR", "FTPILOT_CONFIG_FILE")]:
        monkeypatch.delenv(key)
    # `auto` engines (evaluate's default) would start a managed vLLM server where one can run, and leave it running
    # after the test: only tests that ask for the `served` fixture get one.
    monkeypatch.setenv("FTPILOT_VLLM_PYTHON", str(tmp_path / "no-vllm-outside-served"))
    reset_settings()
    reset_engines()
    yield ws
    reset_settings()
    reset_engines()


@pytest.fixture
def workspace(ftpilot_env) -> Path:
    return ftpilot_env


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The real bundled SmolLM2-135M-Instruct as a safetensors dir (prepared once)."""
    from runtime.models import BUNDLED_NAME

    path = MODELS_DIR / BUNDLED_NAME
    if not (path / "model.safetensors").exists():
        os.environ["FTPILOT_MODELS_DIR"] = str(MODELS_DIR)
        from runtime.models import prepare_bundled_model
        from runtime.settings import reset_settings

        reset_settings()
        prepare_bundled_model()
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(bundled_model_dir) -> Path:
    """A tiny random Llama (2 layers, width 64) with the bundled tokenizer and chat template: fast to train.
    It lives in the models dir (where tools may read models from), in a folder of this session's own."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = Path(tempfile.mkdtemp(prefix="test-tiny-llama-", dir=MODELS_DIR))
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def ticket_task(tmp_path_factory, bundled_model_dir) -> dict:
    """The sample ticket task (240 train / 60 eval rows) written once for the session's real runs."""
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    root = tmp_path_factory.mktemp("ticket-task")
    rows = ticket_records(300, seed=0)
    return {"train_path": str(write_jsonl(root / "train.jsonl", rows[:240])),
            "eval_path": str(write_jsonl(root / "eval.jsonl", rows[240:])), "root": root}


@pytest.fixture(scope="session")
def ticket_sft_run(tmp_path_factory, ticket_task) -> dict:
    """One real LoRA SFT run of the bundled model on the ticket task, shared by the training and evaluation
    proofs so CI trains it once. Returns the `train_sft` output (job_id, status, run_dir, adapter_path, metrics)
    plus the task paths."""
    from runtime.settings import reset_settings
    from runtime.store import reset_engines
    from tools import call_tool

    data = ticket_task["root"] / "run-data"  # inside the task's folder, so one workspace root covers both
    saved = {k: os.environ.get(k) for k in ("FTPILOT_DATA_DIR", "FTPILOT_WORKSPACE_ROOT", "FTPILOT_MODELS_DIR")}
    os.environ.update(FTPILOT_DATA_DIR=str(data), FTPILOT_WORKSPACE_ROOT=str(ticket_task["root"]),
                      FTPILOT_MODELS_DIR=str(MODELS_DIR))
    reset_settings()
    reset_engines()
    try:
        res = call_tool("train_sft", {"model": "default", "train_path": ticket_task["train_path"],
                                      "eval_path": ticket_task["eval_path"], "method": "lora",
                                      "max_steps": 40, "wait": True})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        reset_settings()
        reset_engines()
    assert res.ok, res.error
    assert res.output["status"] == "succeeded", res.output
    return {**res.output, **ticket_task, "data_dir": str(data)}


@pytest.fixture
def in_ticket_workspace(ticket_task, monkeypatch) -> Path:
    """Make the session's ticket-task folder (data and the shared run) this test's workspace root."""
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_WORKSPACE_ROOT", str(ticket_task["root"]))
    reset_settings()
    return ticket_task["root"]


# --- the managed vLLM server: one for the whole session ---------------------------------------------------

@pytest.fixture(scope="session")
def vllm_serve_dir(tmp_path_factory, bundled_model_dir) -> Path:
    """One managed vLLM server (the bundled model) shared by every test that needs it; stopped on teardown,
    pass or fail, and checked to leave no process behind. Tests use the `served` fixture."""
    from runtime import serving
    from runtime.settings import reset_settings

    serve_dir = tmp_path_factory.mktemp("vllm-serve")
    env = {"FTPILOT_SERVE_DIR": str(serve_dir), "FTPILOT_MODELS_DIR": str(MODELS_DIR),
           "FTPILOT_DATA_DIR": str(serve_dir / "data")}

    def with_env(fn):
        saved = {k: os.environ.get(k) for k in (*env, "FTPILOT_VLLM_PYTHON")}
        os.environ.update(env)
        os.environ.pop("FTPILOT_VLLM_PYTHON", None)  # the real runtime, not ftpilot_env's stand-in
        reset_settings()
        try:
            return fn()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
            reset_settings()

    if not with_env(serving.available):
        pytest.skip("no vLLM runtime here: `make vllm` builds .venv-vllm")
    try:
        with_env(lambda: serving.start("default", timeout_s=900))
        yield serve_dir
    finally:
        state = with_env(serving._read_state)
        with_env(serving.stop)
        if state:
            left = serving._processes(state)
            assert not left, f"vLLM processes left after stop: {[p.pid for p in left]}"


@pytest.fixture
def served(vllm_serve_dir, monkeypatch):
    """The session's vLLM server for this test (started again if an earlier test stopped it)."""
    from runtime import serving
    from runtime.engines import clear_engines
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_SERVE_DIR", str(vllm_serve_dir))
    monkeypatch.delenv("FTPILOT_VLLM_PYTHON", raising=False)
    reset_settings()
    clear_engines()
    yield serving.start("default", timeout_s=900)
    clear_engines()
