"""The scripted-call contract: JSON on stdout, non-zero exit on error, and a light start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def ftpilot(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "assistant", *args], capture_output=True, text=True,
                          env=os.environ.copy(), timeout=120, **kw)


def test_tool_list_and_schema_print_json():
    listed = json.loads(ftpilot("tool", "list").stdout)
    names = {t["name"] for t in listed}
    assert "probe_hardware" in names
    schema = json.loads(ftpilot("tool", "schema", "probe_hardware").stdout)
    assert schema["function"]["name"] == "probe_hardware" and schema["cost"] == "instant"


def test_tool_call_success_and_errors_exit_codes(tmp_path):
    ok = ftpilot("tool", "call", "probe_hardware", "--args", "{}")
    assert ok.returncode == 0
    out = json.loads(ok.stdout)
    assert out["device"] in ("cpu", "cuda") and out["cpu_cores"] >= 1
    bad = ftpilot("tool", "call", "probe_hardware", "--args", '{"nope": 1}')
    assert bad.returncode == 2 and json.loads(bad.stdout)["error"]["fields"][0]["loc"] == "nope"
    unknown = ftpilot("tool", "call", "nope_tool", "--args", "{}")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["error"]["code"] == "unknown_tool"
    notjson = ftpilot("tool", "call", "probe_hardware", "--args", "{oops")
    assert notjson.returncode == 2
    f = tmp_path / "args.json"
    f.write_text("{}")
    assert ftpilot("tool", "call", "probe_hardware", "--args-file", str(f)).returncode == 0


def test_startup_imports_no_torch_or_transformers():
    code = ("import sys; from assistant.cli import build_parser; build_parser(); "
            "from tools import all_tools; all_tools(); "
            "heavy = [m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_config_show_reads_env_and_toml(tmp_path, monkeypatch):
    cfg = tmp_path / "custom.toml"
    cfg.write_text('default_model = "my-model"\nbrain = "openai"\n')
    monkeypatch.setenv("FTPILOT_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("FTPILOT_BRAIN", "embedded")  # env beats the file
    shown = json.loads(ftpilot("config", "show").stdout)
    assert shown["default_model"] == "my-model" and shown["brain"] == "embedded"
    assert shown["config_file"] == str(cfg) and shown["database"].startswith("sqlite:///")
