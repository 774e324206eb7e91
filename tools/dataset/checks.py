"""The audit's checks, one small unit each, and what they share.

`analysis.analyze` reads a file once and hands every usable record, as a `Row`, to each check's `observe`; a check
keeps only what it needs and may say the row is unusable (returns False). After the last row, each check's
`finish` sees the whole file (dataset-level rules, messages, severities). Checks write into the shared
`Context.findings`. Token counting (`tokens.py`) and repeated text (`overlap.py`) are checks with their own modules.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from runtime import dataio
from runtime.content import is_placeholder, is_refusal
from runtime.labels import decide_labels, is_short
from runtime.labels import normalize_label as normalize  # what exact_duplicate compares
from runtime.pii import SEVERE_KINDS, find_pii

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
CHECKS = ("invalid_json", "schema", "role_order", "empty_turn", "too_long", "exact_duplicate", "near_duplicate",
          "contamination", "pii", "refusal", "placeholder", "label_imbalance", "preference_identical",
          "preference_empty", "length_bias")
ERROR_CHECKS = ("invalid_json", "schema", "role_order", "contamination", "preference_identical", "preference_empty")
MAX_DISTINCT_ANSWERS = 100_000  # more distinct short answers than this are not a label set (bounds memory)


class Thresholds(BaseModel):
    """Audit thresholds; every default is documented in the README's Datasets section."""

    model_config = {"extra": "forbid"}

    near_duplicate: float = Field(0.75, ge=0.3, le=1.0, description="MinHash Jaccard (word 3-grams) at or above "
                                  "which two records are near-duplicates")
    contamination_ngram: int = Field(13, ge=4, le=200, description="a train record sharing a word n-gram this long "
                                     "with an eval record is contaminated")
    contamination_similarity: float = Field(0.75, ge=0.3, le=1.0, description="or a MinHash Jaccard at least this")
    label_max_classes: int | None = Field(None, ge=2, description="an optional ceiling on the number of labels; "
                                          "short final answers that mostly repeat form a label set whatever their "
                                          "number (runtime.labels)")
    label_imbalance_ratio: float = Field(4.0, ge=1.0, description="warn when the most common label is this many "
                                         "times the least common")
    length_bias: float = Field(0.7, gt=0.5, le=1.0, description="warn when chosen is >10% longer (or shorter) than "
                                "rejected in at least this share of preference pairs")
    min_rows_for_stats: int = Field(20, ge=2, description="dataset-level checks (labels, length bias) need this many rows")

    @model_validator(mode="before")
    @classmethod
    def _nulls_mean_defaults(cls, data: Any) -> Any:
        # strict tool schemas make every field required and nullable: a null asks for the default
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


def safe_text(s: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates become \\udXXX escapes) for reports and JSON."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass
class Finding:
    check: str
    severity: str
    message: str = ""
    rows: list[int] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)

    def add(self, row: int, detail: str | None = None, line: int | None = None, max_examples: int = 3) -> None:
        self.rows.append(row)
        if line is not None:
            self.lines.append(line)
        if len(self.examples) < max_examples:
            ex: dict[str, Any] = {"row": row}
            if line is not None:
                ex["line"] = line
            if detail:
                ex["detail"] = safe_text(detail[:300])
            self.examples.append(ex)

    def as_dict(self) -> dict:
        out = {"check": self.check, "severity": self.severity, "count": len(self.rows), "rows": self.rows,
               "examples": self.examples, "message": self.message}
        if self.lines:
            out["lines"] = self.lines
        if self.details:
            out["details"] = self.details
        return out


@dataclass
class Context:
    """What every check of one audit shares: the file, its layout, the thresholds and the findings."""

    path: Path
    format: str
    kind: str                      # sft | preference | text | unknown
    thresholds: Thresholds
    columns: dict[str, str] | None
    findings: dict[str, Finding]
    valid: bytearray = field(default_factory=bytearray)  # per row: 1 when it is a usable record
    templated: bool = field(init=False)  # rows are rendered with the model's chat template (TRL's strings are not)

    def __post_init__(self) -> None:
        self.templated = self.format not in ("text", "prompt_completion", "preference")


@dataclass(slots=True)
class Row:
    """One usable record as the checks see it."""

    index: int
    rec: dict
    conv: dict                # TRL's conversational form: messages, prompt/chosen/rejected, or text
    content: str              # its non-system text (PII, words for near-duplicates)
    key: str                  # what exact duplicates compare (roles included)
    final: str | None         # the SFT answer being trained (a final assistant turn)
    render: list[dict]        # what the tokenizer counts
    chosen: str = ""          # preference: the chosen and rejected answers' text
    rejected: str = ""


class Check:
    """One audit check: `observe` each usable row, then `finish` with the whole file seen."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.f = ctx.findings

    def observe(self, row: Row) -> bool:
        """False when the row is unusable (a broken structure)."""
        return True

    def finish(self) -> None:
        pass


# --- structure ---------------------------------------------------------------------------------------

def role_problem(msgs: list[dict], *, sft_end: bool, where: str = "messages") -> str | None:
    """What is wrong with the order of these roles, if anything."""
    roles = [m["role"] for m in msgs]
    bad_role = next((r for r in roles if r not in dataio.ROLES), None)
    if bad_role is not None:
        return f"unknown role {bad_role!r}"
    later = roles[1:]
    if "system" in later or "developer" in later:
        return "a system message after the first message"
    turns = [r for r in roles if r not in ("system", "developer")]
    prev = None
    for i, r in enumerate(turns):
        if r in ("tool", "function"):
            if prev not in ("assistant", "tool", "function"):
                return f"a {r} message that does not follow an assistant message"
        elif r == prev and r in ("user", "assistant"):
            return f"two {r} messages in a row"
        elif i == 0 and r != "user" and where == "messages":
            return f"the first turn is {r}, not user"
        prev = r
    if sft_end and turns and turns[-1] != "assistant":
        return f"ends with {turns[-1]}, not assistant (nothing to learn)"
    if not turns:
        return "no user or assistant turns"
    return None


class RoleOrder(Check):
    """role_order: system only first, user and assistant alternate, SFT ends with assistant, preference prompts end
    with user and answers are assistant turns."""

    def observe(self, row: Row) -> bool:
        conv, fi = row.conv, self.f["role_order"]
        if "messages" in conv:
            problem = role_problem(conv["messages"], sft_end=True)
            if problem:
                fi.add(row.index, problem)
            return problem is None
        if "chosen" not in conv:
            return True
        ok, prompt = True, conv["prompt"]
        if prompt:
            problem = role_problem(prompt, sft_end=False, where="prompt")
            if problem is None and prompt[-1]["role"] != "user":
                problem = "the prompt ends with " + prompt[-1]["role"] + ", not user"
            if problem:
                fi.add(row.index, problem)
                ok = False
        if any(m["role"] != "assistant" for m in conv["chosen"] + conv["rejected"]):
            fi.add(row.index, "chosen/rejected hold a non-assistant message")
            ok = False
        return ok

    def finish(self) -> None:
        self.f["role_order"].message = ("messages out of order: system only first, user/assistant alternate, SFT "
                                        "ends with assistant")


class EmptyTurns(Check):
    """empty_turn: an empty message (an error when it is an assistant's) or an empty text."""

    def observe(self, row: Row) -> bool:
        conv = row.conv
        if "text" in conv:
            if not conv["text"].strip():
                self.f["empty_turn"].add(row.index, "text is empty")
                return False
            return True
        msgs, where = (conv["messages"], "messages") if "messages" in conv else (conv["prompt"], "prompt")
        fi = self.f["empty_turn"]
        for i, m in enumerate(msgs):
            if not m["content"].strip() and not m.get("tool_calls"):
                fi.add(row.index, f"{where}[{i}] ({m['role']}) is empty")
                if m["role"] == "assistant":
                    fi.details["empty_assistant_rows"] = fi.details.get("empty_assistant_rows", 0) + 1
                break
        return True

    def finish(self) -> None:
        fi = self.f["empty_turn"]
        fi.message = "records with an empty message or text"
        if fi.details.get("empty_assistant_rows"):
            fi.severity = "error"


class PreferencePairs(Check):
    """preference_empty, preference_identical, and length_bias over the whole file."""

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.pairs = 0
        self.longer: list[int] = []
        self.shorter: list[int] = []

    def observe(self, row: Row) -> bool:
        c, r = row.chosen, row.rejected
        if not c.strip() or not r.strip():
            self.f["preference_empty"].add(row.index, "chosen is empty" if not c.strip() else "rejected is empty")
            return False
        if normalize(c) == normalize(r):
            self.f["preference_identical"].add(row.index, f"chosen == rejected: {c[:80]!r}")
            return True
        self.pairs += 1
        if len(c) > 1.1 * len(r):
            self.longer.append(row.index)
        elif len(r) > 1.1 * len(c):
            self.shorter.append(row.index)
        return True

    def finish(self) -> None:
        self.f["preference_identical"].message = "pairs whose chosen and rejected are the same (no signal)"
        self.f["preference_empty"].message = "pairs with an empty chosen or rejected answer"
        th = self.ctx.thresholds
        if self.pairs < th.min_rows_for_stats:
            return
        total = self.pairs + len(self.f["preference_identical"].rows)
        share_long, share_short = len(self.longer) / max(total, 1), len(self.shorter) / max(total, 1)
        if max(share_long, share_short) >= th.length_bias:
            fb = self.f["length_bias"]
            direction = "longer" if share_long >= share_short else "shorter"
            for r in (self.longer if direction == "longer" else self.shorter):
                fb.add(r, f"chosen is {direction} than rejected")
            fb.message = (f"chosen is >10% {direction} than rejected in {max(share_long, share_short):.0%} of pairs: "
                          "a reward for length, not quality")
            fb.details = {"chosen_longer": share_long, "chosen_shorter": share_short}


# --- content -----------------------------------------------------------------------------------------

class Pii(Check):
    """pii: personal data and secrets (runtime.pii); an error for secrets, cards and SSNs."""

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.rows: set[int] = set()
        self.kinds: Counter = Counter()

    def observe(self, row: Row) -> bool:
        for kind, start, end in find_pii(row.content):
            if row.index not in self.rows:
                self.rows.add(row.index)
                self.f["pii"].add(row.index, f"{kind}: {row.content[start:end][:4]}…")
            self.kinds[kind] += 1
        return True

    def finish(self) -> None:
        fi = self.f["pii"]
        fi.message = "personal data or secrets: " + ", ".join(f"{k} x{v}" for k, v in self.kinds.most_common())
        if self.kinds.keys() & set(SEVERE_KINDS):
            fi.severity = "error"
        elif set(self.kinds) == {"card_test"}:
            fi.severity = "info"  # documented test card numbers (tutorial data), never redacted
        if fi.rows:
            fi.details = {"kinds": dict(self.kinds)}


class Refusals(Check):
    """refusal: the answer being trained opens by refusing (preference: the chosen one; wanted in harmlessness
    data, so info there)."""

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.pairs: Counter = Counter()  # chosen / rejected / both refuse (preference data)

    def observe(self, row: Row) -> bool:
        if "chosen" not in row.conv:
            if row.final is not None and is_refusal(row.final):
                self.f["refusal"].add(row.index, row.final[:160])
            return True
        c_final, r_final = _last(row.conv["chosen"]), _last(row.conv["rejected"])
        c_ref, r_ref = is_refusal(c_final), is_refusal(r_final)
        if c_ref or r_ref:
            self.pairs["both" if c_ref and r_ref else "chosen" if c_ref else "rejected"] += 1
        if c_ref:
            self.f["refusal"].add(row.index, "chosen: " + c_final[:160] + ("" if r_ref else " | rejected complies"))
        return True

    def finish(self) -> None:
        fi = self.f["refusal"]
        if self.ctx.kind != "preference":
            fi.message = "final answers that open by refusing (the model would learn to refuse)"
            return
        fi.message = (f"chosen answers that refuse ({self.pairs['chosen']} of them against a complying rejected "
                      f"answer): in harmlessness data refusing is the behaviour wanted; elsewhere the model would "
                      f"learn to refuse")
        if fi.rows:
            fi.severity = "info"
            fi.details = {"pairs": dict(self.pairs)}


def _last(msgs: list[dict]) -> str:
    return msgs[-1]["content"] if msgs else ""


# --- labels and placeholders -------------------------------------------------------------------------

class Labels(Check):
    """label_imbalance: short final answers that form a label set (runtime.labels) with a rare label."""

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        self.possible = ctx.kind == "sft"
        self.counts: Counter = Counter()
        self.index: dict[str, int] = {}
        self.of_row = array("i")      # row -> index into `labels`, -1 none
        self.labels: list[str] = []   # the label set, once decided
        self.summary: dict[str, int] | None = None

    def observe(self, row: Row) -> bool:
        if not self.possible or row.final is None:
            return True
        lab = normalize(row.final)
        if is_short(lab) and len(self.index) < MAX_DISTINCT_ANSWERS:
            if len(self.of_row) < row.index:
                self.of_row.extend([-1] * (row.index - len(self.of_row)))
            self.of_row.append(self.index.setdefault(lab, len(self.index)))
            self.counts[lab] += 1
        else:
            self.possible = False
        return True

    def finish(self) -> None:
        n, th, counts = len(self.ctx.valid), self.ctx.thresholds, self.counts
        self.of_row.extend([-1] * (n - len(self.of_row)))
        if not (self.possible and sum(counts.values()) >= max(th.min_rows_for_stats, 0.9 * sum(self.ctx.valid))
                and decide_labels(counts, th.label_max_classes)):
            self.of_row = array("i", [-1]) * n
            return
        self.labels = [lab for lab, _ in sorted(self.index.items(), key=lambda kv: kv[1])]
        self.summary = dict(counts.most_common())
        (top, top_n), (low, low_n) = counts.most_common(1)[0], counts.most_common()[-1]
        if top_n < th.label_imbalance_ratio * low_n:
            return
        fi = self.f["label_imbalance"]
        fi.message = (f"answers form {len(counts)} labels; {top!r} has {top_n} rows, {low!r} only {low_n} "
                      f"({top_n / low_n:.1f}x)")
        rare = {self.index[lab] for lab, c in counts.items() if c * th.label_imbalance_ratio <= top_n}
        for r in range(n):
            if self.of_row[r] in rare:
                fi.add(r, f"rare label {self.labels[self.of_row[r]]!r}")
        fi.details = {"labels": self.summary}


class Placeholders(Check):
    """placeholder: answers that stand for no answer ("<nooutput>", "N/A"), unless they are one of the labels."""

    def __init__(self, ctx: Context, labels: Labels):
        super().__init__(ctx)
        self.labels = labels
        self.values: dict[int, str] = {}  # row -> its placeholder answer

    def observe(self, row: Row) -> bool:
        answer = _last(row.conv["chosen"]) if "chosen" in row.conv else row.final
        if answer is not None and answer.strip() and is_placeholder(answer):
            self.values[row.index] = normalize(answer)
        return True

    def finish(self) -> None:
        fi = self.f["placeholder"]
        fi.message = "answers that stand for no answer (\"<nooutput>\", \"N/A\", ...): the model would learn to write them"
        summary = self.labels.summary
        for r, value in self.values.items():
            if not summary or value not in summary:  # "none" can be a real class
                fi.add(r, value)
