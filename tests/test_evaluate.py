"""Evaluation: metrics and bootstrap CIs on known inputs; a tiny-model end-to-end report through the tool."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tools import _evalcore as ec


def test_normalize_and_exact_match_rules():
    assert ec.normalize("  The Billing. ") == "billing"
    assert ec.normalize("Shipping!!") == ec.normalize("shipping")
    assert ec.normalize("an apple a day") == "apple day"


def test_label_set_detection_and_extraction():
    refs = ["billing", "technical", "shipping"] * 5
    assert ec.label_set(refs) == ["billing", "shipping", "technical"]
    assert ec.label_set([f"answer number {i}" for i in range(15)]) is None
    labels = ["billing", "shipping", "technical"]
    assert ec.extract_label("Billing.", labels) == "billing"
    assert ec.extract_label("I think this is technical, not billing", labels) == "technical"
    assert ec.extract_label("no idea", labels) is None


def test_rouge_l_known_values():
    assert ec.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert ec.rouge_l("cat sat", "dog ran") == 0.0
    # pred: [cat, sat, mat], ref: [cat, on, mat] -> LCS 2 -> P = R = 2/3 -> F = 2/3
    assert ec.rouge_l("cat sat mat", "cat on mat") == pytest.approx(2 / 3)


def test_macro_f1_known_value():
    ref = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "b"]
    # a: tp1 fp0 fn1 -> 2/3 ; b: tp2 fp1 fn0 -> 4/5 ; macro = (2/3 + 4/5) / 2
    assert ec.macro_f1(pred, ref, ["a", "b"]) == pytest.approx((2 / 3 + 0.8) / 2)


def test_bootstrap_ci_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = ec.mean_metric("x", list(rng.integers(0, 2, 40).astype(float)))
    big = ec.mean_metric("x", list(rng.integers(0, 2, 1000).astype(float)))
    s, b = ec.summarize(small), ec.summarize(big)
    assert s["ci95"][0] <= s["value"] <= s["ci95"][1]
    assert (b["ci95"][1] - b["ci95"][0]) < (s["ci95"][1] - s["ci95"][0]) / 3
    # a binomial p=0.5, n=1000: the 95% interval half-width is about 1.96*sqrt(.25/1000) = 0.031
    assert (b["ci95"][1] - b["ci95"][0]) / 2 == pytest.approx(0.031, abs=0.006)
    const = ec.summarize(ec.mean_metric("c", [1.0] * 30))
    assert const["ci95"] == [1.0, 1.0]


def test_paired_delta_sees_a_consistent_gain_that_unpaired_noise_would_hide():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2, 60).astype(float)
    better = base.copy()
    flip = np.where(base == 0)[0][:8]  # candidate fixes 8 items, breaks none
    better[flip] = 1.0
    d = ec.paired_delta(ec.mean_metric("a", list(base)), ec.mean_metric("b", list(better)))
    assert d["delta"] == pytest.approx(8 / 60, abs=1e-4)
    assert d["excludes_zero"] and d["ci95"][0] > 0
    same = ec.paired_delta(ec.mean_metric("a", list(base)), ec.mean_metric("b", list(base)))
    assert same["delta"] == 0 and not same["excludes_zero"]


def test_few_shot_selection_covers_every_label():
    rows = [ec.Example([{"role": "user", "content": f"q{i}"}], lab, i)
            for i, lab in enumerate(["billing", "technical", "shipping"] * 4)]
    shots = ec.select_shots(rows, 3, seed=0)
    assert sorted(s.reference for s in shots) == ["billing", "shipping", "technical"]
    msgs = ec.build_messages(ec.Example([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                        "x", 0), shots=shots)
    assert msgs[0] == {"role": "system", "content": "S"}
    assert [m["role"] for m in msgs[1:]] == ["user", "assistant"] * 3 + ["user"]
    assert msgs[-1]["content"] == "Q"


def test_evaluate_tool_end_to_end_on_tiny_model(tiny_model_dir, workspace):
    from runtime.samples import ticket_records, write_split
    from runtime.store import Evaluation, session
    from tools import call_tool

    write_split(workspace, ticket_records(36, seed=1), 24)
    # a fake run dir with a metrics JSONL next to a (real, tiny) adapter: its loss curve must be plotted
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = workspace / "run1"
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                          LoraConfig(r=2, target_modules=["q_proj"]))
    peft.save_pretrained(run / "adapter")
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 3.0 / s}) for s in range(1, 6)))

    res = call_tool("evaluate", {
        "eval_path": "eval.jsonl", "train_path": "train.jsonl",
        "candidates": [{"model": str(tiny_model_dir), "name": "base"},
                       {"model": str(tiny_model_dir), "few_shot": 3, "name": "3shot"},
                       {"model": str(tiny_model_dir), "adapter": "run1/adapter", "name": "lora"}],
        "metrics": ["exact_match", "accuracy", "f1", "rouge_l", "json_valid", "perplexity"],
        "max_new_tokens": 4, "bootstrap": 200})
    assert res.ok, res.error
    out = res.output
    assert out["n"] == 12 and [r["name"] for r in out["results"]] == ["base", "3shot", "lora"]
    for r in out["results"]:
        for k in ("exact_match", "accuracy", "f1", "rouge_l", "json_valid", "perplexity", "eval_loss"):
            m = r["metrics"][k]
            assert m["n"] == 12 and m["ci95"][0] <= m["value"] <= m["ci95"][1], (k, m)
        assert r["latency_s"]["p50"] > 0 and r["tokens_per_s"] > 0
        # eval_loss and perplexity agree
        assert r["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(r["metrics"]["eval_loss"]["value"]),
                                                                    rel=1e-3)
    # a random tiny model's loss on the references is near log(vocab) without demonstrations
    assert out["results"][0]["metrics"]["eval_loss"]["value"] > 8
    assert [c["candidate"] for c in out["comparisons"]] == ["3shot", "lora"]
    assert set(out["comparisons"][0]["metrics"]) >= {"exact_match", "f1", "perplexity"}
    names = {Path(p).name for p in out["plots"]}
    assert names == {"metrics.png", "loss_curves.png"}
    for p in out["plots"]:
        assert Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = Path(out["report_path"]).read_text()
    assert "| base |" in report and "paired bootstrap" in report and "loss_curves.png" in report
    assert json.loads(Path(out["json_path"]).read_text())["n"] == 12
    preds = Path(out["predictions_paths"]["lora"]).read_text().splitlines()
    assert len(preds) == 12
    with session() as s:
        row = s.get(Evaluation, out["evaluation_id"])
    assert row.results["kind"] == "evaluation" and row.dataset_sha256 and row.report_path == out["report_path"]


def test_evaluate_bad_input_is_a_value(workspace):
    from tools import call_tool

    (workspace / "e.jsonl").write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    res = call_tool("evaluate", {"eval_path": "e.jsonl", "candidates": [{"model": "default"}]})
    assert not res.ok and res.error["code"] == "bad_input"
    res = call_tool("evaluate", {"eval_path": "missing.jsonl", "candidates": [{}]})
    assert not res.ok and res.error["code"] == "not_found"
    res = call_tool("evaluate", {"eval_path": "e.jsonl", "candidates": []})
    assert not res.ok and res.error["code"] == "validation_error"


def test_recommend_strategy_on_tiny_model_names_its_numbers(tiny_model_dir, workspace):
    """A random tiny model cannot do the task (gap ~0.9) but 40 examples are too few: collect data first,
    and say how many are missing. The baseline is stored and reused on the second call."""
    from runtime.samples import ticket_records, write_split
    from tools import call_tool

    write_split(workspace, ticket_records(52, seed=2), 40)
    args = {"task": "classify tickets", "train_path": "train.jsonl", "eval_path": "eval.jsonl",
            "model": str(tiny_model_dir), "latency_budget_ms": 50, "monthly_requests": 2_000_000,
            "budget_constrained": True, "hourly_cost_usd": 1.0}
    res = call_tool("recommend_strategy", args)
    assert res.ok, res.error
    o = res.output
    assert o["recommendation"] == "collect_data", o["summary"]
    rules = {r["rule"]: r for r in o["reasons"]}
    assert rules["quality gap vs prompting"]["favours"] == "fine_tune"
    assert rules["quality gap vs prompting"]["value"] >= 0.2
    assert rules["labeled examples"]["favours"] == "more_data" and rules["labeled examples"]["value"] <= 40
    assert rules["latency budget"]["favours"] == "fine_tune" and "ms" in rules["latency budget"]["detail"]
    assert rules["volume and cost"]["favours"] == "fine_tune"
    assert any("more good labeled examples" in m for m in o["missing_data"])
    assert o["estimate"] is not None and ("training_minutes" in o["estimate"] or "error" in o["estimate"])
    assert not o["baseline"]["reused"]
    again = call_tool("recommend_strategy", {**args, "latency_budget_ms": None})
    assert again.ok and again.output["baseline"]["reused"]
    assert again.output["baseline"]["few_shot_score"] == o["baseline"]["few_shot_score"]

    # after "training", evaluate on the same eval file restates the recommendation's predicted gap
    ev = call_tool("evaluate", {"eval_path": "eval.jsonl", "train_path": "train.jsonl", "compare": "all_pairs",
                                "candidates": [{"model": str(tiny_model_dir), "name": "a"},
                                               {"model": str(tiny_model_dir), "few_shot": 2, "name": "b"},
                                               {"model": str(tiny_model_dir), "few_shot": 1, "name": "c"}],
                                "metrics": ["exact_match", "accuracy"], "max_new_tokens": 2, "bootstrap": 100})
    assert ev.ok, ev.error
    pairs = [(c["candidate"], c["baseline"]) for c in ev.output["comparisons"]]
    assert pairs == [("b", "a"), ("c", "a"), ("c", "b")]
    pc = ev.output["prediction_check"]
    assert pc["recommendation"] == "collect_data" and pc["metric"] == "accuracy"
    assert pc["predicted_gap"] == rules["quality gap vs prompting"]["value"]
    assert pc["best_candidate"] in ("a", "b", "c") and "measured_gain_over_prompting" in pc
    assert "Against the recommendation" in Path(ev.output["report_path"]).read_text()



def test_pairwise_judge_both_orders_with_ties(tiny_model_dir, workspace):
    from runtime.samples import ticket_records, write_split
    from tools import call_tool

    write_split(workspace, ticket_records(30, seed=4), 24)
    res = call_tool("evaluate", {
        "eval_path": "eval.jsonl", "train_path": "train.jsonl", "judge": f"hf:{tiny_model_dir}",
        "candidates": [{"model": str(tiny_model_dir), "name": "a"},
                       {"model": str(tiny_model_dir), "few_shot": 2, "name": "b"}],
        "metrics": ["exact_match", "judge"], "max_new_tokens": 3, "bootstrap": 200})
    assert res.ok, res.error
    j = res.output["comparisons"][0]["judge"]
    assert j["n"] == 6 and j["invalid_judgements"] == 0  # grammar-constrained verdicts always parse
    assert j["win_rate"] + j["loss_rate"] + j["tie_rate"] == pytest.approx(1.0)
    assert j["score"] == pytest.approx(j["win_rate"] + j["tie_rate"] / 2, abs=1e-3)
    assert j["prompt"].startswith("prompts/judge_pairwise.md@")
    assert "Pairwise judge" in Path(res.output["report_path"]).read_text()
