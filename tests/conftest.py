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
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> Path:
    """A tiny random Llama (2 layers, width 64) with the bundled tokenizer and chat template: fast to train."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path
