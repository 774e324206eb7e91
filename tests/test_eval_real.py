"""The proofs, on the bundled model (marked real; still run in CI):

1. recommend_strategy says fine-tune for the ticket task, with its measured gap; after the training helper's real
   LoRA run (the shared `ticket_sft_run` fixture), evaluate shows the adapter's exact-match gain over the base model
   and over a 3-shot prompt with paired-bootstrap CIs that exclude zero, and restates the predicted gap.
2. recommend_strategy says keep prompting for a task where 3-shot prompting already reaches the target.
3. generate_synthetic from 10 seeds with the bundled model as teacher yields rows that pass the audit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tools import call_tool

pytestmark = pytest.mark.real


@pytest.fixture
def at(monkeypatch):
    """Point the workspace root at a folder (the session fixtures write outside the per-test workspace)."""
    from runtime.settings import reset_settings

    def go(root):
        monkeypatch.setenv("FTPILOT_WORKSPACE_ROOT", str(root))
        reset_settings()
    return go


def test_adapter_beats_base_and_3shot_and_recommendation_is_restated(ticket_sft_run, bundled_model_dir, at):
    at(ticket_sft_run["root"])
    rec = call_tool("recommend_strategy", {"task": "classify customer support tickets into three queues",
                                           "train_path": ticket_sft_run["train_path"],
                                           "eval_path": ticket_sft_run["eval_path"]})
    assert rec.ok, rec.error
    r = rec.output
    assert r["recommendation"] == "fine_tune", r["summary"]
    gap = next(x for x in r["reasons"] if x["rule"] == "quality gap vs prompting")
    assert gap["favours"] == "fine_tune" and gap["value"] >= 0.2 and "3-shot" in gap["detail"]
    assert r["audit"]["clean_examples"] >= 100
    assert r["estimate"] is not None  # plan_training's estimate, or a clear note that it is unavailable

    adapter = ticket_sft_run["adapter_path"]
    res = call_tool("evaluate", {
        "eval_path": ticket_sft_run["eval_path"], "train_path": ticket_sft_run["train_path"],
        "candidates": [{"model": "default", "name": "base"},
                       {"model": "default", "few_shot": 3, "name": "base+3shot"},
                       {"model": "default", "adapter": adapter, "name": "lora"}],
        "metrics": ["exact_match", "accuracy", "f1"], "compare": "all_pairs"})
    assert res.ok, res.error
    o = res.output
    by = {(c["candidate"], c["baseline"]): c["metrics"]["exact_match"] for c in o["comparisons"]}
    for baseline in ("base", "base+3shot"):
        d = by[("lora", baseline)]
        assert d["delta"] > 0 and d["excludes_zero"] and d["ci95"][0] > 0, (baseline, d)
    pc = o["prediction_check"]
    assert pc and pc["recommendation"] == "fine_tune" and pc["best_candidate"] == "lora"
    assert pc["measured_gain_over_prompting"] > 0
    report = Path(o["report_path"]).read_text()
    assert "Against the recommendation" in report
    assert {Path(p).name for p in o["plots"]} == {"metrics.png", "loss_curves.png"}
    print(json.dumps({"recommend": r["summary"], "exact_match": {x["name"]: x["metrics"]["exact_match"]
                                                                 for x in o["results"]},
                      "lora_vs_3shot": by[("lora", "base+3shot")]}, indent=1))


def copy_task_rows(n: int, seed: int = 0) -> list[dict]:
    """Repeat the quoted word: the bundled model gets it right with 3 demonstrations (measured: 20/20)."""
    words = ("apple river candle mountain piano garden window silver rocket forest tiger pencil castle ocean "
             "bottle yellow button island camera violin orange marble bridge summer lantern").split()
    rng = random.Random(seed)
    return [{"messages": [{"role": "system", "content": "Repeat the quoted word exactly. Answer with the word only."},
                          {"role": "user", "content": f'Word: "{w}"'}, {"role": "assistant", "content": w}]}
            for w in (rng.choice(words) for _ in range(n))]


def test_recommends_prompting_when_few_shot_already_scores(workspace, bundled_model_dir):
    from runtime.outputs import write_jsonl

    rows = copy_task_rows(150)
    write_jsonl(workspace / "train.jsonl", rows[:120])
    write_jsonl(workspace / "eval.jsonl", rows[120:])
    res = call_tool("recommend_strategy", {"task": "repeat the quoted word", "train_path": "train.jsonl",
                                           "eval_path": "eval.jsonl", "metric": "exact_match"})
    assert res.ok, res.error
    o = res.output
    assert o["recommendation"] == "prompt", o["summary"]
    assert o["baseline"]["few_shot_score"]["value"] >= 0.9
    gap = next(x for x in o["reasons"] if x["rule"] == "quality gap vs prompting")
    assert gap["favours"] == "prompt" and gap["value"] < 0.2
    assert o["estimate"] is None


def test_synthetic_from_10_seeds_passes_the_audit(workspace, bundled_model_dir):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    seeds = write_jsonl(workspace / "seeds.jsonl", ticket_records(10, seed=5))
    before = seeds.read_bytes()
    res = call_tool("generate_synthetic", {"seeds_path": "seeds.jsonl", "n": 6, "max_new_tokens": 96})
    assert res.ok, res.error
    o = res.output
    assert o["rows_written"] >= 4, o["counts"]
    assert o["audit"]["ok"] and o["audit"]["passed"], o["audit"]
    assert o["counts"]["generated"] >= o["counts"]["schema_valid"] >= o["counts"]["not_duplicate"] >= o["rows_written"]
    assert seeds.read_bytes() == before
    rows = [json.loads(x) for x in open(o["out_path"]) if x.strip()]
    seed_texts = {r["messages"][1]["content"] for r in ticket_records(10, seed=5)}
    assert all(r["messages"][1]["content"] not in seed_texts for r in rows)
    assert all(r["provenance"]["teacher"]["model"] == "default" for r in rows)
    print(json.dumps(o["counts"]))


def test_evaluate_runs_on_the_managed_vllm_server_with_label_decoding(served, ticket_task, in_ticket_workspace):
    """evaluate's default engine is the managed vLLM server where it runs: answers constrained to the labels
    (structured outputs), perplexity still from the transformers engine, progress to subscribers."""
    from runtime import progress

    seen: list = []
    with progress.subscribed(seen.append):
        res = call_tool("evaluate", {
            "eval_path": ticket_task["eval_path"], "train_path": ticket_task["train_path"], "sample": 30,
            "candidates": [{"model": "default", "name": "base"}, {"model": "default", "few_shot": 3, "name": "3shot"}],
            "metrics": ["exact_match", "accuracy", "f1", "perplexity"], "bootstrap": 200})
    assert res.ok, res.error
    o = res.output
    assert o["decoding"] == {"mode": "labels", "labels": 3} and seen[-1].done == 60
    for r in o["results"]:
        assert r["engine"]["backend"] == "vllm" and r["failed_requests"] == 0, r
        preds = {json.loads(x)["prediction"] for x in open(o["predictions_paths"][r["name"]])}
        assert preds <= {"billing", "technical", "shipping"}, preds
        assert r["metrics"]["perplexity"]["value"] > 1
    print(json.dumps({r["name"]: {"rows_per_s": r["rows_per_s"], "accuracy": r["metrics"]["accuracy"]}
                      for r in o["results"]}))
