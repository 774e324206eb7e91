"""The CPU LM head (runtime/training/lm_head.py) answers TRL's fused-head protocol with the same numbers, keeps
TRL's head where it must, and is what a CPU train_sft job trains with."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from runtime.training import lm_head
from test_jobs import sft_args as args, tiny_task, wait_for  # noqa: F401 - the job tests' helpers and fixture
from tools import call_tool

OUTPUTS = ("log_probs", "entropy", "is_top1")   # what TRL's SFTTrainer asks the fused head for


def tiny(**extra):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, **extra))


def fused_pair(**extra):
    from trl.trainer.utils import add_fused_lm_head

    trl_model = tiny(**extra)
    ours = copy.deepcopy(trl_model)
    add_fused_lm_head(trl_model, outputs=OUTPUTS)
    add_fused_lm_head(ours, outputs=OUTPUTS)
    return trl_model, ours


def batch():
    """Three rows: prompts masked, the last one padded."""
    ids = torch.randint(0, 300, (3, 10), generator=torch.Generator().manual_seed(1))
    labels, mask = ids.clone(), torch.ones_like(ids)
    labels[:, :4] = -100
    labels[2, 7:], mask[2, 7:] = -100, 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_the_plain_head_gives_trls_loss_metrics_and_gradients():
    trl_model, ours = fused_pair()
    assert lm_head.use_plain_lm_head(ours)
    a, b = trl_model(**batch(), fused_lm_head=True), ours(**batch(), fused_lm_head=True)
    for field in ("loss", "log_probs", "entropy", "is_top1", "label_mask"):
        x, y = getattr(a, field), getattr(b, field)
        assert x.shape == y.shape, field
        assert torch.allclose(x.float(), y.float(), atol=1e-5), field
    assert bool(b.label_mask[2, 6:].any()) is False and b.log_probs[:, :3].abs().sum().item() == 0.0
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(trl_model.named_parameters(), ours.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_calls_without_the_fused_flag_are_the_models_own():
    trl_model, ours = fused_pair()
    lm_head.use_plain_lm_head(ours)
    ids = batch()["input_ids"]
    assert torch.equal(ours(input_ids=ids).logits, trl_model(input_ids=ids).logits)
    assert torch.allclose(ours(**batch()).loss, trl_model(**batch()).loss)


def test_a_batch_over_the_logit_cap_keeps_trls_tiled_head(monkeypatch):
    _, ours = fused_pair()
    lm_head.use_plain_lm_head(ours)
    assert ours(**batch(), fused_lm_head=True).log_sum_sq_probs is not None    # the plain head computes it
    monkeypatch.setattr(lm_head, "MAX_LOGITS", 100)
    assert ours(**batch(), fused_lm_head=True).log_sum_sq_probs is None        # TRL's computes only what SFT asks


def test_models_it_cannot_stand_in_for_keep_trls_head():
    assert not lm_head.use_plain_lm_head(tiny())                              # TRL never patched it
    _, soft = fused_pair(final_logit_softcapping=30.0)                        # the head transforms its logits
    assert not lm_head.use_plain_lm_head(soft)
    from trl.trainer.utils import add_fused_lm_head

    hot = tiny()
    add_fused_lm_head(hot, temperature=0.7, outputs=OUTPUTS)
    assert not lm_head.use_plain_lm_head(hot)


def test_a_cpu_train_sft_job_trains_with_the_plain_head(tiny_model_dir, tiny_task):
    res = call_tool("train_sft", args(tiny_model_dir, tiny_task, max_steps=2, wait=True))
    assert res.ok, res.error
    from runtime import jobs

    job = jobs.get_job(res.output["job_id"])
    assert job.status == "succeeded", job.error
    assert job.result["lm_head"] == "plain"
    m = job.result["metrics"]
    assert m["global_step"] == 2 and math.isfinite(m["train_loss"]) and math.isfinite(m["eval_loss"])
