"""Defaults that learn (issue 10): train_sft sizes learning rate, warmup, max_length and epochs from the model and the
data where the person chose none (runtime/training/defaults.py); recommend_strategy proposes that sized run."""

from __future__ import annotations

import math

import pytest

from runtime.outputs import write_jsonl


def label_rows(labels: int, per_label: int, words: int = 6) -> list[dict]:
    """Short labelled rows, `per_label` of each label, round-robin (no two texts alike)."""
    rows = []
    for i in range(labels * per_label):
        lab = f"intent_{i % labels:02d}"
        text = " ".join(f"w{(i * 7 + k) % 97}" for k in range(words)) + f" case {i}"
        rows.append({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": lab}]})
    return rows


def sft_config(model_dir, **args):
    from runtime.training.config import SFTRun
    from tools.training import TrainSFTInput, _check_inputs, build_config

    a = TrainSFTInput(model=str(model_dir), **args)
    return build_config(SFTRun, a, _check_inputs(a.model, a.train_path), a.method, method=a.method)


def test_label_data_gets_a_high_lora_rate_warmup_short_max_length_and_enough_epochs(tiny_model_dir, workspace):
    """Old defaults: lr 2e-4 from step 0, max_length 512, 1 epoch (13 steps for 100 rows: nothing learnt)."""
    write_jsonl(workspace / "train.jsonl", label_rows(5, 20))
    c = sft_config(tiny_model_dir, train_path="train.jsonl")
    assert c.learning_rate == pytest.approx(1e-3)
    assert c.max_length <= 128  # rows of ~50 tokens (the template adds a default system prompt)
    assert c.epochs == pytest.approx(3.2)  # 320 rows seen at least (40 steps of 8)
    steps = c.plan["expected_steps"]
    assert steps == math.ceil(100 * 3.2 / (c.batch_size * c.grad_accum))
    assert c.warmup_steps == round(0.1 * steps) > 0
    assert c.plan["defaults"]["labels"] == 5 and set(c.plan["defaults"]["chosen"]) == {
        "epochs", "max_length", "learning_rate", "warmup_steps"}


def test_many_labels_get_epochs_for_the_label_count(tiny_model_dir, workspace):
    """77 intents with 6 rows each: 2 epochs, so the median label is seen 12 times."""
    write_jsonl(workspace / "train.jsonl", label_rows(77, 6))
    c = sft_config(tiny_model_dir, train_path="train.jsonl")
    assert c.epochs == pytest.approx(2.0)
    assert c.plan["defaults"]["median_label_count"] == 6


def test_a_persons_values_win(tiny_model_dir, workspace):
    write_jsonl(workspace / "train.jsonl", label_rows(5, 20))
    c = sft_config(tiny_model_dir, train_path="train.jsonl", learning_rate=3e-4, max_length=300, epochs=1.5)
    assert (c.learning_rate, c.max_length, c.epochs) == (3e-4, 300, 1.5)
    c = sft_config(tiny_model_dir, train_path="train.jsonl", max_steps=30)
    assert c.max_steps == 30 and c.warmup_steps == 3 and c.epochs == 1.0
    full = sft_config(tiny_model_dir, train_path="train.jsonl", method="full")
    assert full.learning_rate == 2e-5  # full fine-tuning keeps its rate


def test_long_rows_raise_max_length_so_answers_are_not_cut(tiny_model_dir, workspace):
    write_jsonl(workspace / "train.jsonl", label_rows(5, 20, words=400))
    c = sft_config(tiny_model_dir, train_path="train.jsonl")
    assert c.max_length > 512  # the old default cut these rows before their answer


def test_learning_rate_follows_width_and_adapter_scale():
    from runtime.training.defaults import lora_learning_rate

    assert lora_learning_rate(576, 16, 32) == pytest.approx(1e-3)
    assert lora_learning_rate(4096, 16, 32) == pytest.approx(2e-4)
    assert lora_learning_rate(8192, 16, 32) == pytest.approx(1e-4)
    assert 2e-4 < lora_learning_rate(2048, 16, 32) < 1e-3
    assert lora_learning_rate(576, 64, 128) == pytest.approx(2.5e-4)  # alpha^2/r 4x the reference
    assert lora_learning_rate(576, 8, 16) == pytest.approx(2e-3)


def test_recommend_proposes_the_sized_run_and_train_sft_takes_it_as_is(tiny_model_dir, workspace):
    """Issue 10: on Banking77 (1,000 rows, 77 intents) the proposal was 1 epoch at lr 2e-4 and max_length 512,
    and its 40-step run learnt nothing. Now the proposal is the defaults' sized run, as explicit arguments."""
    from tools.recommend import RecommendInput, recommend_strategy

    write_jsonl(workspace / "train.jsonl", label_rows(77, 6))
    write_jsonl(workspace / "eval.jsonl", label_rows(77, 1))
    out = recommend_strategy(RecommendInput(task="route queries", train_path="train.jsonl", eval_path="eval.jsonl",
                                            model=str(tiny_model_dir), eval_limit=10))
    assert out.recommendation == "fine_tune", out.summary
    p = out.proposed_run
    assert p == out.estimate["proposed_run"]
    assert p["learning_rate"] == pytest.approx(1e-3) and p["epochs"] == pytest.approx(2.0) and p["max_length"] <= 128
    assert p["max_steps"] == math.ceil(462 * 2 / 8) == out.estimate["plan"]["expected_steps"]
    c = sft_config(tiny_model_dir, **{k: v for k, v in p.items() if k != "model"})
    assert (c.learning_rate, c.epochs, c.max_length, c.max_steps) == (
        p["learning_rate"], p["epochs"], p["max_length"], p["max_steps"])


@pytest.mark.real
@pytest.mark.timeout(2400)  # a few minutes on a quiet machine; 30 steps took 25 minutes at load 10 on 2 cores
def test_defaults_learn_a_label_task_in_30_steps_on_held_out_phrasings(bundled_model_dir, workspace):
    """30 steps with nothing but max_steps given: the tickets' eval templates are disjoint from the training ones
    and there is no system prompt naming the labels. Evaluated with label-constrained decoding against the base."""
    import contextlib

    from runtime import jobs
    from runtime.errors import BadInput
    from runtime.samples import ticket_records
    from tools import call_tool

    write_jsonl(workspace / "train.jsonl", ticket_records(240, seed=0, system=False, part="train"))
    write_jsonl(workspace / "eval.jsonl", ticket_records(45, seed=1, system=False, part="eval"))
    started = call_tool("train_sft", {"train_path": "train.jsonl", "max_steps": 30})
    assert started.ok, started.error
    job_id = started.output["job_id"]
    try:
        job = jobs.wait_job(job_id)
    finally:  # pass or fail, no job is left running
        with contextlib.suppress(BadInput):
            jobs.cancel_job(job_id)
    assert job.status == "succeeded", job.error
    tuned = {"name": "tuned", "adapter": job.result["adapter_path"]}
    ev = call_tool("evaluate", {"eval_path": "eval.jsonl", "metrics": ["exact_match"],
                                "candidates": [{"name": "base"}, tuned]})
    assert ev.ok, ev.error
    em = {r["name"]: r["metrics"]["exact_match"]["value"] for r in ev.output["results"]}
    delta = ev.output["comparisons"][0]["metrics"]["exact_match"]
    assert em["tuned"] >= 0.8 and delta["excludes_zero"] and delta["delta"] > 0, (em, delta)
