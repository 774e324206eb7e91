"""SFT defaults that learn within the step budget: the one home for what a run uses where the person chose nothing.

A person's explicit value always wins; everything here fills only what they left out. Why: with TRL's textbook
LoRA settings (lr 2e-4, linear decay from step 0) a 40-step run averages a rate of 1e-4, and LoRA's zero-initialised
B needs larger steps to leave zero: on a 5-way routing task the outsiders measured 0.28 exact match after 40 steps.
bench/defaults.py measures these rules against textbook TRL side by side (README, "Defaults that learn"). The rules:

- Learning rate (LoRA/QLoRA) for the model's width and the adapter's scale. Anchors: 1e-3 for hidden 576
  (SmolLM2-135M; the rate bench/defaults.py and bench/banking_loop.py measure; not swept here, the shared CPU
  allowed one setting), 2e-4 for hidden 4096 and 1e-4 for 8192 (the QLoRA paper's choices for 7B and 65B);
  log-log interpolation between them. An adapter's output moves per step about in
  proportion to lr * alpha^2 / r (rsLoRA's analysis), so the rate is rescaled from the r 16 / alpha 32 it was
  measured at, within [1/4, 4]x. Full fine-tuning keeps its rate (not measured here).
- Warmup: a tenth of the steps (at least 1): a high rate on the first, noisy batches overshoots.
- Loss on the answers only: the job turns conversations into prompt/completion (runtime/training/common.py), so a
  label's few tokens are not drowned by the prompt's many.
- max_length from the data: the longest sampled row (chat template applied) plus a quarter, rounded up to 64,
  within [64, 1024]: short label rows do not reserve 512 tokens in the memory plan, and long rows are not cut
  before their answer (a cut answer trains nothing) up to TRL's own default of 1024.
- Epochs when neither epochs nor max_steps is given: enough that the median label is seen LABEL_SIGHTINGS times
  and the run sees at least MIN_EXAMPLES rows (40 steps of 8, the budget the bench measures learning in), at most
  MAX_EPOCHS passes (more repeats memorise). Banking77 with 1,000 rows and 77 intents (13 a label): 1 epoch.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

LABEL_SIGHTINGS = 12
MIN_EXAMPLES = 320
MAX_EPOCHS = 4.0
WARMUP_FRACTION = 0.1
LENGTH_MIN, LENGTH_CAP, LENGTH_STEP = 64, 1024, 64
# (hidden size, LoRA learning rate at r 16 / alpha 32): see the module docstring for where each comes from.
LR_ANCHORS = ((576, 1e-3), (4096, 2e-4), (8192, 1e-4))
REFERENCE_SCALE = 32 ** 2 / 16  # alpha^2 / r of the anchors


@dataclass
class DataProfile:
    """What the defaults need to know about the training rows: how many, and the label counts when the answers
    form a label set (runtime.labels' rule)."""

    rows: int
    label_counts: dict[str, int] | None = None

    @property
    def median_label_count(self) -> int | None:
        if not self.label_counts:
            return None
        counts = sorted(self.label_counts.values())
        return counts[len(counts) // 2]


def profile(path: str, columns: dict[str, str] | None = None) -> DataProfile:
    """Row count and label counts of a training file (the answers only; no tokenizer)."""
    from runtime import dataio
    from runtime.labels import decide_labels, normalize_label

    rows, answers = 0, Counter()
    for _, rec in dataio.iter_records(path, columns=columns):
        rows += 1
        if not isinstance(rec, dict):
            continue
        try:
            msgs = dataio.to_conversational(rec).get("messages") or []
        except Exception:  # noqa: BLE001 - a row training would refuse says nothing about labels
            continue
        if msgs and msgs[-1].get("role") == "assistant" and isinstance(msgs[-1].get("content"), str):
            answers[normalize_label(msgs[-1]["content"])] += 1
    labels = decide_labels(answers)
    return DataProfile(rows, {lab: answers[lab] for lab in labels} if labels else None)


def lora_learning_rate(hidden: int, lora_r: int, lora_alpha: int) -> float:
    """The LoRA rate for a model of this width and an adapter of this scale (module docstring)."""
    (h0, lr0), *_ = LR_ANCHORS
    if hidden <= h0:
        base = lr0
    else:
        base = LR_ANCHORS[-1][1] * LR_ANCHORS[-1][0] / hidden  # beyond the last anchor: 1/width
        for (ha, la), (hb, lb) in zip(LR_ANCHORS, LR_ANCHORS[1:]):
            if hidden <= hb:
                t = math.log(hidden / ha) / math.log(hb / ha)
                base = math.exp(math.log(la) + t * (math.log(lb) - math.log(la)))
                break
    scale = min(4.0, max(0.25, REFERENCE_SCALE / (lora_alpha ** 2 / lora_r)))
    return float(f"{base * scale:.2g}")


def epochs_for(data: DataProfile) -> float:
    """Passes over the data when the person gave neither epochs nor max_steps (module docstring)."""
    if data.rows <= 0:
        return 1.0
    need = MIN_EXAMPLES / data.rows
    if data.median_label_count:
        need = max(need, LABEL_SIGHTINGS / data.median_label_count)
    return round(min(MAX_EPOCHS, max(1.0, need)), 2)


def max_length_for(longest_tokens: int | None) -> int | None:
    """max_length from the longest sampled row; None when the rows were not measured."""
    if not longest_tokens:
        return None
    n = math.ceil(longest_tokens * 1.25 / LENGTH_STEP) * LENGTH_STEP
    return min(LENGTH_CAP, max(LENGTH_MIN, n))


def warmup_for(steps: int | None) -> int:
    return max(1, round(WARMUP_FRACTION * steps)) if steps else 0
