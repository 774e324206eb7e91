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


# --- failed requests, decoding, progress, sampling (issues 8 and 10) -------------------------------------

def _dead_url() -> str:
    """A loopback URL where nothing listens: every request to it fails."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"openai:http://127.0.0.1:{port}/v1#m"


def test_an_engine_that_fails_every_request_is_an_error_not_a_score(tiny_model_dir, workspace):
    """Issue 8: a dead engine once scored exact_match 0.0 [0, 0]."""
    from runtime.samples import ticket_records, write_split
    from tools import call_tool

    write_split(workspace, ticket_records(30, seed=3), 24)
    dead = {"model": str(tiny_model_dir), "engine": _dead_url(), "name": "dead"}
    res = call_tool("evaluate", {"eval_path": "eval.jsonl", "candidates": [dead], "bootstrap": 100})
    assert not res.ok and res.error["code"] == "engine_failed", res
    assert "6 of 6 requests failed" in res.error["message"]

    res = call_tool("evaluate", {"eval_path": "eval.jsonl", "bootstrap": 100, "max_new_tokens": 3,
                                 "candidates": [{"model": str(tiny_model_dir), "name": "base"}, dead]})
    assert res.ok, res.error
    by = {r["name"]: r for r in res.output["results"]}
    assert by["base"]["status"] == "ok" and by["base"]["failed_requests"] == 0 and by["base"]["metrics"]
    assert by["dead"]["status"] == "failed" and by["dead"]["failed_requests"] == 6
    assert by["dead"]["metrics"] == {} and "requests failed" in by["dead"]["error"]
    assert res.output["comparisons"] == []  # nothing is compared with a candidate that has no score
    assert any(n.startswith("dead: no score") for n in res.output["notes"])
    assert "| dead | no score" in Path(res.output["report_path"]).read_text()


def test_label_answers_are_constrained_to_the_labels_and_progress_is_reported(tiny_model_dir, workspace, capsys):
    """Issue 10: a random model's answers are still labels (constrained decoding), the token budget comes from
    the labels, and progress reaches subscribers (the app) and stderr."""
    from runtime import progress
    from runtime.samples import ticket_records, write_split
    from tools import call_tool

    write_split(workspace, ticket_records(40, seed=6), 24)
    seen: list = []
    with progress.subscribed(seen.append):
        res = call_tool("evaluate", {"eval_path": "eval.jsonl", "train_path": "train.jsonl", "batch_size": 4,
                                     "candidates": [{"model": str(tiny_model_dir), "name": "base"},
                                                    {"model": str(tiny_model_dir), "few_shot": 2, "name": "2shot"}],
                                     "metrics": ["exact_match", "accuracy", "f1"], "bootstrap": 100})
    assert res.ok, res.error
    o = res.output
    assert o["decoding"] == {"mode": "labels", "labels": 3}
    for r in o["results"]:
        assert r["decoding"]["mode"] == "labels" and r["max_new_tokens"] <= 12
        preds = [json.loads(x)["prediction"] for x in open(o["predictions_paths"][r["name"]])]
        assert len(preds) == 16 and set(preds) <= {"billing", "technical", "shipping"}, preds
        # an answer that is a label scores the same as exact match and accuracy
        assert r["metrics"]["accuracy"]["value"] == r["metrics"]["exact_match"]["value"]
    assert seen[-1].finished and seen[-1].done == seen[-1].total == 32
    dones = [p.done for p in seen]
    assert dones == sorted(dones) and len(set(dones)) >= 8  # batches of 4: one report per batch
    assert {p.stage.split(" (")[0] for p in seen} >= {"base", "2shot"}
    assert seen[-1].rate > 0 and seen[-1].eta_s == 0
    assert "evaluate: 2shot (2/2) 32/32 rows" in capsys.readouterr().err


def test_decoding_is_chosen_from_the_answers():
    from runtime.errors import BadInput

    labels = ec.label_spellings(["Card_Arrival", "card_arrival", "card_arrival", "lost card"],
                                ["cardarrival", "lost card"])
    assert labels == ["card_arrival", "lost card"]  # the data's most common spelling, not the normalised key
    d = ec.choose_decoding("auto", ["a", "b"], labels)
    assert d.mode == "labels" and d.json_schema == {"type": "string", "enum": labels} and d.stop is None
    d = ec.choose_decoding("auto", ["Paris", "a short answer"], None)
    assert d.mode == "first_line" and d.stop == ["\n"] and d.json_schema is None
    assert ec.choose_decoding("auto", ["line one\nline two"], None).mode == "free"
    assert ec.choose_decoding("auto", ['{"a": 1}'], None, json_output=True).mode == "free"  # JSON may span lines
    assert ec.choose_decoding("free", ["a"], labels).json_schema is None
    with pytest.raises(BadInput):
        ec.choose_decoding("labels", ["x"], None)
    from runtime.engines import Completion

    comp = Completion(text='"card_arrival"', prompt_tokens=1, completion_tokens=3, latency_s=0.1, parsed="card_arrival")
    assert ec.choose_decoding("labels", [], labels).prediction(comp) == "card_arrival"
    comp = Completion(text="Paris\nis the capital", prompt_tokens=1, completion_tokens=5, latency_s=0.1)
    assert ec.Decoding("first_line").prediction(comp) == "Paris"


def test_macro_f1_over_hundreds_of_labels_is_exact_and_fast():
    """Intent sets have 77 labels or a few hundred: the bootstrap of macro-F1 must stay quick and exact."""
    import time

    rng = np.random.default_rng(0)
    labels = [f"intent_{i}" for i in range(300)]
    ref = [labels[i] for i in rng.integers(0, 300, 400)]
    pred = [labels[i] if i < 300 else None for i in rng.integers(0, 340, 400)]
    pred[:150] = ref[:150]

    def by_definition(p, r):
        f1s = []
        for lab in labels:
            tp = sum(a == lab and b == lab for a, b in zip(p, r))
            fp = sum(a == lab and b != lab for a, b in zip(p, r))
            fn = sum(a != lab and b == lab for a, b in zip(p, r))
            if tp + fp + fn:
                f1s.append(2 * tp / (2 * tp + fp + fn))
        return sum(f1s) / len(f1s)

    assert ec.macro_f1(pred, ref, labels) == pytest.approx(by_definition(pred, ref))
    pc, rc = ec.label_codes(pred, labels), ec.label_codes(ref, labels)
    idx = np.random.default_rng(1).integers(0, 400, 400)
    assert ec.macro_f1_codes(pc[idx], rc[idx], 300) == pytest.approx(by_definition([pred[i] for i in idx],
                                                                                   [ref[i] for i in idx]))
    t0 = time.perf_counter()
    s = ec.summarize(ec.MetricData("f1", 400, lambda i: ec.macro_f1_codes(pc[i], rc[i], 300)), b=1000)
    assert time.perf_counter() - t0 < 3.0, "1,000 resamples over 300 labels"
    assert s["ci95"][0] <= s["value"] <= s["ci95"][1]


def test_a_stratified_sample_of_a_label_sorted_file_covers_every_label():
    rows = [ec.Example([{"role": "user", "content": f"q{i}"}], f"label{i // 30}", i) for i in range(300)]  # sorted
    s = ec.sample_examples(rows, 40, seed=0, labels=sorted({ec.normalize(e.reference) for e in rows}))
    assert len(s) == 40 and [e.row for e in s] == sorted(e.row for e in s)
    from collections import Counter

    assert sorted(Counter(e.reference for e in s).values()) == [4] * 10  # equal shares, as in the file
    assert ec.label_coverage(s, [f"label{i}" for i in range(10)]) == {"labels": 10, "covered": 10}
    assert [e.row for e in ec.sample_examples(rows, 40, seed=0, labels=None)] != list(range(40))
    assert ec.sample_examples(rows, 40, seed=1, labels=None) != ec.sample_examples(rows, 40, seed=0, labels=None)
    assert ec.sample_examples(rows, 500, seed=0) == rows


def test_evaluate_reads_any_format_dataio_reads_and_never_replaces_report_files(tiny_model_dir, workspace):
    """One data path (runtime.dataio): a CSV eval file works; a named out_dir is the person's: existing report
    files are refused unless overwrite."""
    import csv

    from tools import call_tool

    with open(workspace / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "completion"])
        for i in range(8):
            w.writerow([f"What is {i} plus {i}?", str(2 * i)])
    args = {"eval_path": "eval.csv", "candidates": [{"model": str(tiny_model_dir)}], "metrics": ["exact_match"],
            "bootstrap": 100, "out_dir": "reports", "max_new_tokens": 2}
    res = call_tool("evaluate", args)
    assert res.ok, res.error
    assert res.output["n"] == 8 and res.output["decoding"]["mode"] == "first_line"
    assert Path(res.output["report_path"]).parent == workspace / "reports"
    before = (workspace / "reports" / "report.md").read_text()
    again = call_tool("evaluate", args)
    assert not again.ok and again.error["code"] == "output_exists"
    assert (workspace / "reports" / "report.md").read_text() == before
    assert call_tool("evaluate", {**args, "overwrite": True}).ok


def test_recommend_measures_a_stratified_sample_and_says_so(tiny_model_dir, workspace):
    """Issue 10: the baseline came from the first 60 rows of a label-sorted eval file (22 of 75 labels)."""
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    rows = ticket_records(150, seed=7)
    write_jsonl(workspace / "train.jsonl", rows[:110])
    labels_sorted = sorted(rows[110:], key=lambda r: r["messages"][-1]["content"])
    write_jsonl(workspace / "eval.jsonl", labels_sorted)
    from tools.recommend import RecommendInput, recommend_strategy

    out = recommend_strategy(RecommendInput(task="classify tickets", train_path="train.jsonl",
                                            eval_path="eval.jsonl", model=str(tiny_model_dir), eval_limit=12))
    b = out.baseline
    assert b["n"] == 12 and b["sample"]["of"] == 40 and b["sample"]["stratified"]
    assert b["sample"]["coverage"] == {"labels": 3, "covered": 3}
    gap = next(r for r in out.reasons if r.rule == "quality gap vs prompting")
    assert "n=12, a seeded sample of 40 eval rows, stratified by label, covering 3 of 3 labels" in gap.detail
    assert out.audit and out.audit.get("audit_id")  # the audit ran through its typed function


def test_an_80_label_csv_gets_accuracy_macro_f1_and_label_decoding(tiny_model_dir, workspace):
    """Issue 10: 77 intents exceeded a 20/30-label ceiling, so evaluate skipped accuracy and F1. A labelled CSV in
    the person's own column names (`columns`), 80 intents, a stratified sample that covers them all."""
    import csv

    from tools import call_tool

    intents = [f"intent_{i:02d}" for i in range(80)]
    for name, per in (("eval.csv", 2), ("train.csv", 3)):
        with open(workspace / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["utterance", "gold"])
            for i, lab in enumerate(intents * per):
                w.writerow([f"customer message {i} about {lab.replace('_', ' ')}", lab])
    res = call_tool("evaluate", {
        "eval_path": "eval.csv", "train_path": "train.csv", "columns": {"prompt": "utterance", "completion": "gold"},
        "sample": 80, "candidates": [{"model": str(tiny_model_dir)}, {"model": str(tiny_model_dir), "few_shot": 2}],
        "metrics": ["exact_match", "accuracy", "f1"], "bootstrap": 200, "batch_size": 40})
    assert res.ok, res.error
    o = res.output
    assert o["n"] == 80 and o["sample"]["coverage"] == {"labels": 80, "covered": 80}
    assert o["decoding"] == {"mode": "labels", "labels": 80}
    for r in o["results"]:
        assert {"accuracy", "f1"} <= set(r["metrics"]), r["metrics"]
        preds = [json.loads(x)["prediction"] for x in open(o["predictions_paths"][r["name"]])]
        assert set(preds) <= set(intents)  # spelled as the data spells them
    assert {"accuracy", "f1"} <= set(o["comparisons"][0]["metrics"])
