"""Shared evaluation machinery for `evaluate`, `recommend_strategy` and `generate_synthetic`.

Data: any SFT file `runtime.dataio` reads (messages, prompt/completion, Alpaca, ShareGPT; JSONL, CSV, Parquet,
gzip), converted to TRL's conversational format. The prompt is everything before the last assistant turn; the
reference is that turn. Metrics are computed per item and aggregated by functions of a resampled index vector, so
the same code gives the value, its 95% bootstrap CI, and paired-bootstrap CIs of differences between candidates.
No torch import at module level (numpy only).
"""

from __future__ import annotations

import math
import re
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from runtime.errors import BadInput, NotFound


# --- data ---------------------------------------------------------------------------------------------

@dataclass
class Example:
    prompt: list[dict]          # messages before the answer (may include a system message)
    reference: str              # the expected answer text
    row: int                    # 0-based row in the file (runtime.dataio's record index)


def example_of(conv: dict, row: int) -> Example:
    """An Example from a record already in TRL's conversational format (`runtime.dataio.to_conversational`)."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in conv.get("messages") or []]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None or last == 0:
        raise BadInput(f"row {row}: no assistant answer after a prompt")
    return Example(msgs[:last], msgs[last]["content"], row)


def load_examples(path: str | Path, limit: int | None = None, columns: dict[str, str] | None = None) -> list[Example]:
    """The SFT rows of any file runtime.dataio reads (JSONL, JSON, CSV, Parquet, gzip, `datasets` dirs; a text and
    label column pair; a person's `columns` mapping), as prompt + reference. Unreadable rows are an error naming
    them (an eval set with holes gives wrong numbers)."""
    from runtime import dataio
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    fmt = dataio.detect_format(p, columns=columns)
    if dataio.kind_of(fmt) != "sft":
        raise BadInput(f"{p.name} holds {fmt} records, not prompts with reference answers",
                       hint="Evaluation needs prompts with reference answers (messages, prompt/completion, Alpaca, "
                            "ShareGPT); preference files are not eval sets.")
    out: list[Example] = []
    bad: list[str] = []
    for index, rec in dataio.iter_records(p, columns=columns):
        if limit and len(out) >= limit or len(bad) >= 5:
            break
        try:
            if isinstance(rec, dataio.RecordError):
                raise BadInput(rec.message)
            conv = dataio.to_conversational(rec)
            if "messages" not in conv:
                raise BadInput(f"a {dataio.record_format(rec)} record, not a prompt with an answer")
            out.append(example_of(conv, index))
        except BadInput as e:
            bad.append(e.message if e.message.startswith(("row ", "line ")) else f"row {index}: {e.message}")
    if bad:
        raise BadInput(f"{p.name} has rows that cannot be evaluated: " + "; ".join(bad),
                       hint="Run audit_dataset to see them and clean_dataset to drop them.")
    if not out:
        raise NotFound(f"{p} holds no usable rows")
    return out


def sample_examples(examples: list[Example], n: int, *, seed: int = 0,
                    labels: list[str] | None = None) -> list[Example]:
    """A seeded sample of n examples, in file order. With labels: stratified, each label's share as in the file
    (largest remainder), so a label-sorted file gives every label its place and n >= #labels covers them all."""
    import random

    if n >= len(examples):
        return list(examples)
    rng = random.Random(seed)
    if not labels:
        return [examples[i] for i in sorted(rng.sample(range(len(examples)), n))]
    groups: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(normalize(e.reference), []).append(i)
    keys = sorted(groups)
    rng.shuffle(keys)  # a seeded order breaks ties between equal remainders
    quota = {k: n * len(groups[k]) / len(examples) for k in keys}
    take = {k: int(quota[k]) for k in keys}
    for k in sorted(keys, key=lambda k: quota[k] - take[k], reverse=True)[:n - sum(take.values())]:
        take[k] += 1
    return [examples[i] for i in sorted(i for k in keys for i in rng.sample(groups[k], take[k]))]


def label_coverage(examples: list[Example], labels: list[str] | None) -> dict | None:
    """How many of the labels the examples' references cover."""
    if not labels:
        return None
    seen = {normalize(e.reference) for e in examples}
    return {"labels": len(labels), "covered": sum(1 for lab in labels if lab in seen)}


# --- prompts ------------------------------------------------------------------------------------------

def label_set(refs: list[str]) -> list[str] | None:
    """The answers form a label set by runtime.labels' rule (one rule for audit, split and evaluation)."""
    from runtime.labels import label_set as decide

    return decide(refs, key=normalize)


def label_spellings(refs: list[str], labels: list[str]) -> list[str]:
    """Each normalised label as the data spells it most often ("card_arrival", not "cardarrival")."""
    seen: dict[str, Counter] = {}
    for r in refs:
        seen.setdefault(normalize(r), Counter())[r.strip()] += 1
    return [seen[lab].most_common(1)[0][0] if lab in seen else lab for lab in labels]


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
    if k < len(labels):  # fewer shots than labels: a seeded choice of labels, not the first k alphabetically
        labels = rng.sample(labels, len(labels))
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


def label_codes(values: list[str | None], labels: list[str]):
    """Labels as integer codes (their index in `labels`); -1 for None or a value outside the set."""
    import numpy as np

    index = {lab: i for i, lab in enumerate(labels)}
    return np.array([index.get(v, -1) if v is not None else -1 for v in values], dtype=np.int64)


def macro_f1_codes(pred, ref, n_labels: int) -> float:
    """Macro F1 over the labels present in `ref` or `pred` (codes from `label_codes`); counting with bincount
    keeps a 1,000-resample bootstrap over hundreds of labels fast."""
    import numpy as np

    hit = (pred == ref) & (ref >= 0)
    tp = np.bincount(ref[hit], minlength=n_labels)
    fp = np.bincount(pred[pred >= 0], minlength=n_labels) - tp
    fn = np.bincount(ref[ref >= 0], minlength=n_labels) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0  # a label absent from this resample on both sides does not count
    return float((2 * tp[present] / denom[present]).mean()) if present.any() else 0.0


def macro_f1(pred_labels: list[str | None], ref_labels: list[str], labels: list[str]) -> float:
    return macro_f1_codes(label_codes(pred_labels, labels), label_codes(ref_labels, labels), len(labels))


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


# --- decoding -------------------------------------------------------------------------------------------

@dataclass
class Decoding:
    """How answers are generated: `labels` constrains the output to one of the label strings (JSON schema enum,
    which every engine enforces), `first_line` stops at the first newline, `free` generates up to the budget."""

    mode: str
    choices: list[str] | None = None

    @property
    def json_schema(self) -> dict | None:
        return {"type": "string", "enum": self.choices} if self.mode == "labels" else None

    @property
    def stop(self) -> list[str] | None:
        return ["\n"] if self.mode == "first_line" else None

    def prediction(self, comp) -> str:
        """The answer a completion gives: the chosen label, the first line, or the whole text."""
        if self.mode == "labels" and isinstance(comp.parsed, str):
            return comp.parsed
        if self.mode == "first_line":
            return comp.text.split("\n", 1)[0]
        return comp.text

    def describe(self) -> dict:
        return {"mode": self.mode, **({"labels": len(self.choices)} if self.choices else {})}


def choose_decoding(mode: str, refs: list[str], choices: list[str] | None, *, json_output: bool = False) -> Decoding:
    """`auto`: labels when the references form a label set, else the first line when every reference is one
    line, else free text; free whenever the output is checked as JSON (which may span lines)."""
    from runtime.errors import BadInput

    if mode == "labels" and not choices:
        raise BadInput("decoding `labels` needs reference answers that form a label set",
                       hint="Use decoding auto, first_line or free.")
    if mode == "auto":
        single_line = all("\n" not in r.strip() for r in refs)
        mode = "free" if json_output else "labels" if choices else "first_line" if single_line else "free"
    return Decoding(mode, choices if mode == "labels" else None)


def answer_token_budget(engine, refs: list[str], floor: int = 8, cap: int = 512) -> int:
    """Enough new tokens for the longest reference plus slack (JSON quotes and the end token for labels)."""
    tok = getattr(engine, "tokenizer", None)
    if tok is None:  # a server: about 3 characters per token in English, rounded up
        longest = max((len(r) // 3 + 1 for r in refs), default=8)
    else:
        longest = max((len(tok(r, add_special_tokens=False)["input_ids"]) for r in refs), default=8)
    return max(floor, min(cap, int(longest * 1.5) + 4))


# --- running a prompted/adapted candidate -----------------------------------------------------------

FAILED_SHARE = 0.5  # a candidate with more failed requests than this is an error, not a score


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
    failed: list[int] = field(default_factory=list)   # rows whose request failed (no answer)

    @property
    def error(self) -> str | None:
        """Why this candidate has no score: most of its requests failed."""
        if len(self.failed) > FAILED_SHARE * len(self.completions):
            first = self.completions[self.failed[0]].error or "no answer"
            return f"{len(self.failed)} of {len(self.completions)} requests failed (first: {first[:300]})"
        return None


def failed_completion(exc: BaseException):
    from runtime.engines import Completion

    return Completion(text="", prompt_tokens=0, completion_tokens=0, latency_s=0.0, finish_reason="error",
                      error=f"{type(exc).__name__}: {exc}"[:500])


def run_prompts(engine, messages: list[list[dict]], *, adapter: str | None, sampling, batch_size: int,
                json_schema: dict | None = None, on_done: Callable[[int], None] | None = None) -> tuple[list, float]:
    """Generate one completion per message list, in batches of similar prompt length (less padding), calling
    `on_done(k)` after each batch. A batch whose generate raises (a server that went away, a crash) comes back
    as failed completions, counted and reported by the caller; a BadInput (a constraint that cannot compile)
    is the person's to fix and is raised."""
    from runtime.engines import ChatRequest
    from runtime.errors import BadInput

    reqs = [ChatRequest(m, adapter=adapter, json_schema=json_schema) for m in messages]
    order = sorted(range(len(reqs)), key=lambda i: sum(len(m["content"]) for m in messages[i]))
    comps: list[Any] = [None] * len(reqs)
    t0 = time.perf_counter()
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        try:
            outs = engine.generate([reqs[i] for i in chunk], sampling, batch_size=batch_size)
        except BadInput:
            raise
        except Exception as e:  # noqa: BLE001 - counted and reported per candidate
            outs = [failed_completion(e) for _ in chunk]
        for i, c in zip(chunk, outs):
            comps[i] = c
        if on_done:
            on_done(len(chunk))
    return comps, time.perf_counter() - t0
