"""Shared evaluation machinery for `evaluate`, `recommend_strategy` and `generate_synthetic`.

Data: eval/train rows in TRL's SFT formats (messages; prompt/completion as strings or message lists; Alpaca
instruction/input/output). The prompt is everything before the last assistant turn; the reference is that turn.
Metrics are computed per item and aggregated by functions of a resampled index vector, so the same code gives the
value, its 95% bootstrap CI, and paired-bootstrap CIs of differences between candidates.
No torch import at module level (numpy only).
"""

from __future__ import annotations

import json
import math
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtime.errors import BadInput, NotFound

MAX_LABELS = 20


# --- data ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    prompt: list[dict]          # messages before the answer (may include a system message)
    reference: str              # the expected answer text
    row: int                    # 0-based row in the file


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def to_example(rec: dict, row: int) -> Example:
    if isinstance(rec.get("messages"), list) and rec["messages"]:
        msgs = [{"role": m.get("role"), "content": _text(m.get("content"))} for m in rec["messages"]]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise BadInput(f"row {row}: no assistant answer after a prompt")
        return Example(msgs[:last], msgs[last]["content"], row)
    if "prompt" in rec and "completion" in rec:
        p, c = rec["prompt"], rec["completion"]
        prompt = ([{"role": m["role"], "content": _text(m.get("content"))} for m in p] if isinstance(p, list)
                  else [{"role": "user", "content": _text(p)}])
        ref = _text(c[-1].get("content")) if isinstance(c, list) and c else _text(c)
        return Example(prompt, ref, row)
    if "instruction" in rec and "output" in rec:
        user = rec["instruction"] + (("\n\n" + rec["input"]) if rec.get("input") else "")
        return Example([{"role": "user", "content": user}], _text(rec["output"]), row)
    if "input" in rec and "output" in rec:
        return Example([{"role": "user", "content": _text(rec["input"])}], _text(rec["output"]), row)
    raise BadInput(f"row {row}: not an SFT record (messages, prompt/completion or instruction/output)",
                   hint="Evaluation needs prompts with reference answers; preference files are not eval sets.")


def load_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    rows: list[dict] = []
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BadInput(f"{p.name} line {i + 1} is not JSON: {e}",
                                   hint="Run audit_dataset to find and repair broken rows.") from e
    out = [to_example(r, i) for i, r in enumerate(rows) if isinstance(r, dict)]
    if not out:
        raise NotFound(f"{p} holds no usable rows")
    return out[:limit] if limit else out


# --- prompts ------------------------------------------------------------------------------------------

def label_set(refs: list[str]) -> list[str] | None:
    """The answers form a label set by runtime.labels' rule (one rule for audit, split and evaluation)."""
    from runtime.labels import label_set as decide

    return decide(refs, key=normalize)


def select_shots(pool: list[Example], k: int, seed: int = 0) -> list[Example]:
    """k demonstrations: round-robin over labels when answers form a label set (so every class is shown),
    otherwise the first k after a seeded shuffle."""
    import random

    if k <= 0:
        return []
    if len(pool) < k:
        raise BadInput(f"few_shot={k} but the train file has only {len(pool)} rows")
    rng = random.Random(seed)
    order = pool[:]
    rng.shuffle(order)
    labels = label_set([e.reference for e in pool])
    if not labels:
        return order[:k]
    by = {lab: [e for e in order if normalize(e.reference) == lab] for lab in labels}
    shots: list[Example] = []
    while len(shots) < k:
        for lab in labels:
            if by[lab] and len(shots) < k:
                shots.append(by[lab].pop(0))
    return shots


def build_messages(ex: Example, *, system_prompt: str | None = None, shots: list[Example] | None = None) -> list[dict]:
    """System (the candidate's, else the example's), then the demonstrations as user/assistant turns, then the
    example's own turns."""
    msgs = [m for m in ex.prompt]
    system = [m for m in msgs if m["role"] == "system"]
    rest = [m for m in msgs if m["role"] != "system"]
    out: list[dict] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    elif system:
        out.append(system[0])
    for s in shots or []:
        out += [m for m in s.prompt if m["role"] != "system"]
        out.append({"role": "assistant", "content": s.reference})
    return out + rest


# --- metrics ------------------------------------------------------------------------------------------

_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(s: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD-style)."""
    s = (s or "").lower().translate(_PUNCT)
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def extract_label(pred: str, labels: list[str]) -> str | None:
    """The label a free-text prediction names: an exact normalised match, else the first label word in it."""
    n = normalize(pred)
    if n in labels:
        return n
    best = None
    for lab in labels:
        m = re.search(rf"\b{re.escape(lab)}\b", n)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), lab)
    return best[1] if best else None


def _lcs(a: list[str], b: list[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 on normalised word tokens."""
    p, r = normalize(pred).split(), normalize(ref).split()
    if not p and not r:
        return 1.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    prec, rec = lcs / len(p), lcs / len(r)
    return 2 * prec * rec / (prec + rec)


def macro_f1(pred_labels: list[str | None], ref_labels: list[str], labels: list[str]) -> float:
    f1s = []
    for lab in labels:
        tp = sum(1 for p, r in zip(pred_labels, ref_labels) if p == lab and r == lab)
        fp = sum(1 for p, r in zip(pred_labels, ref_labels) if p == lab and r != lab)
        fn = sum(1 for p, r in zip(pred_labels, ref_labels) if p != lab and r == lab)
        if tp + fp + fn == 0:
            continue  # label absent from this resample on both sides
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


@dataclass
class MetricData:
    """A metric over n items: `agg(idx)` is its value on the items at idx (with repeats, for the bootstrap)."""

    name: str
    n: int
    agg: Callable[[Any], float]
    higher_is_better: bool = True
    note: str | None = None


def mean_metric(name: str, values: list[float], **kw) -> MetricData:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return MetricData(name, len(arr), lambda idx: float(arr[idx].mean()), **kw)


def bootstrap_indices(n: int, b: int = 1000, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(b, n))


def ci_of(stat: Callable[[Any], float], n: int, b: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` over n items."""
    import numpy as np

    if n == 0:
        return (float("nan"), float("nan"))
    vals = np.array([stat(idx) for idx in bootstrap_indices(n, b, seed)])
    lo, hi = np.nanpercentile(vals, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def summarize(m: MetricData, b: int = 1000, seed: int = 0) -> dict:
    import numpy as np

    value = m.agg(np.arange(m.n))
    lo, hi = ci_of(m.agg, m.n, b, seed)
    out = {"value": _r(value), "n": m.n, "ci95": [_r(lo), _r(hi)], "higher_is_better": m.higher_is_better}
    if m.note:
        out["note"] = m.note
    return out


def paired_delta(a: MetricData, b_: MetricData, b: int = 1000, seed: int = 0) -> dict:
    """b - a on the same items, with a paired bootstrap CI (the same resampled items for both)."""
    import numpy as np

    if a.n != b_.n:
        raise ValueError("paired comparison needs the same items")
    full = np.arange(a.n)
    delta = b_.agg(full) - a.agg(full)
    lo, hi = ci_of(lambda idx: b_.agg(idx) - a.agg(idx), a.n, b, seed)
    return {"delta": _r(delta), "ci95": [_r(lo), _r(hi)], "n": a.n,
            "excludes_zero": bool(lo > 0 or hi < 0)}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return _r(float(np.percentile(values, q)))


def _r(x: float | None, nd: int = 4):
    if x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x))):
        return None
    return round(float(x), nd)


# --- running a prompted/adapted candidate -----------------------------------------------------------

@dataclass
class CandidateRun:
    name: str
    spec: dict
    predictions: list[str]
    completions: list[Any]
    wall_s: float
    messages: list[list[dict]]
    metrics: dict[str, MetricData] = field(default_factory=dict)
    engine: Any = None


def run_prompts(engine, messages: list[list[dict]], *, adapter: str | None, max_new_tokens: int,
                batch_size: int, json_schema: dict | None = None) -> tuple[list[Any], float]:
    from runtime.engines import ChatRequest, Sampling

    reqs = [ChatRequest(m, adapter=adapter, json_schema=json_schema) for m in messages]
    t0 = time.perf_counter()
    comps = engine.generate(reqs, Sampling(max_new_tokens=max_new_tokens), batch_size=batch_size)
    return comps, time.perf_counter() - t0


def answer_token_budget(engine, refs: list[str], floor: int = 8, cap: int = 512) -> int:
    """Enough new tokens for the longest reference plus slack."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None:
        longest = max((len(r.split()) for r in refs), default=8) * 2
    else:
        longest = max((len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs), default=8)
    return max(floor, min(cap, int(longest * 1.5) + 4))
