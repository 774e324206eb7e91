"""Proofs that runs learn, on the bundled SmolLM2-135M-Instruct on this CPU (marked real; they still run in CI).

Measured here so far (2 shared cores, bf16 on this AMX CPU): the base model's exact match on the 60 held-out
tickets is 0.00 (it answers in prose); a LoRA run's eval loss fell 4.40 -> 1.57 in 4 steps, and the fixture's
train loss 5.17 -> 0.84 in 8 steps. The full runs could not be finished on the shared dev machine (other
sessions' jobs made a step take ~100 s instead of ~3 s), so the thresholds below are deliberately loose.
"""

from __future__ import annotations

import json

import pytest

from tools import call_tool

pytestmark = pytest.mark.real


def greedy_answers(model, tokenizer, rows, max_new_tokens: int = 4, batch: int = 20) -> list[str]:
    import torch

    tokenizer.padding_side = "left"
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        texts = [tokenizer.apply_chat_template(r["messages"][:-1], tokenize=False, add_generation_prompt=True)
                 for r in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        out += [tokenizer.decode(g, skip_special_tokens=True).strip() for g in gen[:, enc["input_ids"].shape[1]:]]
    return out


def exact_match(answers: list[str], rows) -> float:
    gold = [r["messages"][-1]["content"] for r in rows]
    return sum(a.strip().lower().rstrip(".") == g for a, g in zip(answers, gold)) / len(gold)


def read_rows(path):
    return [json.loads(line) for line in open(path)]


def test_lora_sft_lowers_eval_loss_and_beats_the_base_on_held_out_prompts(ticket_sft_run, bundled_model_dir):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = ticket_sft_run["metrics"]
    # measured: eval loss 4.40 -> 1.57 after only 4 steps of the same task
    assert m["eval_loss"] < 0.5 * m["eval_loss_before"], m
    assert m["train_loss_last5"] < m["train_loss_first"], m
    rows = read_rows(ticket_sft_run["eval_path"])
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    base = AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32)
    base_em = exact_match(greedy_answers(base, tok, rows), rows)
    tuned = PeftModel.from_pretrained(base, ticket_sft_run["adapter_path"])
    tuned_em = exact_match(greedy_answers(tuned, tok, rows), rows)
    print(f"exact match on {len(rows)} held-out tickets: base {base_em:.2f}, LoRA {tuned_em:.2f}")
    assert tuned_em >= 0.8 and tuned_em >= base_em + 0.4, (base_em, tuned_em)


def test_qlora_learns_with_much_less_model_memory(ticket_task, ticket_sft_run, in_ticket_workspace,
                                                  bundled_model_dir):
    res = call_tool("train_sft", {"model": "default", "train_path": ticket_task["train_path"],
                                  "eval_path": ticket_task["eval_path"], "method": "qlora", "max_steps": 16,
                                  "wait": True})
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    m = out["metrics"]
    # measured on this CPU (bf16, 16 steps): eval loss 4.72 -> 3.15. QLoRA learns here, but far slower than the
    # LoRA run (4.40 -> 1.57 in 4 steps); why is an open question (nf4 over weights that were already Q4_1?).
    assert m["eval_loss"] < 0.8 * m["eval_loss_before"], m
    assert m["train_loss_last5"] < m["train_loss_first"], m
    lora_mem = ticket_sft_run["metrics"]["model_memory_mb"]
    print(f"model memory: QLoRA {m['model_memory_mb']} MB vs LoRA {lora_mem} MB")
    # The issue compares against the fp32 model. The LoRA run is bf16 where the CPU has it (275 MB here), so
    # also check QLoRA stays under that. Measured: QLoRA 168 MB, LoRA bf16 275 MB, fp32 weights 513 MB.
    from runtime.planning import ModelShape

    fp32_mb = ModelShape.from_dir(bundled_model_dir).params * 4 / 2**20
    assert m["model_memory_mb"] < 0.4 * fp32_mb, (m["model_memory_mb"], fp32_mb)
    assert m["model_memory_mb"] < 0.8 * lora_mem, (m["model_memory_mb"], lora_mem)
    cfg = json.load(open(out["adapter_path"] + "/adapter_config.json"))
    assert cfg["peft_type"] == "LORA"


def test_dpo_raises_preference_accuracy_on_held_out_pairs(workspace):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_preference_records

    rows = ticket_preference_records(200, seed=11)
    write_jsonl(workspace / "pref_train.jsonl", rows[:160])
    write_jsonl(workspace / "pref_eval.jsonl", rows[160:])
    res = call_tool("train_dpo", {"model": "default", "train_path": "pref_train.jsonl",
                                  "eval_path": "pref_eval.jsonl", "max_steps": 20, "batch_size": 8,
                                  "learning_rate": 2e-4, "beta": 0.1, "wait": True})
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    m = out["metrics"]
    print(f"preference accuracy on 40 held-out pairs: {m['preference_accuracy_before']} -> "
          f"{m['preference_accuracy']}")
    assert m["preference_accuracy"] >= m["preference_accuracy_before"] + 0.15, m
    assert m["preference_accuracy"] >= 0.7, m


def test_distillation_student_has_half_the_layers_and_its_kl_to_the_teacher_falls(ticket_task,
                                                                                  in_ticket_workspace):
    res = call_tool("distill", {"model": "default", "train_path": ticket_task["train_path"],
                                "eval_path": ticket_task["eval_path"], "mode": "logit", "max_steps": 15,
                                "batch_size": 8, "wait": True})
    assert res.ok, res.error
    out = res.output
    assert out["status"] == "succeeded", out
    m = out["metrics"]
    print(f"student {m['student_layers']}/{m['teacher_layers']} layers; KL to teacher "
          f"{m['teacher_kl_before']} -> {m['teacher_kl']}")
    assert (m["teacher_layers"], m["student_layers"]) == (30, 15)
    assert m["teacher_kl"] < 0.7 * m["teacher_kl_before"], m
    from runtime import jobs

    result = jobs.get_job(out["job_id"]).result
    assert result["student_params"] < 0.7 * result["teacher_params"]
