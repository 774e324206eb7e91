"""The LM head and loss of a CPU training step, in place of TRL's fused LM head.

TRL (1.x) patches the model so that `model(..., fused_lm_head=True)` returns per-token log-probabilities without
materializing the `[tokens, vocab]` logits: a memory saving built for GPUs. On a CPU without Triton it scores every
position (prompt and padding too) in vocabulary tiles and accumulates the backward in fp32 copies of bf16 tensors;
profiled on the router build (SmolLM2-135M, LoRA, batch 16 of ~64 tokens), that head took 40% of each step.
The runner puts it in every CPU run whose TRL trainer gave the model the fused head (SFT, sequence distillation,
DPO, KTO).
Here the same protocol is answered by projecting only the positions that have a label, in the run's precision,
with the log-softmax in fp32, as transformers' own loss does: `bench/train.py` measures train_sft against plain TRL
configured by hand, side by side (README: 1.68x real tokens/s).
Batches whose scored logits would be large (long rows, big vocabularies) keep TRL's tiled head, whose memory does not
grow with them.
"""

from __future__ import annotations

import types

# Above this many scored logits (tokens x vocabulary) a batch keeps TRL's tiled head: 64M fp32 logits are 256 MB,
# and the log-softmax keeps a second copy for the backward.
MAX_LOGITS = 64 * 2**20


def plain_lm_head_on_cpu(trainer, device: str) -> str:
    """On a CPU run, the plain LM head for a TRL trainer's model (the base model under PEFT); which head the run
    trains with, for its result: "plain" or "trl" (also where the trainer gave the model no fused head)."""
    model = trainer.model
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "plain" if device == "cpu" and use_plain_lm_head(base) else "trl"


def use_plain_lm_head(model) -> bool:
    """Replace TRL's fused forward on `model` (the base model under PEFT) by the plain one; False (and nothing
    changed) where TRL did not patch it or the model transforms its logits (softcapping, scaling)."""
    fused = getattr(model, "forward", None)
    code = getattr(getattr(fused, "__func__", None), "__code__", None)
    if getattr(code, "co_name", "") != "_fused_forward":    # TRL's patch (functools.wraps renames the function)
        return False
    text = model.config.get_text_config()
    if any(getattr(text, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logit_scale",
                                                               "output_multiplier", "lm_head_multiplier",
                                                               "logits_scaling")):
        return False
    if _closure(fused).get("temperature", 1.0) != 1.0:
        return False
    model.forward = types.MethodType(_plain_forward(fused), model)
    return True


def _closure(fn) -> dict:
    func = fn.__func__
    return {name: cell.cell_contents for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ())}


def _plain_forward(fused):
    """A forward that answers `fused_lm_head=True` as TRL's does (a FusedCausalLMOutput, every per-token field
    zero where the label is -100), and leaves every other call to TRL's wrapper (the model's own forward)."""
    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head or getattr(self.config.get_text_config(), "output_router_logits", False):
            return fused(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                         num_items_in_batch=num_items_in_batch, **kwargs)
        head = self.get_output_embeddings()
        target = (labels[:, 1:] if shift_labels is None else shift_labels)
        mask = target != -100
        if int(mask.sum()) * head.weight.shape[0] > MAX_LOGITS:
            return fused(*args, fused_lm_head=True, labels=labels, shift_labels=shift_labels,
                         num_items_in_batch=num_items_in_batch, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state
        hidden = hidden[:, :-1] if shift_labels is None else hidden
        logits = head(hidden[mask]).float()          # [scored tokens, vocab]
        logp = logits.log_softmax(-1)
        picked = logp.gather(-1, target[mask].unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():   # the trainers log these, or weight by them (DPO's WPO) without gradient
            extra = {"entropy": -(logp.exp() * logp).sum(-1), "is_top1": logp.argmax(-1) == target[mask],
                     "log_sum_sq_probs": (2 * logp).logsumexp(-1), "mean_logits": logits.mean(-1)}

        def spread(x):   # back to [batch, positions], zero where there is no label
            return None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x)

        log_probs = spread(picked)
        denominator = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / denominator, log_probs=log_probs, label_mask=mask,
                                   **{k: spread(v) for k, v in extra.items()})

    return forward
