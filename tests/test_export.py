"""`export_model` (tools/export.py): merge, shell-safe `vllm serve` commands, confinement of the base model and the
output folder, and the parity check that serves the export through vLLM.

Fast tests use a tiny model and real PEFT adapters; the `real` ones serve the bundled model's real ticket run
(the shared `ticket_sft_run`) through vLLM: parity passes for it, and catches a planted template mismatch and a
missing adapter."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from runtime.engines import Completion
from tools import call_tool


def make_adapter(base: Path, where: Path) -> Path:
    """A real PEFT LoRA adapter on `base` whose weights are not zero (so merging changes the model)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(where)
    AutoTokenizer.from_pretrained(base).save_pretrained(where)
    return where


@pytest.fixture
def tiny_in_ws(tiny_model_dir, workspace) -> Path:
    """The tiny model inside this test's workspace (models are read from the workspace or the models dir)."""
    return Path(shutil.copytree(tiny_model_dir, workspace / "tiny"))


@pytest.fixture
def adapter(tiny_in_ws, workspace) -> Path:
    return make_adapter(tiny_in_ws, workspace / "adapter")


@pytest.fixture(autouse=True)
def no_vllm_for_fast_tests(request, monkeypatch, tmp_path):
    """Fast tests run without a vLLM runtime (parity is then `skipped`); the real ones serve through vLLM."""
    from runtime.settings import reset_settings

    if request.node.get_closest_marker("real") is None:
        monkeypatch.setenv("FTPILOT_VLLM_PYTHON", str(tmp_path / "no-such-python"))
        reset_settings()


def export(**args):
    return call_tool("export_model", args)


# --- fast ---------------------------------------------------------------------------------------------------

def test_export_of_a_run_merges_into_its_run_dir_and_prints_vllm_commands(tiny_in_ws, workspace):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from runtime.samples import ticket_records, write_split
    from tools.registry import get_tool

    assert get_tool("export_model").module == "tools.export"
    write_split(workspace, ticket_records(24, seed=4), 16)
    run = call_tool("train_sft", {"model": str(tiny_in_ws), "train_path": "train.jsonl", "eval_path": "eval.jsonl",
                                  "max_steps": 2, "batch_size": 4, "learning_rate": 5e-3, "precision": "fp32",
                                  "wait": True})
    assert run.ok and run.output["status"] == "succeeded", run
    res = export(job_id=run.output["job_id"], name="tickets")
    assert res.ok, res.error
    out = res.output
    assert out["merged_dir"] == str(Path(run.output["run_dir"]) / "merged")  # the run's own folder in the data dir
    assert out["serve_adapter"].endswith(f"--enable-lora --lora-modules tickets={run.output['adapter_path']}")
    assert out["serve_merged"] == f"vllm serve {out['merged_dir']}"
    assert out["parity"]["verdict"] == "skipped" and out["evaluate_candidate"]["engine"] == f"vllm:{out['merged_dir']}"
    merged = AutoModelForCausalLM.from_pretrained(out["merged_dir"])
    base = AutoModelForCausalLM.from_pretrained(tiny_in_ws)
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_in_ws),
                                             run.output["adapter_path"])
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (merged, with_adapter, base))
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter changed something, and the merge kept it
    again = export(job_id=run.output["job_id"])
    assert not again.ok and again.error["code"] == "output_exists"  # a second export never replaces silently
    assert not call_tool("export_model", {}).ok


def test_the_contract_is_kept_and_only_extended():
    """Scripts call export_model: its name, cost, arguments and output fields of before the move stay (as they
    were, defaults included); parity and the evaluate candidate are added."""
    from tools.registry import get_tool

    t = get_tool("export_model")
    assert (t.module, t.cost) == ("tools.export", "cpu_job")
    inp, out = t.input_model.model_fields, t.output_model.model_fields
    assert {k: inp[k].default for k in ("adapter_path", "job_id", "out_dir", "name")} == {
        "adapter_path": None, "job_id": None, "out_dir": None, "name": "ftpilot-adapter"}
    assert {"merged_dir", "adapter_path", "base_model", "size_mb", "serve_adapter", "serve_merged"} <= set(out)
    assert {"overwrite", "parity", "eval_path", "parity_prompts", "parity_max_tokens"} <= set(inp)
    assert {"parity", "evaluate_candidate"} <= set(out)


def test_printed_commands_are_shell_quoted(tiny_in_ws, workspace, tmp_path):
    """issue 8: `$(...)` in a name or path must reach vLLM as text, never run as shell."""
    folder = make_adapter(tiny_in_ws, workspace / "runs $(touch PWNED_PATH) x" / "adapter")
    name = "t$(touch PWNED_NAME);`touch PWNED_TICK`"
    res = export(adapter_path=str(folder), name=name, out_dir="merged 'it'")
    assert res.ok, res.error
    out = res.output
    assert shlex.split(out["serve_adapter"]) == ["vllm", "serve", str(tiny_in_ws.resolve()), "--enable-lora",
                                                 "--lora-modules", f"{name}={folder.resolve()}"]
    assert shlex.split(out["serve_merged"]) == ["vllm", "serve", str(workspace / "merged 'it'")]
    for cmd in (out["serve_adapter"], out["serve_merged"]):  # run them with printf in vllm's place
        shown = subprocess.run(["bash", "-c", cmd.replace("vllm serve", "printf '%s\\n'", 1)], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout.splitlines()
        assert shown == shlex.split(cmd)[2:]
    assert not list(tmp_path.glob("PWNED*")) and not list(workspace.glob("**/PWNED*"))


def test_a_base_model_outside_the_workspace_is_refused(tiny_model_dir, workspace, tmp_path, monkeypatch):
    """issue 8: the base path inside an adapter's config follows the workspace/models rule."""
    from runtime.settings import reset_settings

    outside = Path(shutil.copytree(tiny_model_dir, tmp_path / "elsewhere" / "tiny"))
    folder = make_adapter(outside, workspace / "adapter")
    res = export(adapter_path=str(folder), out_dir="merged")
    assert not res.ok and res.error["code"] == "outside_workspace", res
    assert str(outside) in res.error["message"] and not (workspace / "merged").exists()
    # the models dir is readable (it holds the bundled model), so the same base there is fine
    models = tmp_path / "models"
    monkeypatch.setenv("FTPILOT_MODELS_DIR", str(models))
    reset_settings()
    in_models = Path(shutil.copytree(tiny_model_dir, models / "tiny"))
    ok = export(adapter_path=str(make_adapter(in_models, workspace / "adapter2")), out_dir="merged")
    assert ok.ok, ok.error
    assert ok.output["base_model"] == str(in_models)


def test_out_dir_rules(adapter, workspace):
    from runtime.settings import get_settings
    from tools.registry import get_tool

    (workspace / "full").mkdir()
    (workspace / "full" / "keep.txt").write_text("mine")
    res = export(adapter_path=str(adapter), out_dir="full")
    assert not res.ok and res.error["code"] == "output_exists"
    assert (workspace / "full" / "keep.txt").read_text() == "mine"
    assert get_tool("export_model").cost_for({"adapter_path": "a", "overwrite": True}) == "destructive"
    ok = export(adapter_path=str(adapter), out_dir="full", overwrite=True)
    assert ok.ok, ok.error
    assert not (workspace / "full" / "keep.txt").exists() and (workspace / "full" / "config.json").exists()
    (workspace / "empty").mkdir()
    assert export(adapter_path=str(adapter), out_dir="empty").ok  # an empty folder is fine
    for out_dir, code in ((str(adapter), "output_is_input"), (str(adapter / "sub"), "output_is_input"),
                          (str(workspace), "output_is_input"),
                          (str(get_settings().data_dir / "models" / "x"), "output_in_data_dir"),
                          (str(get_settings().data_dir / "runs"), "output_in_data_dir"),
                          ("full/config.json/x", "bad_output_path"), ("full/config.json", "bad_output_path")):
        res = export(adapter_path=str(adapter), out_dir=out_dir, overwrite=True)
        assert not res.ok and res.error["code"] == code, (out_dir, res)
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    res = export(adapter_path=str(adapter), out_dir="/tmp/ftpilot-export-outside")
    assert not res.ok and res.error["code"] == "outside_workspace"


def test_a_failed_merge_leaves_nothing_behind(adapter, workspace):
    (adapter / "tokenizer_config.json").write_text("{not json")  # fails after the weights were written
    res = export(adapter_path=str(adapter), out_dir="merged")
    assert not res.ok and "Traceback" not in json.dumps(res.error)
    assert not (workspace / "merged").exists() and not list(workspace.glob(".merged*"))


def test_parity_is_skipped_clearly_without_vllm(adapter, workspace):
    res = export(adapter_path=str(adapter), out_dir="merged")
    assert res.ok, res.error
    p = res.output["parity"]
    assert p["verdict"] == "skipped" and "make vllm" in p["message"]


def comps(texts, finish="stop", ids=None):
    return [Completion(text=t, prompt_tokens=3, completion_tokens=2, latency_s=0.1, finish_reason=finish,
                       extra={"prompt_token_ids": ids[i] if ids else [1, 2, i]}) for i, t in enumerate(texts)]


def test_the_parity_verdict_flags_what_matters_and_tolerates_drift():
    from tools.export import compare

    n = 8
    msgs = [[{"role": "user", "content": f"ticket {i}"}] for i in range(n)]
    refs = ["billing", "bug", "account", "billing", "bug", "account", "billing", "bug"]
    ids = [[1, 2, i] for i in range(n)]
    adapted = comps(refs)
    plain = comps([f"Thank you for ticket {i}, we will look into it." for i in range(n)])
    drift = comps(refs[:6] + ["billing.", "bug issue"])   # numerics: two answers differ a little
    ok = compare(msgs, refs, ids, adapted, plain, drift, 16)
    assert ok["verdict"] == "pass" and ok["problems"] == [] and ok["identical"] == 6, ok
    assert ok["first_divergence"][0]["prompt_index"] == 6 and ok["terminated"]["served"] == 8

    cases = {
        "template_mismatch": comps(refs, ids=[[9, 9, i] for i in range(n)]),
        "no_longer_stops": comps(refs, finish="length"),
        "adapter_missing": comps([c.text for c in plain]),
        "score_drop": comps(["account", "billing", "bug"] * 2 + ["account", "billing"]),
    }
    for problem, served in cases.items():
        r = compare(msgs, refs, ids, adapted, plain, served, 16)
        assert r["verdict"] == "flagged" and problem in r["problems"] and "FLAGGED" in r["message"], (problem, r)
    # without reference answers there is no score check, the rest still holds
    assert compare(msgs, None, ids, adapted, plain, drift, 16)["score"] is None


# --- real: the bundled model's ticket run, served through vLLM ----------------------------------------------

@pytest.fixture
def ticket_out(in_ticket_workspace):
    """A fresh export folder in the ticket task's workspace, removed afterwards."""
    out = in_ticket_workspace / f"export-{uuid.uuid4().hex[:8]}"
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.real
def test_export_parity_passes_for_a_real_run(ticket_sft_run, ticket_out, served):
    res = call_tool("export_model", {"adapter_path": ticket_sft_run["adapter_path"], "out_dir": str(ticket_out),
                                     "eval_path": ticket_sft_run["eval_path"], "parity_max_tokens": 16})
    assert res.ok, res.error
    p = res.output["parity"]
    print("parity (merged):", json.dumps(p, indent=1))
    assert p["verdict"] == "pass", p["message"]
    assert p["mode"] == "merged" and p["n"] == 8 and p["prompt_tokens_match"] == 8
    assert p["terminated"]["served"] >= 7 and p["adapter_check"]["changed_by_adapter"] >= 4
    assert p["served_dtype"] == p["reference_dtype"] and p["config_diff"] == {}
    from runtime import serving

    assert serving.status().model_path == served.model_path  # the app's server was left as it was
    assert not list((Path(served.log_path).parent / "scratch").glob("*"))  # the scratch server is gone


@pytest.mark.real
def test_export_parity_through_the_running_server_with_the_adapter(ticket_sft_run, ticket_out, served):
    res = call_tool("export_model", {"adapter_path": ticket_sft_run["adapter_path"], "out_dir": str(ticket_out),
                                     "eval_path": ticket_sft_run["eval_path"], "parity": "adapter",
                                     "parity_max_tokens": 16})
    assert res.ok, res.error
    p = res.output["parity"]
    print("parity (adapter):", json.dumps(p, indent=1))
    assert p["verdict"] == "pass" and p["server_start_s"] == 0.0, p["message"]
    # evaluate scores the served export through the endpoint, with the candidate export_model printed
    cand = res.output["evaluate_candidate"]
    ev = call_tool("evaluate", {"eval_path": ticket_sft_run["eval_path"], "limit": 16, "metrics": ["exact_match"],
                                "candidates": [{**cand, "name": "served"},
                                               {"model": "default", "adapter": cand["adapter"], "name": "in-process"}]})
    assert ev.ok, ev.error
    em = {r["name"]: r["metrics"]["exact_match"]["value"] for r in ev.output["results"]}
    assert em["served"] >= em["in-process"] - 0.2 and em["served"] >= 0.5, em
    assert ev.output["results"][0]["engine"]["backend"] == "vllm"


@pytest.mark.real
def test_parity_catches_a_missing_adapter(ticket_sft_run, served, in_ticket_workspace):
    """An "export" that is really the base model (the adapter got lost) is flagged."""
    from tools.export import check_parity

    p = check_parity(Path(ticket_sft_run["adapter_path"]), served.model_path, Path(served.model_path), mode="merged",
                     eval_path=ticket_sft_run["eval_path"], n=8, max_new_tokens=16)
    assert p["verdict"] == "flagged" and "adapter_missing" in p["problems"], p["message"]


@pytest.mark.real
def test_parity_catches_a_planted_template_mismatch(ticket_sft_run, ticket_out, served):
    from tools.export import check_parity

    res = call_tool("export_model", {"adapter_path": ticket_sft_run["adapter_path"], "out_dir": str(ticket_out),
                                     "parity": "off"})
    assert res.ok, res.error
    template = ticket_out / "chat_template.jinja"  # transformers 5 saves the template next to tokenizer_config
    assert template.exists()
    template.write_text("{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n{% endfor %}"
                        "{% if add_generation_prompt %}Assistant:{% endif %}")
    p = check_parity(Path(ticket_sft_run["adapter_path"]), res.output["base_model"], ticket_out, mode="merged",
                     eval_path=ticket_sft_run["eval_path"], n=8, max_new_tokens=16)
    print("parity (planted template):", json.dumps(p, indent=1))
    assert p["verdict"] == "flagged" and "template_mismatch" in p["problems"], p
    assert p["prompt_tokens_match"] == 0 and "chat_template" in p["config_diff"]
    assert "chat template" in p["message"]
