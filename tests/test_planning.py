"""Memory planning: the parameter count is exact, the plan adapts to the budget, and the estimate lands within
25% of the measured peak RSS of real training jobs (marked real)."""

from __future__ import annotations

import json

import pytest

from tools import call_tool


def test_shape_counts_parameters_exactly(tiny_model_dir, bundled_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from runtime.planning import ModelShape

    for d in (tiny_model_dir, bundled_model_dir):
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        assert ModelShape.from_dir(d).params == sum(p.numel() for p in model.parameters())
        from peft import LoraConfig, get_peft_model

        peft = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        assert ModelShape.from_dir(d).lora_params(16) == trainable


def test_estimate_parts_move_the_right_way(bundled_model_dir):
    from runtime.planning import ModelShape, estimate

    sh = ModelShape.from_dir(bundled_model_dir)
    kw = dict(batch_size=8, seq_len=128, bf16=False)
    lora = estimate(sh, "lora", gradient_checkpointing=False, **kw)
    lora_gc = estimate(sh, "lora", gradient_checkpointing=True, **kw)
    qlora = estimate(sh, "qlora", gradient_checkpointing=False, **kw)
    full = estimate(sh, "full", gradient_checkpointing=False, **kw)
    assert lora_gc["activations_mb"] < lora["activations_mb"] / 5
    assert qlora["weights_mb"] < lora["weights_mb"] / 2.5      # 4-bit blocks, embeddings stay dense
    assert full["optimizer_mb"] > 20 * lora["optimizer_mb"]
    assert lora["weights_mb"] == pytest.approx(sh.params * 4 / 2**20, rel=1e-3)
    double = estimate(sh, "lora", gradient_checkpointing=False, batch_size=16, seq_len=128, bf16=False)
    assert double["activations_mb"] == pytest.approx(2 * lora["activations_mb"], rel=0.01)


def test_plan_shrinks_batch_then_checkpoints_then_quantizes(bundled_model_dir, workspace):
    from runtime.planning import plan_for

    path = str(bundled_model_dir)
    roomy = plan_for(path, "lora", seq_len=256, budget_mb=64_000)
    assert roomy["fits"] and roomy["batch_size"] == 8 and not roomy["gradient_checkpointing"]
    assert roomy["method"] == "lora"
    tight = plan_for(path, "lora", seq_len=256, budget_mb=roomy["estimate"]["total_mb"] * 0.8)
    assert tight["fits"] and (tight["batch_size"] < 8 or tight["gradient_checkpointing"])
    assert tight["batch_size"] * tight["grad_accum"] >= 8  # same effective batch via accumulation
    full_small = plan_for(path, "full", seq_len=256, budget_mb=1900)
    assert full_small["method"] == "qlora" and any("qlora" in n for n in full_small["notes"])
    hopeless = plan_for(path, "lora", seq_len=256, budget_mb=100)
    assert not hopeless["fits"]


def test_plan_training_tool_reads_token_stats(bundled_model_dir, workspace):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    write_jsonl(workspace / "t.jsonl", ticket_records(50))
    res = call_tool("plan_training", {"model": "default", "train_path": "t.jsonl", "method": "qlora",
                                      "max_length": 256, "epochs": 2})
    assert res.ok, res.error
    out = res.output
    assert out["token_stats"]["rows"] == 50 and 30 < out["token_stats"]["mean_tokens"] < 120
    assert out["expected_steps"] == 50 * 2 // (out["batch_size"] * out["grad_accum"]) + (
        1 if (100 % (out["batch_size"] * out["grad_accum"])) else 0)
    assert set(out["estimate"]) >= {"framework_mb", "weights_mb", "optimizer_mb", "activations_mb", "logits_mb"}
    bad = call_tool("plan_training", {"model": "nope-model"})
    assert not bad.ok and bad.error["code"] == "unknown_model"


@pytest.mark.real
@pytest.mark.parametrize("spec", [
    {"method": "lora", "batch_size": 4},
    {"method": "lora", "batch_size": 8, "gradient_checkpointing": True},
    {"method": "full", "batch_size": 4},
])
def test_estimate_within_25_percent_of_measured_peak_rss(bundled_model_dir, workspace, spec):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    write_jsonl(workspace / "train.jsonl", ticket_records(24, seed=5))
    res = call_tool("train_sft", {"model": "default", "train_path": "train.jsonl", "max_steps": 2, "wait": True,
                                  **spec})
    assert res.ok and res.output["status"] == "succeeded", res.output or res.error
    measured = res.output["metrics"]["peak_memory_mb"]
    estimated = res.output["plan"]["estimate"]["total_mb"]
    assert res.output["plan"]["batch_size"] == spec["batch_size"]
    assert abs(estimated - measured) / measured < 0.25, (estimated, measured)


def test_cpu_step_time_plan_is_near_a_real_runs(bundled_model_dir, workspace):
    """The plan's time is what recommend quotes as training minutes: it was 14x too long here (71 s a step planned,
    ~3 s measured for batch 16 of the router's rows)."""
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    write_jsonl(workspace / "train.jsonl", ticket_records(64, seed=6))
    res = call_tool("train_sft", {"model": "default", "train_path": "train.jsonl", "max_steps": 4, "batch_size": 8,
                                  "eval_rows": 0, "wait": True})
    assert res.ok and res.output["status"] == "succeeded", res.output or res.error
    m, plan = res.output["metrics"], res.output["plan"]
    measured = m["train_runtime_s"] / m["global_step"]
    assert 1 / 3 < plan["expected_s_per_step"] / measured < 3, (plan["expected_s_per_step"], measured)


# --- CUDA: the H200 table of the GPU-training issue ---------------------------------------------------------

def llama_082b(workspace, bundled_model_dir):
    """The issue's 0.82B Llama as config.json + tokenizer (no weights: the planner reads the config alone)."""
    import shutil

    d = workspace / "llama-0.82b"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 49152,
        "tie_word_embeddings": True, "max_position_embeddings": 4096}))
    for f in bundled_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges")):
            shutil.copy(f, d / f.name)
    return d


def issue_rows(path, n=400, seed=0):
    """Chat rows shaped like the GPU check's data: ~418 tokens on average, p95 ~960, a long tail to 1024+."""
    import random

    rng = random.Random(seed)
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "po", "si", "de", "ban", "cor", "fel", "gin", "hum", "jet", "vor"]
    words = ["".join(rng.choice(syl) for _ in range(rng.randint(1, 3))) for _ in range(800)]
    with open(path, "w") as f:
        for _ in range(n):
            a = int(min(700, max(8, rng.lognormvariate(4.6, 0.8))))
            b = int(min(300, max(3, rng.lognormvariate(3.5, 0.9))))
            f.write(json.dumps({"messages": [
                {"role": "user", "content": " ".join(rng.choice(words) for _ in range(a))},
                {"role": "assistant", "content": " ".join(rng.choice(words) for _ in range(b))}]}) + "\n")


H200 = {"device": "cuda", "gpu_memory_gb": 139.8, "bf16": True}


@pytest.mark.parametrize("spec, measured_gb", [
    # the issue's table (torch.cuda.max_memory_allocated, GiB)
    ({"method": "lora", "gradient_checkpointing": False}, 17.6),   # ftpilot train_sft, planner: no checkpointing
    ({"method": "lora", "gradient_checkpointing": True}, 3.73),    # TRL's defaults (checkpointing on)
    # measured with this code on an H200 (bench/gpu_table.py, README): QLoRA, and the planner's own batch
    ({"method": "qlora", "gradient_checkpointing": False}, 15.91),
    ({"method": "lora", "gradient_checkpointing": False, "batch_size": 32}, 63.58),
])
def test_cuda_plan_within_25_percent_of_the_h200_table(workspace, bundled_model_dir, spec, measured_gb):
    model = llama_082b(workspace, bundled_model_dir)
    issue_rows(workspace / "train.jsonl")
    res = call_tool("plan_training", {"model": str(model), "train_path": "train.jsonl", "max_length": 1024,
                                      "target": H200, **{"batch_size": 8, **spec}})
    assert res.ok, res.error
    out = res.output
    stats = out["token_stats"]
    assert 330 < stats["mean_tokens"] < 520 and stats["p95_tokens"] > 800, stats  # the issue's length distribution
    predicted_gb = out["estimate"]["total_mb"] / 1024
    assert abs(predicted_gb - measured_gb) / measured_gb < 0.25, (predicted_gb, measured_gb, out["estimate"])
    assert out["estimate"]["framework_mb"] == 0  # torch.cuda.max_memory_allocated holds no CUDA context


def test_cuda_plan_fills_a_big_card_and_fits_a_small_one(workspace, bundled_model_dir):
    model = llama_082b(workspace, bundled_model_dir)
    issue_rows(workspace / "train.jsonl")
    big = call_tool("plan_training", {"model": str(model), "train_path": "train.jsonl", "max_length": 1024,
                                      "target": H200}).output
    assert big["fits"] and big["batch_size"] > 8 and not big["gradient_checkpointing"], big
    assert big["estimate"]["total_mb"] <= big["budget_mb"] and big["reason"]
    small = call_tool("plan_training", {"model": str(model), "train_path": "train.jsonl", "max_length": 1024,
                                        "target": {"device": "cuda", "gpu_memory_gb": 24}}).output
    assert small["fits"] and small["estimate"]["total_mb"] <= small["budget_mb"] < 24 * 1024
    assert small["batch_size"] * small["grad_accum"] >= 8
    assert small["target"]["device"] == "cuda" and "MB" in small["reason"]
    tiny = call_tool("plan_training", {"model": str(model), "max_length": 1024, "method": "full",
                                       "target": {"device": "cuda", "gpu_memory_gb": 4}}).output
    assert tiny["method"] == "qlora" or not tiny["fits"]


def test_qlora_peak_below_lora_at_the_same_batch_on_cuda(bundled_model_dir, workspace):
    from runtime.planning import ModelShape, estimate

    sh = ModelShape.from_dir(llama_082b(workspace, bundled_model_dir))
    kw = dict(batch_size=8, seq_len=1024, gradient_checkpointing=False, bf16=True, device="cuda")
    assert estimate(sh, "qlora", **kw)["total_mb"] < estimate(sh, "lora", **kw)["total_mb"]


def test_plan_training_stays_instant_on_a_50_mb_row_and_refuses_a_fifo(bundled_model_dir, workspace):
    import os
    import time

    with open(workspace / "huge.jsonl", "w") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "word " * 10_000_000},
                                         {"role": "assistant", "content": "ok"}]}) + "\n")
        f.write(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                         {"role": "assistant", "content": "ok"}]}) + "\n")
    t = time.perf_counter()
    res = call_tool("plan_training", {"model": "default", "train_path": "huge.jsonl", "max_length": 256})
    took = time.perf_counter() - t
    assert res.ok, res.error
    assert took < 10, took  # it took 117 s when the row was tokenized whole
    assert res.output["token_stats"]["rows"] == 2 and res.output["token_stats"]["over_max_length"] == 1
    os.mkfifo(workspace / "pipe.jsonl")
    res = call_tool("plan_training", {"model": "default", "train_path": "pipe.jsonl"})
    assert not res.ok and res.error["code"] == "not_a_regular_file"
