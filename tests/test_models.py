"""Model registry: `default` is the bundled model; local dirs work; unknown names fail clearly."""

from __future__ import annotations

import pytest

from runtime.errors import FtpilotError
from runtime.models import context_length, resolve_model


def test_default_resolves_to_prepared_bundled_model(bundled_model_dir):
    ref = resolve_model("default")
    assert ref.source == "bundled" and ref.path == str(bundled_model_dir)
    assert (bundled_model_dir / "model.safetensors").stat().st_size > 400e6
    assert context_length("default") == 8192


def test_local_dir_and_errors(tiny_model_dir, workspace):
    assert resolve_model(str(tiny_model_dir)).source == "local"
    (workspace / "notamodel").mkdir()
    with pytest.raises(FtpilotError) as bad:
        resolve_model("notamodel")
    assert bad.value.code == "bad_model"
    with pytest.raises(FtpilotError) as unknown:
        resolve_model("someone/some-model")  # hub is offline in tests
    assert unknown.value.code == "unknown_model" and "default" in unknown.value.hint


def test_tiny_model_loads_and_uses_bundled_chat_template(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.num_parameters() < 5_000_000
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>assistant" in text
