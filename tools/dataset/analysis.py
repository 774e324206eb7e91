"""The audit engine shared by audit_dataset, clean_dataset and split_dataset.

One streaming pass over the file hands each usable record, as a `checks.Row`, to every check (checks.py, and
tokens.py and overlap.py for token counts and repeated text); the checks keep only compact facts (hashes, word
ids, lengths), never the records. Then each check finishes with the whole file seen: token counts, MinHash
signatures and LSH run batched there. See README "## Datasets".
"""

from __future__ import annotations

import json
import time
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime import dataio
from runtime.errors import BadInput
from runtime.pii import redact_pii
from tools.dataset.checks import (CHECKS, ERROR_CHECKS, Check, Context, EmptyTurns, Finding, Labels, Pii,
                                  Placeholders, PreferencePairs, Refusals, RoleOrder, Row, Thresholds, safe_text)
from tools.dataset.overlap import Overlap
from tools.dataset.tokens import TooLong


@dataclass
class Analysis:
    path: Path
    format: str
    kind: str
    rows: int
    findings: dict[str, Finding]
    summary: dict
    dup_of: dict[int, int]            # exact or near duplicate row -> first row of its cluster
    exact_dups: set[int]
    near_dups: set[int]
    contaminated: set[int]
    too_long: dict[int, dict]         # row -> {"tokens", "prompt_tokens"}
    pii_rows: set[int]
    labels: list[str]                 # the label set ([] when the answers are not labels)
    label_of: array                   # row -> index into labels, -1 none
    words: tuple                      # (word ids, offsets) numpy arrays: row r is ids[offsets[r]:offsets[r + 1]]
    max_tokens: int


def analyze(path: Path, *, eval_path: Path | None = None, model: str = "default", max_tokens: int | None = None,
            thresholds: Thresholds | None = None, exact_token_counts: bool = False, check_tokens: bool = True,
            columns: dict[str, str] | None = None) -> Analysis:
    """Run every check over ``path`` (and ``eval_path`` for contamination). Streams; see module docstring.
    ``columns`` maps the file's column names onto TRL's fields (``runtime.dataio.apply_columns``)."""
    t0 = time.perf_counter()
    fmt = dataio.detect_format(path, columns=columns)
    findings = {c: Finding(c, "error" if c in ERROR_CHECKS else "warning") for c in CHECKS}
    ctx = Context(path, fmt, dataio.kind_of(fmt), thresholds or Thresholds(), columns, findings)
    tokens = TooLong(ctx, model, max_tokens, exact_token_counts) if check_tokens and ctx.kind != "unknown" else None
    overlap, labels, pii = Overlap(ctx, eval_path), Labels(ctx), Pii(ctx)
    answers = ctx.kind in ("sft", "preference")
    # in the order they finish: token counts may find rows the template rejects; placeholders need the labels
    checks: list[Check] = [c for c in (
        tokens, overlap, labels, Placeholders(ctx, labels) if answers else None,
        RoleOrder(ctx), EmptyTurns(ctx), PreferencePairs(ctx) if ctx.kind == "preference" else None, pii,
        Refusals(ctx) if answers else None) if c is not None]
    seekable = dataio.file_kind(path) == "jsonl" and not dataio.is_gzip(path)
    offsets = _read(ctx, checks, seekable)
    if not ctx.valid:
        raise BadInput(f"{path.name} holds no records (it is empty)", hint="Check the file; nothing to audit.")
    timing = {"read_and_row_checks": time.perf_counter() - t0}
    for check, name in ((tokens, "tokens"), (overlap, "minhash_lsh")):
        t = time.perf_counter()
        if check is not None:
            check.finish()
        timing[name] = time.perf_counter() - t
    for check in checks:
        if check not in (tokens, overlap):
            check.finish()
    findings["invalid_json"].message = "records that are not valid JSON (or not UTF-8); line numbers in `lines`"
    findings["schema"].message = f"records that do not fit the file's format ({fmt}) or have wrong types"
    _add_previews(ctx, seekable, offsets)
    timing["total"] = time.perf_counter() - t0
    summary = {
        "rows": len(ctx.valid), "valid_rows": sum(ctx.valid), "format": fmt, "kind": ctx.kind,
        "file_type": dataio.file_kind(path), "model": model, "tokens": tokens.stats if tokens else {},
        "labels": labels.summary, "timing_s": {k: round(v, 3) for k, v in timing.items()},
    }
    if eval_path is not None:
        summary["eval"] = overlap.eval_info
    return Analysis(path, fmt, ctx.kind, len(ctx.valid), findings, summary, overlap.dup_of, overlap.exact,
                    overlap.near, overlap.contaminated, tokens.over if tokens else {}, pii.rows, labels.labels,
                    labels.of_row, overlap.words(), tokens.tk.max_tokens if tokens else int(max_tokens or 0))


def _read(ctx: Context, checks: list[Check], seekable: bool) -> array:
    """The one pass over the file: each usable row goes to every check. Returns JSONL byte offsets (-1 when the
    file is not plain JSONL), for previews."""
    offsets = array("q")
    observers = [check.observe for check in checks]
    for item in dataio.iter_records(ctx.path, with_offsets=seekable, columns=ctx.columns):
        offsets.append(item[2] if len(item) > 2 else -1)
        ctx.valid.append(0)
        row = _row(ctx, item[0], item[1])
        if row is None:
            continue
        ok = 1
        for observe in observers:  # every check sees the row, whatever the others say
            if not observe(row):
                ok = 0
        ctx.valid[row.index] = ok
    return offsets


_SYSTEM = ("system", "developer")  # not part of what a record says (PII, duplicates)


def _row(ctx: Context, index: int, rec: dict | dataio.RecordError) -> Row | None:
    """The checks' view of one record, or None (and a finding) when it cannot be read in the file's format."""
    f = ctx.findings
    if isinstance(rec, dataio.RecordError):
        if rec.kind in ("not_object", "schema"):
            f["schema"].add(index, rec.message, rec.line)
        else:
            f["invalid_json"].add(index, rec.message + (f" | {rec.preview}" if rec.preview else ""), rec.line)
        return None
    rfmt = dataio.record_format(rec)
    if rfmt != ctx.format and {rfmt, ctx.format} != {"conversational", "openai_chat"}:
        f["schema"].add(index, f"fields {sorted(rec)[:6]} look like {rfmt}, the file is {ctx.format}")
        return None
    try:
        conv = dataio.to_conversational(rec, rfmt)
    except BadInput as e:
        f["schema"].add(index, e.message)
        return None
    except Exception as e:  # noqa: BLE001 - odd types inside a record are a schema problem, not a crash
        f["schema"].add(index, f"{type(e).__name__}: {e}")
        return None
    return _describe(ctx, index, rec, conv)


def _describe(ctx: Context, index: int, rec: dict, conv: dict) -> Row:
    if "messages" in conv:
        msgs = conv["messages"]
        final = msgs[-1]["content"] if msgs and msgs[-1]["role"] == "assistant" else None
        render = msgs if ctx.templated else [{"role": "", "content": rec.get("prompt", "")},
                                             {"role": "", "content": rec.get("completion", "")}]
        return Row(index, rec, conv, "\n".join([m["content"] for m in msgs if m["role"] not in _SYSTEM]),
                   "\x1e".join([f"{m['role']}\x1f{m['content']}" for m in msgs]), final, render)
    if "chosen" in conv:
        prompt, chosen, rejected = conv["prompt"], conv["chosen"], conv["rejected"]
        c_text, r_text = "".join(m["content"] for m in chosen), "".join(m["content"] for m in rejected)
        render = prompt + (chosen if len(c_text) >= len(r_text) else rejected) if ctx.templated else [
            {"role": "", "content": rec.get("prompt") or ""},
            {"role": "", "content": max(rec["chosen"], rec["rejected"], key=len)}]
        said = [m["content"] for m in prompt if m["role"] not in _SYSTEM]
        key = "\x1e".join([f"{m['role']}\x1f{m['content']}" for m in prompt]) + "\x1d" + c_text + "\x1d" + r_text
        return Row(index, rec, conv, "\n".join(said + [c_text, r_text]), key, None, render, c_text, r_text)
    text = conv["text"]
    return Row(index, rec, conv, text, text, None, [{"role": "", "content": text}])


# --- previews ----------------------------------------------------------------------------------------

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


def _add_previews(ctx: Context, seekable: bool, offsets: array) -> None:
    findings = ctx.findings.values()
    rows = {ex["row"] for fi in findings if fi.check != "invalid_json" for ex in fi.examples}
    if not rows:
        return
    if seekable:
        recs = dataio.read_jsonl_at(ctx.path, {r: offsets[r] for r in rows}, ctx.columns)
    else:
        recs = dataio.records_at(ctx.path, sorted(rows), ctx.columns)
    for fi in findings:
        for ex in fi.examples:
            rec = recs.get(ex["row"])
            if isinstance(rec, dict):
                ex["preview"] = preview(rec)
