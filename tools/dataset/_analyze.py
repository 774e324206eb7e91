"""The audit engine shared by audit_dataset, clean_dataset and split_dataset.

One streaming pass over the file keeps only compact per-row facts (hashes, word ids, lengths, flags), never the
records themselves; token counts, MinHash signatures and LSH run batched at the end. See README "## Datasets".
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, model_validator

from runtime import dataio
from runtime.content import SEVERE_KINDS, find_pii, is_placeholder, is_refusal, redact_pii
from runtime.errors import BadInput
from runtime.labels import decide_labels, is_short
from runtime.labels import normalize_label as normalize  # what exact_duplicate compares

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}
CHECKS = ("invalid_json", "schema", "role_order", "empty_turn", "too_long", "exact_duplicate", "near_duplicate",
          "contamination", "pii", "refusal", "placeholder", "label_imbalance", "preference_identical",
          "preference_empty", "length_bias")
NUM_PERM, NUM_BANDS = 128, 32
SHINGLE = 3
CHUNK = 2048
MAX_DISTINCT_ANSWERS = 100_000  # more distinct short answers than this are not a label set (bounds memory)
MAX_WORDS = 20_000  # near-duplicate and contamination checks read at most this many words of one record


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


# --- text helpers ------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def safe_text(s: str) -> str:
    """Text that encodes as UTF-8 (lone surrogates become \\udXXX escapes) for reports and JSON."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")


# --- the analysis ------------------------------------------------------------------------------------

@dataclass
class RowFacts:
    """Compact per-row facts kept for the whole file (arrays, not records)."""

    n: int = 0
    valid: bytearray = field(default_factory=bytearray)       # 1 when the row is a usable record
    offsets: array = field(default_factory=lambda: array("q"))  # JSONL byte offsets (-1 otherwise)
    word_ids: array = field(default_factory=lambda: array("I"))
    word_offsets: array = field(default_factory=lambda: array("q", [0]))
    label: array = field(default_factory=lambda: array("i"))  # index into labels, -1 none


@dataclass
class Analysis:
    path: Path
    format: str
    kind: str
    rows: int
    findings: dict[str, Finding]
    summary: dict
    facts: RowFacts
    dup_of: dict[int, int]            # exact or near duplicate row -> first row of its cluster
    exact_dups: set[int]
    near_dups: set[int]
    contaminated: set[int]
    too_long: dict[int, dict]         # row -> {"tokens", "prompt_tokens"}
    pii_rows: set[int]
    labels: list[str]
    max_tokens: int


class Tokenizing:
    """Token counts after the chat template, exact where they matter and cheap elsewhere.

    A row whose rendered text has at most ``max_tokens - slack`` UTF-8 bytes cannot exceed ``max_tokens`` (each
    token of a byte-level or byte-fallback tokenizer covers at least one byte) and is not tokenized; all others are,
    with the fast tokenizer's batch encoder. A seeded reservoir of rows gives the length distribution."""

    def __init__(self, model: str, max_tokens: int | None, exact: bool):
        from runtime.models import context_length, load_tokenizer

        self.tok = load_tokenizer(model)
        self.backend = getattr(self.tok, "backend_tokenizer", None)
        self.max_tokens = int(max_tokens or context_length(model))
        self.has_template = bool(getattr(self.tok, "chat_template", None))
        norm = repr(self.backend.normalizer) if self.backend is not None else "slow"
        self.bound_ok = not exact and self.backend is not None and not any(
            k in norm for k in ("NFKC", "NFKD", "Precompiled", "Replace", "slow"))
        self.reservoir: list[str] = []
        self.seen = 0
        self.rng = random.Random(0)
        self.counted: dict[int, int] = {}
        self.pending: list[tuple[int, str]] = []
        self.lower_bound: set[int] = set()
        self._overheads: dict[tuple, int | None] = {}
        # no token is longer than this many bytes: a row with more than max_tokens * this is too long for sure,
        # and is not tokenized (a 50 MB line would take minutes)
        try:
            self.max_piece = max(len(t.encode("utf-8")) for t in self.tok.get_vocab()) or 1
        except Exception:  # noqa: BLE001
            self.max_piece = 1 << 20

    def render(self, convs: list[list[dict]]) -> list[str | Exception]:
        if not self.has_template:
            return ["\n".join(f"{m['role']}: {m['content']}" for m in c) for c in convs]
        try:
            return list(self.tok.apply_chat_template(convs, tokenize=False))
        except Exception:  # noqa: BLE001 - find the rows the template rejects, one by one
            out: list[str | Exception] = []
            for c in convs:
                try:
                    out.append(self.tok.apply_chat_template(c, tokenize=False))
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out

    def count(self, texts: list[str]) -> list[int]:
        if self.backend is not None:
            return [len(e.ids) for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        return [len(self.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def _sample(self, item: tuple) -> None:
        self.seen += 1
        if len(self.reservoir) < 2000:
            self.reservoir.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < 2000:
                self.reservoir[j] = item

    def _overhead(self, conv: list[dict]) -> int | None:
        """Bytes the template adds around a conversation with these roles, if it adds content verbatim."""
        sig = tuple(m["role"] for m in conv)
        if sig not in self._overheads:
            try:
                empty = self.tok.apply_chat_template([{"role": r, "content": ""} for r in sig], tokenize=False)
                probe = self.tok.apply_chat_template([{"role": r, "content": "xxxxxxx"} for r in sig], tokenize=False)
                linear = len(probe.encode()) - len(empty.encode()) == 7 * len(sig)
                self._overheads[sig] = len(empty.encode()) if linear else None
            except Exception:  # noqa: BLE001 - the template rejects these roles: render each row to say so
                self._overheads[sig] = None
        return self._overheads[sig]

    def needs_render(self, row: int, conv: list[dict], templated: bool) -> bool:
        """False when the row provably fits (it is then only sampled for the length distribution)."""
        if not self.bound_ok:
            return True
        if templated and self.has_template:
            if any(m.get("tool_calls") for m in conv):
                return True
            overhead = self._overhead(conv)
            if overhead is None:
                return True
        else:
            overhead = 16 * len(conv)
        size = overhead + 8 + 2 * len(conv)
        for m in conv:
            c = m["content"]
            size += len(c) if c.isascii() else len(c.encode("utf-8"))
        if size > self.max_tokens:
            return True
        self._sample(("conv", conv) if templated and self.has_template else ("text", "".join(
            m["content"] for m in conv)))
        return False

    def observe(self, row: int, text: str, n_segments: int) -> None:
        if len(text) <= 200_000:
            self._sample(("text", text))
        nbytes = len(text.encode("utf-8"))
        if nbytes > self.max_tokens * self.max_piece:
            self.counted[row] = -(-nbytes // self.max_piece)
            self.lower_bound.add(row)
            return
        self.pending.append((row, text))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            rows, texts = zip(*self.pending)
            self.counted.update(zip(rows, self.count(list(texts))))
            self.pending = []

    def stats(self) -> dict:
        self.flush()
        if not self.bound_ok:
            lengths = sorted(self.counted.values())
        else:
            convs = [x for k, x in self.reservoir if k == "conv"]
            texts = [x for k, x in self.reservoir if k == "text"] + [
                t for t in (self.render(convs) if convs else []) if isinstance(t, str)]
            lengths = sorted(self.count(texts)) if texts else []
        if not lengths:
            return {"max_tokens": self.max_tokens}
        pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
        return {"max_tokens": self.max_tokens, "p50": pick(0.5), "p95": pick(0.95), "max_sampled": lengths[-1],
                "counted": "all rows" if not self.bound_ok else f"a seeded sample of {len(lengths)} rows; "
                "rows that could exceed max_tokens counted exactly",
                "over_limit": sum(1 for v in self.counted.values() if v > self.max_tokens)}


def _check_messages(msgs: list[dict], f: dict[str, Finding], row: int, *, sft_end: bool,
                    where: str = "messages") -> bool:
    """role_order and empty_turn for one message list; returns False when a structural problem was found."""
    ok = True
    roles = [m["role"] for m in msgs]
    bad_role = next((r for r in roles if r not in dataio.ROLES), None)
    problem = None
    if bad_role is not None:
        problem = f"unknown role {bad_role!r}"
    elif any(r in ("system", "developer") for r in roles[1:]):
        problem = "a system message after the first message"
    else:
        turns = [r for r in roles if r not in ("system", "developer")]
        prev = None
        for i, r in enumerate(turns):
            if r in ("tool", "function"):
                if prev not in ("assistant", "tool", "function"):
                    problem = f"a {r} message that does not follow an assistant message"
                    break
            elif r == prev and r in ("user", "assistant"):
                problem = f"two {r} messages in a row"
                break
            elif i == 0 and r != "user" and where == "messages":
                problem = f"the first turn is {r}, not user"
                break
            prev = r
        if problem is None and sft_end and turns and turns[-1] != "assistant":
            problem = f"ends with {turns[-1]}, not assistant (nothing to learn)"
        if problem is None and not turns:
            problem = "no user or assistant turns"
    if problem:
        f["role_order"].add(row, problem)
        ok = False
    for i, m in enumerate(msgs):
        if not m["content"].strip() and not m.get("tool_calls"):
            f["empty_turn"].add(row, f"{where}[{i}] ({m['role']}) is empty")
            if m["role"] == "assistant":
                f["empty_turn"].details["empty_assistant_rows"] = f["empty_turn"].details.get(
                    "empty_assistant_rows", 0) + 1
            break
    return ok


def analyze(path: Path, *, eval_path: Path | None = None, model: str = "default", max_tokens: int | None = None,
            thresholds: Thresholds | None = None, exact_token_counts: bool = False, check_tokens: bool = True,
            columns: dict[str, str] | None = None) -> Analysis:
    """Run every check over ``path`` (and ``eval_path`` for contamination). Streams; see module docstring.
    ``columns`` maps the file's column names onto TRL's fields (``runtime.dataio.apply_columns``)."""
    th = thresholds or Thresholds()
    t0 = time.perf_counter()
    kind_file = dataio.file_kind(path)
    seekable = kind_file == "jsonl" and not dataio.is_gzip(path)
    fmt = dataio.detect_format(path, columns=columns)
    kind = dataio.kind_of(fmt)
    templated = fmt not in ("text", "prompt_completion", "preference")
    f: dict[str, Finding] = {c: Finding(c, "warning") for c in CHECKS}
    for c in ("invalid_json", "schema", "role_order", "contamination", "preference_identical", "preference_empty"):
        f[c].severity = "error"
    tk = Tokenizing(model, max_tokens, exact_token_counts) if check_tokens and kind != "unknown" else None
    facts = RowFacts()
    vocab: dict[str, int] = {}
    exact_first: dict[bytes, int] = {}
    exact_dups: set[int] = set()
    dup_of: dict[int, int] = {}
    pii_rows: set[int] = set()
    pii_kinds: Counter = Counter()
    label_counts: Counter = Counter()
    label_index: dict[str, int] = {}
    labels_possible = kind == "sft"
    placeholders: dict[int, str] = {}   # row -> its placeholder answer
    refusals = Counter()                # chosen / rejected / both (preference data)
    pref_longer = pref_shorter = pref_pairs = 0
    pref_long_rows: list[int] = []
    pref_short_rows: list[int] = []
    chunk_rows: list[int] = []
    chunk_convs: list[list[dict]] = []
    chunk_meta: list[int] = []
    template_errors: list[tuple[int, str]] = []

    def flush_chunk() -> None:
        if tk is None or not chunk_convs:
            return
        rendered = tk.render(chunk_convs) if templated else [None] * len(chunk_convs)
        for row, conv, text, nseg in zip(chunk_rows, chunk_convs, rendered, chunk_meta):
            if text is None:
                text = "".join(m["content"] for m in conv)
            if isinstance(text, Exception):
                f["schema"].add(row, f"the model's chat template rejects this row: {text}")
                facts.valid[row] = 0
                continue
            tk.observe(row, text, nseg)
        chunk_rows.clear(), chunk_convs.clear(), chunk_meta.clear()

    def add_words(row: int, text: str) -> None:
        words = text.split(maxsplit=MAX_WORDS)[:MAX_WORDS]
        ids = [vocab.setdefault(w, len(vocab)) for w in words]
        facts.word_ids.extend(ids)
        facts.word_offsets.append(len(facts.word_ids))

    items = dataio.iter_records(path, with_offsets=seekable, columns=columns)
    for item in items:
        row, rec = item[0], item[1]
        facts.n += 1
        facts.offsets.append(item[2] if len(item) > 2 else -1)
        facts.valid.append(0)
        facts.label.append(-1)
        if isinstance(rec, dataio.RecordError):
            if rec.kind in ("not_object", "schema"):
                f["schema"].add(row, rec.message, rec.line)
            else:
                f["invalid_json"].add(row, rec.message + (f" | {rec.preview}" if rec.preview else ""), rec.line)
            facts.word_offsets.append(len(facts.word_ids))
            continue
        rfmt = dataio.record_format(rec)
        if rfmt != fmt and not (fmt == "conversational" and rfmt == "openai_chat") and not (
                fmt == "openai_chat" and rfmt == "conversational"):
            f["schema"].add(row, f"fields {sorted(rec)[:6]} look like {rfmt}, the file is {fmt}")
            facts.word_offsets.append(len(facts.word_ids))
            continue
        try:
            conv = dataio.to_conversational(rec, rfmt)
        except BadInput as e:
            f["schema"].add(row, e.message)
            facts.word_offsets.append(len(facts.word_ids))
            continue
        except Exception as e:  # noqa: BLE001 - odd types inside a record are a schema problem, not a crash
            f["schema"].add(row, f"{type(e).__name__}: {e}")
            facts.word_offsets.append(len(facts.word_ids))
            continue
        ok = True
        if "messages" in conv:
            msgs = conv["messages"]
            ok = _check_messages(msgs, f, row, sft_end=True)
            content_parts = [m["content"] for m in msgs if m["role"] not in ("system", "developer")]
            full_key = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in msgs)
            final = msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" else None
            if final is not None and is_refusal(final):  # the answer being trained, not earlier turns
                f["refusal"].add(row, final[:160])
            render_conv, nseg = msgs, len(msgs)
            if not templated:
                render_conv = [{"role": "", "content": rec.get("prompt", "")}, {"role": "", "content": rec.get(
                    "completion", "")}]
        elif "chosen" in conv:
            prompt, chosen, rejected = conv["prompt"], conv["chosen"], conv["rejected"]
            if prompt:
                ok = _check_messages(prompt, f, row, sft_end=False, where="prompt")
                if ok and prompt[-1]["role"] != "user":
                    f["role_order"].add(row, "the prompt ends with " + prompt[-1]["role"] + ", not user")
                    ok = False
            c_text = "".join(m["content"] for m in chosen)
            r_text = "".join(m["content"] for m in rejected)
            if not c_text.strip() or not r_text.strip():
                f["preference_empty"].add(row, "chosen is empty" if not c_text.strip() else "rejected is empty")
                ok = False
            elif normalize(c_text) == normalize(r_text):
                f["preference_identical"].add(row, f"chosen == rejected: {c_text[:80]!r}")
            else:
                pref_pairs += 1
                if len(c_text) > 1.1 * len(r_text):
                    pref_longer += 1
                    pref_long_rows.append(row)
                elif len(r_text) > 1.1 * len(c_text):
                    pref_shorter += 1
                    pref_short_rows.append(row)
            if any(m["role"] != "assistant" for m in chosen + rejected):
                f["role_order"].add(row, "chosen/rejected hold a non-assistant message")
                ok = False
            content_parts = [m["content"] for m in prompt if m["role"] not in ("system", "developer")] + [
                c_text, r_text]
            full_key = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in prompt) + "\x1d" + c_text + \
                "\x1d" + r_text
            final = None
            c_final, r_final = (chosen[-1]["content"] if chosen else ""), (rejected[-1]["content"] if rejected else "")
            c_ref, r_ref = is_refusal(c_final), is_refusal(r_final)
            if c_ref or r_ref:
                refusals["both" if c_ref and r_ref else "chosen" if c_ref else "rejected"] += 1
            if c_ref:  # the answer being reinforced refuses
                f["refusal"].add(row, "chosen: " + c_final[:160] + ("" if r_ref else " | rejected complies"))
            if is_placeholder(c_final) and c_final.strip():
                placeholders[row] = normalize(c_final)
            longer = chosen if len(c_text) >= len(r_text) else rejected
            render_conv, nseg = prompt + longer, len(prompt) + len(longer)
            if not templated:
                render_conv = [{"role": "", "content": rec.get("prompt") or ""}, {"role": "", "content": max(
                    rec["chosen"], rec["rejected"], key=len)}]
        else:
            text = conv["text"]
            if not text.strip():
                f["empty_turn"].add(row, "text is empty")
                ok = False
            content_parts, full_key, final = [text], text, None
            render_conv, nseg = [{"role": "", "content": text}], 1
        joined = "\n".join(content_parts)
        norm = normalize(joined)
        key = hashlib.blake2b(normalize(full_key).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = exact_first.setdefault(key, row)
        if first != row:
            exact_dups.add(row)
            dup_of[row] = first
            f["exact_duplicate"].add(row, f"same as row {first}")
        add_words(row, norm if first == row else "")
        for kind_, start, end in find_pii(joined):
            if row not in pii_rows:
                pii_rows.add(row)
                f["pii"].add(row, f"{kind_}: {joined[start:end][:4]}…")
            pii_kinds[kind_] += 1
        if final is not None and final.strip() and is_placeholder(final):
            placeholders[row] = normalize(final)
        if labels_possible and final is not None:
            lab = normalize(final)
            if is_short(lab) and len(label_index) < MAX_DISTINCT_ANSWERS:
                facts.label[row] = label_index.setdefault(lab, len(label_index))
                label_counts[lab] += 1
            else:
                labels_possible = False
        facts.valid[row] = 1 if ok else 0
        if tk is not None and tk.needs_render(row, render_conv, templated):
            chunk_rows.append(row)
            chunk_convs.append(render_conv)
            chunk_meta.append(nseg)
            if len(chunk_convs) >= CHUNK:
                flush_chunk()
    flush_chunk()
    del template_errors
    n = facts.n
    if n == 0:
        raise BadInput(f"{path.name} holds no records (it is empty)", hint="Check the file; nothing to audit.")
    t_read = time.perf_counter() - t0

    # --- tokens ------------------------------------------------------------------------------------
    too_long: dict[int, dict] = {}
    token_stats: dict = {}
    if tk is not None:
        tk.flush()
        token_stats = tk.stats()
        over = sorted(r for r, c in tk.counted.items() if c > tk.max_tokens)
        if over:
            prompt_tokens = _prompt_tokens(path, over, tk, templated, columns)
            lost = 0
            for r in over:
                p = prompt_tokens.get(r)
                too_long[r] = {"tokens": tk.counted[r], "prompt_tokens": p}
                cut = "all assistant tokens" if p is not None and p >= tk.max_tokens else "part of the answer"
                lost += p is not None and p >= tk.max_tokens
                at_least = "at least " if r in tk.lower_bound else ""
                f["too_long"].add(r, f"{at_least}{tk.counted[r]} tokens > {tk.max_tokens}; truncation would cut {cut}")
            f["too_long"].details = {"max_tokens": tk.max_tokens, "rows_losing_all_assistant_tokens": lost}
            if lost:
                f["too_long"].severity = "error"
    t_tok = time.perf_counter() - t0 - t_read

    # --- near duplicates and contamination ------------------------------------------------------------
    near_dups: set[int] = set()
    contaminated: set[int] = set()
    eval_info: dict = {}
    ev_words = ev_offsets = None
    if eval_path is not None:
        ev_words, ev_offsets, eval_info = _eval_words(eval_path, vocab, columns)
    clusters, cross = _near_duplicates(facts, th, ev_words, ev_offsets)
    for root, members in clusters.items():
        for r in members[1:]:
            if r not in exact_dups:
                near_dups.add(r)
                dup_of[r] = members[0]
    for r in sorted(near_dups):
        f["near_duplicate"].add(r, f"similar to row {dup_of[r]}")
    if eval_path is not None:
        ngram_hits = _ngram_overlap(facts, ev_words, ev_offsets, th.contamination_ngram)
        for r in sorted(set(ngram_hits) | set(cross)):
            contaminated.add(r)
            why = f"shares a {th.contamination_ngram}-word sequence with eval row {ngram_hits[r]}" if r in ngram_hits \
                else f"near-duplicate of eval row {cross[r]}"
            f["contamination"].add(r, why)
        # exact copies of a contaminated row are contaminated too
        for r, first in dup_of.items():
            if first in contaminated and r not in contaminated and r in exact_dups:
                contaminated.add(r)
                f["contamination"].add(r, f"copy of contaminated row {first}")
        f["contamination"].rows.sort()
        f["contamination"].details = {"eval_path": str(eval_path), **eval_info}
    t_dup = time.perf_counter() - t0 - t_read - t_tok

    # --- dataset-level checks ------------------------------------------------------------------------
    labels = [lab for lab, _ in sorted(label_index.items(), key=lambda kv: kv[1])]
    valid_rows = sum(facts.valid)
    label_summary = None
    if labels_possible and sum(label_counts.values()) >= max(th.min_rows_for_stats, 0.9 * valid_rows) \
            and decide_labels(label_counts, th.label_max_classes):
        label_summary = dict(label_counts.most_common())
        (top, top_n), (low, low_n) = label_counts.most_common(1)[0], label_counts.most_common()[-1]
        if top_n >= th.label_imbalance_ratio * low_n:
            fi = f["label_imbalance"]
            fi.message = (f"answers form {len(label_counts)} labels; {top!r} has {top_n} rows, {low!r} only {low_n} "
                          f"({top_n / low_n:.1f}x)")
            rare = {label_index[lab] for lab, c in label_counts.items() if c * th.label_imbalance_ratio <= top_n}
            for r in range(n):
                if facts.label[r] in rare:
                    fi.add(r, f"rare label {labels[facts.label[r]]!r}")
            fi.details = {"labels": label_summary}
    else:
        for r in range(n):
            facts.label[r] = -1
        labels = []
    for r, value in placeholders.items():
        if not label_summary or value not in label_summary:  # "none" can be a real class
            f["placeholder"].add(r, value)
    if kind == "preference" and pref_pairs + 0 >= th.min_rows_for_stats:
        total = pref_pairs + len(f["preference_identical"].rows)
        share_long, share_short = pref_longer / max(total, 1), pref_shorter / max(total, 1)
        if max(share_long, share_short) >= th.length_bias:
            fb = f["length_bias"]
            direction = "longer" if share_long >= share_short else "shorter"
            for r in (pref_long_rows if direction == "longer" else pref_short_rows):
                fb.add(r, f"chosen is {direction} than rejected")
            fb.message = (f"chosen is >10% {direction} than rejected in {max(share_long, share_short):.0%} of pairs: "
                          "a reward for length, not quality")
            fb.details = {"chosen_longer": share_long, "chosen_shorter": share_short}

    _add_previews(path, seekable, facts, f, columns)

    # --- messages ------------------------------------------------------------------------------------
    msg = {
        "invalid_json": "records that are not valid JSON (or not UTF-8); line numbers in `lines`",
        "schema": f"records that do not fit the file's format ({fmt}) or have wrong types",
        "role_order": "messages out of order: system only first, user/assistant alternate, SFT ends with assistant",
        "empty_turn": "records with an empty message or text",
        "too_long": f"records over {tk.max_tokens if tk else max_tokens} tokens after the chat template",
        "exact_duplicate": "copies of an earlier record (after NFKC, case folding, whitespace collapsing)",
        "near_duplicate": f"near-copies of an earlier record (MinHash Jaccard >= {th.near_duplicate} on word "
                          f"{SHINGLE}-grams)",
        "contamination": "train records that overlap the eval set: evaluation on it would be inflated",
        "pii": "personal data or secrets: " + ", ".join(f"{k} x{v}" for k, v in pii_kinds.most_common()),
        "refusal": "final answers that open by refusing (the model would learn to refuse)" if kind != "preference"
                   else f"chosen answers that refuse ({refusals['chosen']} of them against a complying rejected "
                   f"answer): in harmlessness data refusing is the behaviour wanted; elsewhere the model would "
                   f"learn to refuse",
        "placeholder": "answers that stand for no answer (\"<nooutput>\", \"N/A\", ...): the model would learn to "
                       "write them",
        "preference_identical": "pairs whose chosen and rejected are the same (no signal)",
        "preference_empty": "pairs with an empty chosen or rejected answer",
    }
    for c, m in msg.items():
        if not f[c].message:
            f[c].message = m
    if pii_kinds.keys() & set(SEVERE_KINDS):
        f["pii"].severity = "error"
    elif set(pii_kinds) == {"card_test"}:
        f["pii"].severity = "info"  # documented test card numbers (tutorial data), never redacted
    if f["pii"].rows:
        f["pii"].details = {"kinds": dict(pii_kinds)}
    if kind == "preference" and f["refusal"].rows:
        f["refusal"].severity = "info"
        f["refusal"].details = {"pairs": dict(refusals)}
    if f["empty_turn"].details.get("empty_assistant_rows"):
        f["empty_turn"].severity = "error"
    if f["near_duplicate"].rows:
        f["near_duplicate"].details = {"clusters": sum(1 for m in clusters.values() if len(m) > 1)}
    summary = {
        "rows": n, "valid_rows": valid_rows, "format": fmt, "kind": kind, "file_type": kind_file,
        "model": model, "tokens": token_stats, "labels": label_summary,
        "timing_s": {"read_and_row_checks": round(t_read, 3), "tokens": round(t_tok, 3),
                     "minhash_lsh": round(t_dup, 3), "total": round(time.perf_counter() - t0, 3)},
    }
    if eval_path is not None:
        summary["eval"] = eval_info
    return Analysis(path, fmt, kind, n, f, summary, facts, dup_of, exact_dups, near_dups, contaminated,
                    too_long, pii_rows, labels, tk.max_tokens if tk else int(max_tokens or 0))


def _prompt_tokens(path: Path, rows: list[int], tk: Tokenizing, templated: bool, columns: dict[str, str] | None
                   ) -> dict[int, int]:
    """Tokens before the last assistant turn (with the generation prompt) for the given rows."""
    recs = fetch_records(path, rows, columns)
    texts, keep = [], []
    for r in rows:
        rec = recs.get(r)
        if not isinstance(rec, dict):
            continue
        try:
            conv = dataio.to_conversational(rec, dataio.record_format(rec))
        except Exception:  # noqa: BLE001
            continue
        if "messages" in conv:
            msgs = conv["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                continue
            prompt = msgs[:last]
        elif "chosen" in conv:
            prompt = conv["prompt"]
        else:
            texts.append("")
            keep.append(r)
            continue
        if templated and tk.has_template:
            try:
                texts.append(tk.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
            except Exception:  # noqa: BLE001
                continue
        else:
            texts.append("".join(m["content"] for m in prompt))
        keep.append(r)
    out = {}
    small = [(r, t) for r, t in zip(keep, texts) if len(t.encode("utf-8")) <= tk.max_tokens * tk.max_piece]
    for r, t in zip(keep, texts):
        if len(t.encode("utf-8")) > tk.max_tokens * tk.max_piece:
            out[r] = -(-len(t.encode("utf-8")) // tk.max_piece)
    if small:
        out.update(zip([r for r, _ in small], tk.count([t for _, t in small])))
    return out


def preview(rec: Any, limit: int = 200) -> str:
    """A short one-line view of a record for reports."""
    try:
        conv = dataio.to_conversational(rec)
        if "messages" in conv:
            parts = [f"{m['role']}: {m['content'][:limit]}" for m in conv["messages"]]
        elif "chosen" in conv:
            parts = [f"{m['role']}: {m['content'][:limit]}" for m in conv["prompt"]] + [
                "chosen: " + "".join(m["content"][:limit] for m in conv["chosen"]),
                "rejected: " + "".join(m["content"][:limit] for m in conv["rejected"])]
        else:
            parts = [conv["text"][:limit]]
        text = " | ".join(parts)
    except Exception:  # noqa: BLE001 - a record that does not convert is shown as JSON
        text = json.dumps(rec, ensure_ascii=False, default=str)[:limit * 2]
    text = redact_pii(safe_text(" ".join(text.split())))[0]  # reports never repeat the personal data they warn about
    return text if len(text) <= limit else text[:limit] + "…"


def _add_previews(path: Path, seekable: bool, facts: RowFacts, findings: dict[str, Finding],
                  columns: dict[str, str] | None) -> None:
    rows = {ex["row"] for fi in findings.values() if fi.check != "invalid_json" for ex in fi.examples}
    if not rows:
        return
    if seekable:
        recs = dataio.read_jsonl_at(path, {r: facts.offsets[r] for r in rows}, columns)
    else:
        recs = fetch_records(path, sorted(rows), columns)
    for fi in findings.values():
        for ex in fi.examples:
            rec = recs.get(ex["row"])
            if isinstance(rec, dict):
                ex["preview"] = preview(rec)


def fetch_records(path: Path, rows: list[int], columns: dict[str, str] | None = None) -> dict[int, Any]:
    """The records at the given indices, by one streaming pass."""
    wanted = set(rows)
    if not wanted:
        return {}
    out = {}
    for item in dataio.iter_records(path, columns=columns):
        if item[0] in wanted:
            out[item[0]] = item[1]
            if len(out) == len(wanted):
                break
    return out


def _eval_words(eval_path: Path, vocab: dict[str, int], columns: dict[str, str] | None):
    import numpy as np

    words, offsets, n, bad = [], [0], 0, 0
    for _, rec in dataio.iter_records(eval_path, columns=columns):
        n += 1
        text = ""
        if isinstance(rec, dict):
            try:
                conv = dataio.to_conversational(rec)
                if "messages" in conv:
                    text = "\n".join(m["content"] for m in conv["messages"] if m["role"] not in ("system", "developer"))
                elif "chosen" in conv:
                    text = "\n".join([m["content"] for m in conv["prompt"] if m["role"] not in ("system", "developer")]
                                     + ["".join(m["content"] for m in conv["chosen"]),
                                        "".join(m["content"] for m in conv["rejected"])])
                else:
                    text = conv["text"]
            except Exception:  # noqa: BLE001
                bad += 1
        else:
            bad += 1
        words.extend(vocab.setdefault(w, len(vocab)) for w in normalize(text).split())
        offsets.append(len(words))
    return np.asarray(words, dtype=np.uint64), np.asarray(offsets, dtype=np.int64), {"eval_rows": n,
                                                                                      "eval_unreadable": bad}


_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)


def shingle_hashes(ids, offsets, k: int):
    """uint64 hashes of word k-grams per row (rows shorter than k give one hash of all their words).

    Returns (hashes, row_of_hash). Rows with no words give nothing."""
    import numpy as np

    ids = np.asarray(ids, dtype=np.uint64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if ids.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    # pad each row with k-1 sentinels so short rows still make one k-gram
    pad = k - 1
    padded_len = lengths + pad
    new_offsets = np.concatenate([[0], np.cumsum(padded_len)])
    padded = np.full(int(new_offsets[-1]), np.uint64(0xFFFFFFFF), dtype=np.uint64)
    pos = np.repeat(new_offsets[:-1] - offsets[:-1], lengths) + np.arange(ids.size)
    padded[pos] = ids
    n_windows = np.where(lengths > 0, np.maximum(lengths - k + 1, 1), 0)
    starts = np.repeat(new_offsets[:-1], n_windows) + (np.arange(int(n_windows.sum())) - np.repeat(
        np.cumsum(n_windows) - n_windows, n_windows))
    h = np.full(starts.size, np.uint64(k), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            v = padded[starts + j] + np.uint64(1)
            h = (h ^ (v * np.uint64(_MIX[j % 4]))) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return h, np.repeat(np.arange(lengths.size), n_windows)


def signatures(ids, offsets, step: int = 8192):
    """MinHash signatures (rensa, NUM_PERM uint32 each) of word 3-gram shingles for every row that has words.

    Returns (sig, rows): sig[i] belongs to row rows[i]. Rows are processed in slices so memory holds the
    signatures plus one slice's shingles, never all shingles at once."""
    import numpy as np
    import rensa

    ids = np.asarray(ids)
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.flatnonzero(np.diff(offsets) > 0)
    sig = np.empty((rows.size, NUM_PERM), dtype=np.uint32)
    for i in range(0, rows.size, step):
        chunk = rows[i:i + step]
        lo, hi = int(offsets[chunk[0]]), int(offsets[chunk[-1] + 1])
        # the rows between chunk[0] and chunk[-1] that have no words contribute no shingles
        local = offsets[chunk[0]:chunk[-1] + 2] - lo
        hashes, rows_of = shingle_hashes(ids[lo:hi].astype(np.uint64), local, SHINGLE)
        counts = np.bincount(rows_of, minlength=local.size - 1)[chunk - chunk[0]]
        offs = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
        m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offs, NUM_PERM, 7)
        sig[i:i + chunk.size] = np.asarray(m.to_rows(), dtype=np.uint32)
    return sig, rows


def _band_keys(sig, b: int):
    import numpy as np

    r = NUM_PERM // NUM_BANDS
    key = np.zeros(sig.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(r):
            key = (key ^ (sig[:, b * r + j].astype(np.uint64) * np.uint64(_MIX[j]))) * np.uint64(0x100000001B3)
    return key


def _band_pairs(sig, threshold: float, other=None):
    """Verified similar pairs via LSH banding (NUM_BANDS bands of NUM_PERM/NUM_BANDS rows).

    Without ``other``: pairs (i, j), i < j, within ``sig`` (each row compared with the first row of every bucket it
    shares). With ``other``: pairs (i, j) with i a row of ``sig`` and j a row of ``other``."""
    import numpy as np

    pairs = set()
    n = sig.shape[0]
    m = 0 if other is None else other.shape[0]
    if n + m < 2 or (other is not None and (n == 0 or m == 0)):
        return pairs
    for b in range(NUM_BANDS):
        key = _band_keys(sig, b) if other is None else np.concatenate([_band_keys(sig, b), _band_keys(other, b)])
        order = np.argsort(key, kind="stable")
        ks = key[order]
        new_group = np.concatenate([[True], ks[1:] != ks[:-1]])
        gid = np.cumsum(new_group) - 1
        multi = np.bincount(gid)[gid] > 1
        if not multi.any():
            continue
        members, g = order[multi], gid[multi]
        rep = np.full(int(gid[-1]) + 1, -1)
        if other is None:
            first_pos = np.flatnonzero(new_group)
            rep[gid[first_pos]] = order[first_pos]  # stable sort: the smallest index of each bucket
            r_ = rep[g]
            cand = members != r_
        else:
            is_other = members >= n
            rep[g[is_other][::-1]] = members[is_other][::-1]
            r_ = rep[g]
            cand = (~is_other) & (r_ >= 0)
        a, c = members[cand], r_[cand]
        for s0 in range(0, a.size, 16384):
            aa, cc = a[s0:s0 + 16384], c[s0:s0 + 16384]
            right = sig[cc] if other is None else other[cc - n]
            ok = (sig[aa] == right).mean(axis=1) >= threshold
            for x, y in zip(aa[ok].tolist(), cc[ok].tolist()):
                pairs.add((min(x, y), max(x, y)) if other is None else (x, y - n))
    return pairs


def _near_duplicates(facts: RowFacts, th: Thresholds, ev_words, ev_offsets):
    """Near-duplicate clusters among train rows ({root: sorted members}) and train row -> similar eval row."""
    import numpy as np

    offsets = np.frombuffer(facts.word_offsets, dtype=np.int64)
    ids = np.frombuffer(facts.word_ids, dtype=np.uint32)
    sig, rows = signatures(ids, offsets)
    clusters: dict[int, list[int]] = {}
    cross: dict[int, int] = {}
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for i, j in _band_pairs(sig, th.near_duplicate):
        a, b = find(int(rows[i])), find(int(rows[j]))
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in list(parent):
        groups[find(x)].append(x)
    for root, members in groups.items():
        clusters[root] = sorted(set(members) | {root})
    if ev_words is not None and ev_words.size:
        ev_sig, ev_rows = signatures(ev_words, ev_offsets)
        for i, j in sorted(_band_pairs(sig, th.contamination_similarity, other=ev_sig)):
            cross.setdefault(int(rows[i]), int(ev_rows[j]))
    return clusters, cross


def _ngram_overlap(facts: RowFacts, ev_words, ev_offsets, n: int) -> dict[int, int]:
    """Train rows sharing a word n-gram with an eval row -> that eval row."""
    import numpy as np

    if ev_words is None or ev_words.size == 0:
        return {}
    ids = np.frombuffer(facts.word_ids, dtype=np.uint32).astype(np.uint64)
    offsets = np.frombuffer(facts.word_offsets, dtype=np.int64)
    ev_h, ev_rows = _long_ngrams(ev_words, ev_offsets, n)
    if ev_h.size == 0:
        return {}
    tr_h, tr_rows = _long_ngrams(ids, offsets, n)
    hit = np.isin(tr_h, ev_h)
    out: dict[int, int] = {}
    if hit.any():
        order = np.argsort(ev_h)
        sorted_h = ev_h[order]
        for h, r in zip(tr_h[hit].tolist(), tr_rows[hit].tolist()):
            if r not in out:
                out[r] = int(ev_rows[order[np.searchsorted(sorted_h, h)]])
    return out


def _long_ngrams(ids, offsets, n: int):
    """Hashes of every word n-gram that lies inside one row (rows shorter than n give none)."""
    import numpy as np

    lengths = np.diff(offsets)
    n_windows = np.maximum(lengths - n + 1, 0)
    total = int(n_windows.sum())
    if total == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    starts = np.repeat(offsets[:-1], n_windows) + (np.arange(total) - np.repeat(np.cumsum(n_windows) - n_windows,
                                                                                 n_windows))
    h = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h * np.uint64(0x100000001B3)) ^ ((ids[starts + j] + np.uint64(1)) * np.uint64(_MIX[j % 4]))
    return h, np.repeat(np.arange(lengths.size), n_windows)
