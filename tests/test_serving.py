"""The managed vLLM server (runtime/serving.py), the vllm/auto engines and `ftpilot serve`.

Fast tests cover state, process handling and URL confinement with real processes but no vLLM; the `real` ones
share one vLLM CPU server for the session (tests/conftest.py `served`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime import serving
from runtime.engines import ChatRequest, Sampling, get_engine, parse_spec
from runtime.errors import FtpilotError

REPO = Path(__file__).resolve().parent.parent
SCHEMA = {"type": "object", "properties": {"tool": {"type": "string", "enum": ["audit_dataset", "train_sft"]},
                                           "path": {"type": "string", "maxLength": 40}},
          "required": ["tool", "path"], "additionalProperties": False}


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def write_state(**state) -> None:
    serving._write_state({"model": "default", "model_path": "/nowhere", "port": 9, "device": "cpu",
                          "dtype": "float32", "adapters": {}, "restarts": 0, **state})


# --- fast: no vLLM needed ----------------------------------------------------------------------------------

def test_status_is_stopped_when_nothing_was_started():
    st = serving.status()
    assert (st.running, st.state, st.url, st.pid) == (False, "stopped", None, None)
    assert st.backend == "vllm" and st.log_path.endswith("serve/server.log")


def test_a_dead_server_is_reported_failed_not_running():
    proc = subprocess.Popen(["true"])
    proc.wait()
    write_state(pid=proc.pid, launched_at=time.time() - 5, phase="ready")
    st = serving.status()
    assert (st.running, st.state) == (False, "failed")
    assert f"process {proc.pid} died" in st.error


def test_recover_restarts_only_once():
    """A server that already got its automatic restart and died again is an error, not a restart loop."""
    write_state(pid=2**22 + 7, launched_at=time.time() - 5, phase="ready", restarts=1)
    with pytest.raises(serving.ServerUnavailable, match="failed again after a restart"):
        serving.recover(timeout_s=5)


def test_stop_kills_the_whole_process_group():
    """vLLM's engine and workers are children in the server's group; stop leaves none of them behind."""
    import psutil

    proc = subprocess.Popen(["sh", "-c", "sleep 300 & sleep 300 & wait"], start_new_session=True)
    time.sleep(0.3)
    write_state(pid=proc.pid, launched_at=time.time() - 1, phase="ready")
    group = serving._processes(serving._read_state())
    assert len(group) == 3  # sh and both sleeps
    st = serving.stop()
    assert (st.running, st.state) == (False, "stopped")
    assert not [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert serving.status().state == "stopped"


def test_no_vllm_runtime_is_a_clear_error(monkeypatch, tmp_path):
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    reset_settings()
    assert serving.available() is False
    with pytest.raises(serving.ServerUnavailable) as e:
        serving._launch("default", "/x", {})
    assert "make vllm" in e.value.hint
    r = cli("serve", "start", env={"FTPILOT_VLLM_PYTHON": str(tmp_path / "no-such-python")})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "server_unavailable"


def test_serve_status_cli_when_stopped():
    r = cli("serve", "status")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["running"] is False and out["state"] == "stopped" and "available" in out


def test_engine_urls_are_loopback_unless_allowed(monkeypatch):
    from runtime.settings import reset_settings

    for url in ("http://192.0.2.1:8000/v1", "https://api.example.invalid/v1", "http://10.0.0.5:8000"):
        with pytest.raises(FtpilotError) as e:
            get_engine(f"openai:{url}#m")
        assert e.value.code == "remote_engine_refused" and "ALLOW_REMOTE_ENGINES" in e.value.hint
    for url in ("http://127.0.0.1:9/v1", "http://localhost:9", "http://[::1]:9/v1", "http://127.0.0.5:9"):
        assert get_engine(f"openai:{url}#m").base_url.endswith("/v1")  # no request made: the model is named
    with pytest.raises(FtpilotError, match="not an http"):
        get_engine("openai:file:///etc/passwd#m")
    monkeypatch.setenv("FTPILOT_ALLOW_REMOTE_ENGINES", "1")
    reset_settings()
    assert get_engine("openai:http://192.0.2.1:8000/v1#m").base_url == "http://192.0.2.1:8000/v1"


def test_evaluate_refuses_a_remote_engine_as_an_error_value(tmp_path):
    """issue 8: `evaluate` sent eval rows to an arbitrary URL. (A `.invalid` name never resolves, so even a
    regression sends nothing anywhere.)"""
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records
    from tools import call_tool

    ws = Path(os.environ["FTPILOT_WORKSPACE_ROOT"])
    write_jsonl(ws / "eval.jsonl", ticket_records(4, seed=0))
    res = call_tool("evaluate", {"eval_path": str(ws / "eval.jsonl"),
                                 "candidates": [{"engine": "openai:http://eval-rows.invalid:8000/v1#m"}]})
    assert not res.ok and res.error["code"] == "remote_engine_refused", res


def test_auto_spec_and_fallback_to_transformers(monkeypatch, tmp_path, tiny_model_dir):
    from runtime.engines.hf import TransformersEngine
    from runtime.settings import reset_settings

    assert parse_spec("auto:default") == {"backend": "auto", "model": "default"}
    assert parse_spec("auto:") == {"backend": "auto", "model": "default"}
    monkeypatch.setenv("FTPILOT_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    reset_settings()
    eng = get_engine(f"auto:{tiny_model_dir}", cache=False)
    assert isinstance(eng, TransformersEngine)
    assert eng.generate(["hi"], Sampling(max_new_tokens=3))[0].completion_tokens == 3


def test_adapter_names_are_stable_and_safe():
    a = serving.adapter_name("/data/runs/abc123/adapter")
    assert a == serving.adapter_name("/data/runs/abc123/adapter") and a.startswith("abc123-adapter-")
    assert a != serving.adapter_name("/data/runs/abc124/adapter")
    assert all(c.isalnum() or c in "-_." for c in serving.adapter_name("/x/$(rm -rf ~)/a b"))


# --- real: one vLLM CPU server for the session -------------------------------------------------------------

@pytest.mark.real
def test_server_serves_the_bundled_model(served, vllm_serve_dir):
    assert served.state == "ready" and served.running
    assert served.url.startswith("http://127.0.0.1:") and served.url.endswith("/v1")
    assert (served.backend, served.device, served.model) == ("vllm", "cpu", "default")
    again = serving.start("default")
    assert again.pid == served.pid  # idempotent: the running server, not a second one
    r = cli("serve", "status", env={"FTPILOT_SERVE_DIR": str(vllm_serve_dir)})
    out = json.loads(r.stdout)
    assert (out["state"], out["pid"], out["url"]) == ("ready", served.pid, served.url)
    import openai

    models = [m.id for m in openai.OpenAI(base_url=served.url, api_key="EMPTY").models.list().data]
    assert "default" in models


@pytest.mark.real
def test_json_schema_requests_decode_to_valid_json(served):
    import jsonschema

    eng = get_engine("vllm:default")
    prompts = ["audit data/train.jsonl", "train on tickets.jsonl", "check my file a.csv", "hello"]
    outs = eng.generate([ChatRequest([{"role": "user", "content": p}], json_schema=SCHEMA) for p in prompts]
                        + ["Say hello."], Sampling(max_new_tokens=96))
    for c in outs[:4]:
        assert c.error is None and c.extra["constrained"] is True and c.finish_reason == "stop", c
        jsonschema.validate(json.loads(c.text), SCHEMA)
    assert outs[4].parsed is None and outs[4].text and outs[4].finish_reason in ("stop", "length")


@pytest.mark.real
def test_an_adapter_from_a_real_run_is_served_and_changes_the_output(served, ticket_sft_run, in_ticket_workspace):
    rows = [json.loads(line) for line in Path(ticket_sft_run["eval_path"]).read_text().splitlines()[:8]]
    prompts = [[m for m in r["messages"] if m["role"] != "assistant"] for r in rows]
    answers = [r["messages"][-1]["content"] for r in rows]
    adapter = ticket_sft_run["adapter_path"]
    eng = get_engine("vllm:default")
    s = Sampling(max_new_tokens=16)
    base = eng.generate(prompts, s)
    tuned = eng.generate([ChatRequest(p, adapter=adapter) for p in prompts], s)
    assert all(c.error is None for c in base + tuned)
    name = serving.adapter_name(str(Path(adapter).resolve()))
    assert serving.status().adapters.get(name) == str(Path(adapter).resolve())
    assert [c.text for c in tuned] != [c.text for c in base]
    # the served adapter answers the task like the in-process one does (labels, not bf16-exact text)
    hf = get_engine("transformers:default").generate([ChatRequest(p, adapter=adapter) for p in prompts], s)
    agree = sum(a.text.strip() == b.text.strip() for a, b in zip(tuned, hf))
    right = sum(c.text.strip() == a.strip() for c, a in zip(tuned, answers))
    assert agree >= 6 and right >= sum(c.text.strip() == a.strip() for c, a in zip(base, answers)), (agree, right)


@pytest.mark.real
def test_an_adapter_for_another_base_is_refused(served, tiny_model_dir, workspace):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"]))
    peft.save_pretrained(workspace / "tiny-adapter")
    eng = get_engine("vllm:default")
    with pytest.raises(FtpilotError) as e:
        eng.generate([ChatRequest([{"role": "user", "content": "hi"}], adapter=str(workspace / "tiny-adapter"))])
    assert e.value.code == "adapter_base_mismatch"


@pytest.mark.real
def test_a_killed_server_is_detected_and_restarted(served):
    eng = get_engine("vllm:default")
    old = serving.status()
    group = serving._processes(serving._read_state())
    os.kill(old.pid, signal.SIGKILL)
    time.sleep(1)
    dead = serving.status()
    assert (dead.running, dead.state) == (False, "failed") and "died" in dead.error
    out = eng.generate(["Say hello."], Sampling(max_new_tokens=8))[0]  # the engine brings it back, once
    assert out.error is None and out.text
    now = serving.status()
    assert now.state == "ready" and now.pid != old.pid and now.restarts == 1
    assert not [p for p in group if p.is_running()]  # the old engine/worker processes were reaped
