"""The playground's engine choice: the managed vLLM server when it is ready and serves the run's base model,
transformers in-process otherwise (a prompt never waits for a server to start)."""

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
