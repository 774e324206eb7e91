"""The brain with the model running: a tiny `ftpilot brain build` end to end, the shipped router adapter against
its own report, and plain requests through `ftpilot ask` and the agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from pydantic import TypeAdapter

from assistant.agent import Agent, AssistantMessage, ToolFinished, reject_all

pytestmark = pytest.mark.real


def test_tiny_brain_build_end_to_end(tiny_model_dir, workspace):
    """Every step of the pipeline runs for real on a tiny model (few rows, two steps): data, audit, clean,
    split, train_sft, install, evaluation of three routers, report, data card and reproduce.sh."""
    from assistant.brain_build.pipeline import BuildConfig, build
    from runtime.paths import sha256_file
    from tools.registry import all_tools

    dest = workspace / "router"
    report = build(BuildConfig(model=str(tiny_model_dir), per_family=1, per_held_family=1, max_steps=2, val_rows=4,
                               outside_limit=6, latency_rows=1, install_dir=str(dest)), say=lambda _m: None)
    for name in ("adapter_model.safetensors", "adapter_config.json", "report.json", "report.md", "README.md",
                 "reproduce.sh", "lexical.json", "lexical.safetensors"):
        assert (dest / name).is_file(), name
    assert json.loads((dest / "report.json").read_text())["adapter"]["sha256"] == \
        sha256_file(dest / "adapter_model.safetensors") == report["adapter"]["sha256"]
    prep = report["prepare"]
    assert prep["audit"]["rows"] == report["data"]["rows"]
    assert prep["split"]["train_rows"] + prep["split"]["eval_rows"] == prep["clean"]["output_rows"]
    assert report["train"]["global_step"] == 2
    held = report["sets"]["heldout_families"]
    assert set(held["routers"]) == {"regex", "adapter", "base", "lexical", "brain"}
    assert report["lexical"]["classes"] >= 20 and report["steps_s"].keys() >= {"lexical", "train"}
    assert held["routers"]["adapter"]["n"] == report["data"]["heldout_rows"]
    assert report["sets"]["outside"]["routers"]["adapter"]["n"] == 6
    assert "adapter-regex" in held["deltas"] and report["perplexity"]["results"].keys() == {"base", "router"}
    tools = all_tools()
    for p in report["predictions"]["heldout_families"]:  # an untrained adapter still writes only valid calls
        name, args = p["predicted"]["name"], p["predicted"]["arguments"]
        fields = tools[name].input_model.model_fields if name in tools else {}
        assert set(args) <= set(fields)
        for k, v in args.items():
            TypeAdapter(fields[k].annotation).validate_python(v)
    assert "ftpilot brain build" in report["reproduce"] and "--max-steps 2" in (dest / "reproduce.sh").read_text()
    assert "| held-out phrasing families | adapter |" in (dest / "report.md").read_text()


def test_shipped_adapter_matches_its_report(bundled_model_dir):
    """The committed adapter is the one its report measured: same bytes, same decisions on recorded requests,
    and the report's accuracies follow from its recorded predictions."""
    from assistant.brain_build.evaluation import correct, recorded_calls
    from assistant.brain_build.pipeline import score_set
    from assistant.brains.lexical import LexicalRouter
    from assistant.brains.router import ROUTER_DIR, Router, decide
    from runtime.paths import sha256_file
    from tools.registry import all_tools

    report = json.loads((ROUTER_DIR / "report.json").read_text())
    assert sha256_file(ROUTER_DIR / "adapter_model.safetensors") == report["adapter"]["sha256"]
    tools = all_tools()
    for set_name, preds in report["predictions"].items():
        cases, recorded, keywords = recorded_calls(preds)
        flags = [correct(c, r, tools) for c, r in zip(cases, recorded)]
        summary = report["sets"][set_name]["routers"]["adapter"]
        assert summary["tool_accuracy"]["value"] == pytest.approx(sum(a for a, _ in flags) / len(flags), abs=1e-4)
        assert summary["exact_call_accuracy"]["value"] == pytest.approx(sum(b for _, b in flags) / len(flags),
                                                                        abs=1e-4)
        sample = cases[:: max(1, len(cases) // 10)]
        again = Router(ROUTER_DIR, tools=tools, label_names=report["data"]["labels"]).route_batch(
            [c.item for c in sample])
        want = [p for p in preds[:: max(1, len(cases) // 10)]]
        assert [(r.name, r.arguments) for r in again] == \
            [(p["predicted"]["name"], p["predicted"]["arguments"]) for p in want]
        lexical = LexicalRouter.load(ROUTER_DIR).route_proba([c.item for c in cases])
        section, _ = score_set(cases, {"adapter": recorded, "regex": keywords}, tools, LexicalRouter.load(ROUTER_DIR))
        assert section["routers"]["lexical"] == report["sets"][set_name]["routers"]["lexical"]
        brain = [decide(r, p, c.item.message, tools) for r, p, c in zip(recorded, lexical, cases)]
        flags = [correct(c, r, tools) for c, r in zip(cases, brain)]
        summary = report["sets"][set_name]["routers"]["brain"]
        assert summary["exact_call_accuracy"]["value"] == pytest.approx(sum(b for _, b in flags) / len(flags),
                                                                        abs=1e-4)
        # the brain as it runs beats the keyword table alone, paired interval above zero
        assert report["sets"][set_name]["deltas"]["brain-regex"]["exact_call_accuracy"]["ci95"][0] > 0


def test_measure_routes_requests_written_elsewhere_with_the_shipped_router(bundled_model_dir, workspace):
    from assistant.brain_build.pipeline import OUTSIDE, measure

    few = workspace / "few.jsonl"
    few.write_text("".join(OUTSIDE.read_text().splitlines(keepends=True)[:4]))
    out = measure(few)
    assert out["n"] == 4 and set(out["routers"]) == {"regex", "adapter", "lexical", "brain"}
    assert 0 <= out["routers"]["brain"]["exact_call_accuracy"]["value"] <= 1 and "brain-regex" in out["deltas"]


def _ask(workspace, *args):
    out = subprocess.run([sys.executable, "-m", "assistant", "ask", *args, "--json"], capture_output=True, text=True,
                         env=os.environ.copy(), timeout=900, cwd=workspace)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_ask_proposes_audit_for_a_plain_request(bundled_model_dir, workspace):
    """The issue's own words: the router picks audit_dataset with the path (not approved here: --yes is absent)."""
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    (workspace / "data").mkdir()
    write_jsonl(workspace / "data" / "train.jsonl", ticket_records(20, seed=0))
    out = _ask(workspace, "look through data/train.jsonl and tell me if anything is wrong")
    assert "router adapter" in out["brain"]
    fin = [e for e in out["events"] if e["type"] == "ToolFinished"]
    assert fin and fin[0]["name"] == "audit_dataset" and fin[0]["arguments"]["path"] == "data/train.jsonl"
    assert fin[0]["result"]["error"]["code"] == "rejected_by_person"


def test_embedded_brain_answers_from_facts_and_never_crashes_on_cut_output(bundled_model_dir, workspace,
                                                                          monkeypatch):
    """"How is the run going?" in a fresh workspace once crashed `ask` (JSON cut at the token cap). Now: a reply
    saying there is no run; questions about ftpilot are answered from the registry; even arguments cut off after
    one token are an error value (the brain then takes the lexical classifier's label), not a traceback."""
    from assistant.brains import router as router_mod
    from assistant.brains.embedded import EmbeddedBrain
    from tools.registry import all_tools

    brain = EmbeddedBrain()
    brain.load()
    assert brain.router is not None and brain.state == "ready"
    events = []
    agent = Agent(brain, emit=events.append, approver=reject_all)
    agent.send("How is the run going?")
    msgs = [e for e in events if isinstance(e, AssistantMessage)]
    assert msgs and "no run in this project" in msgs[-1].content
    assert not [e for e in events if isinstance(e, ToolFinished)]
    events.clear()
    agent.send("what can you do?")
    reply = [e for e in events if isinstance(e, AssistantMessage)][-1].content
    assert all(f"**{name}**" in reply for name in all_tools())
    monkeypatch.setattr(router_mod, "MAX_ARG_TOKENS", 1)
    res = brain.router.route(router_mod.RouteInput.for_message("train on data/a.jsonl for 30 steps"))
    assert res.error and "cut off" in res.error
    events.clear()   # the brain: cut-off arguments make the router unsure, the lexical classifier's label decides
    agent.send("train on data/a.jsonl for 30 steps")
    fin = [e for e in events if isinstance(e, ToolFinished)]
    assert [(f.name, f.arguments.get("train_path")) for f in fin] == [("train_sft", "data/a.jsonl")]
