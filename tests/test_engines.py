"""Engines: batching is real and exact, structured output is valid, the HTTP backend talks to a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.engines import ChatRequest, Sampling, get_engine, parse_spec

PROMPTS = ["Say hello.", "What is two plus two?", "Name a color.", "Write one word about the sea, please, now.",
           "Hi", "Tell me a short fact about cats and dogs living together."]


@pytest.fixture(scope="module")
def tiny_engine(tiny_model_dir):
    from runtime.engines.hf import TransformersEngine

    return TransformersEngine(str(tiny_model_dir), batch_size=8)


def test_parse_spec_forms():
    assert parse_spec("default") == {"backend": "transformers", "model": "default"}
    assert parse_spec("hf:/x/y")["model"] == "/x/y"
    assert parse_spec("openai:http://h:1/v1#m") == {"backend": "openai", "base_url": "http://h:1/v1", "model": "m"}
    assert parse_spec("vllm:Qwen/Qwen2.5-0.5B")["backend"] == "vllm"
    from runtime.errors import BadInput

    with pytest.raises(BadInput):
        parse_spec({"backend": "nope"})


def test_batched_greedy_equals_one_at_a_time(tiny_engine):
    """Left padding with an attention mask: prompts of different lengths batched give the same greedy text."""
    sampling = Sampling(max_new_tokens=12)
    batched = tiny_engine.generate(PROMPTS, sampling)
    single = [tiny_engine.generate([p], sampling)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens == 12 for c in batched)  # a random model never stops early... or reports it
    lens = {c.prompt_tokens for c in batched}
    assert len(lens) > 1  # the prompts really had different lengths, so padding was exercised
    assert [c.prompt_tokens for c in batched] == [c.prompt_tokens for c in single]


def test_structured_output_matches_schema_even_from_a_random_model(tiny_engine):
    import jsonschema

    schema = {"type": "object", "properties": {
        "label": {"type": "string", "enum": ["billing", "technical", "shipping"]},
        "urgent": {"type": "boolean"},
        "n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["label", "urgent", "n"], "additionalProperties": False}
    reqs = [ChatRequest([{"role": "user", "content": p}], json_schema=schema, id=str(i))
            for i, p in enumerate(PROMPTS[:4])]
    outs = tiny_engine.generate(reqs + ["plain request"], Sampling(max_new_tokens=40))
    for i, c in enumerate(outs[:4]):
        assert c.id == str(i)
        value = json.loads(c.text)
        jsonschema.validate(value, schema)
        assert c.parsed == value and c.error is None
    # the unconstrained request in the same call is not forced into JSON
    assert outs[4].parsed is None


def test_bad_schema_is_a_clear_error(tiny_engine):
    from runtime.errors import BadInput

    with pytest.raises(BadInput):
        tiny_engine.generate([ChatRequest([{"role": "user", "content": "x"}], json_schema={"type": "nonsense"})])


def test_score_gives_lower_loss_for_the_trained_answer(tiny_engine):
    res = tiny_engine.score([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]])
    nll, n = res[0]
    assert n >= 2 and nll > 0


def test_adapter_per_request_changes_output(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero B applies only to the requests that name it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from runtime.engines.hf import TransformersEngine

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 2.0)
    peft.save_pretrained(tmp_path / "adapter")
    eng = TransformersEngine(str(tiny_model_dir))
    s = Sampling(max_new_tokens=8)
    plain = eng.generate(PROMPTS[:3], s)
    mixed = eng.generate([ChatRequest([{"role": "user", "content": p}], adapter=str(tmp_path / "adapter"))
                          for p in PROMPTS[:3]] + PROMPTS[:3], s)
    assert [c.text for c in mixed[3:]] == [c.text for c in plain]  # base requests untouched by the adapter
    assert [c.text for c in mixed[:3]] != [c.text for c in plain]


# --- the HTTP backend against a real `transformers serve` ---------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served_tiny(tiny_model_dir):
    port = _free_port()
    exe = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([str(exe), "serve", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--port", str(port),
                             "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("transformers serve did not come up in 120 s")
        yield base + "/v1", str(tiny_model_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.real
def test_http_engine_against_real_transformers_serve(served_tiny, tiny_engine):
    base_url, model_dir = served_tiny
    eng = get_engine(f"openai:{base_url}")
    assert eng.model  # discovered from /v1/models
    outs = eng.generate(PROMPTS[:3], Sampling(max_new_tokens=8))
    assert all(c.error is None and c.finish_reason != "error" for c in outs), [c.error for c in outs]
    assert all(c.completion_tokens > 0 and c.latency_s > 0 for c in outs)
    # same weights, greedy: the server's text equals the in-process engine's text
    local = tiny_engine.generate(PROMPTS[:3], Sampling(max_new_tokens=8))
    assert [c.text.strip() for c in outs] == [c.text.strip() for c in local]
    # transformers serve rejects response_format: the engine learns it, falls back to prompt + validation,
    # and reports honestly whether the reply matched (a random model's reply will not)
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    c = eng.generate([ChatRequest([{"role": "user", "content": "give a"}], json_schema=schema)],
                     Sampling(max_new_tokens=8))[0]
    assert eng.supports_response_format is False
    assert c.extra.get("constrained") is False
    assert (c.error is None) == (c.parsed is not None and isinstance(c.parsed, dict) and "a" in c.parsed)
