"""`clean_dataset`: apply chosen fixes into a NEW file plus a manifest of every dropped or changed row and why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from runtime.errors import BadInput
from runtime.pii import redact_pii
from tools.dataset.analysis import Analysis, analyze
from tools.dataset.checks import Thresholds
from tools.dataset.audit import COLUMNS_FIELD, DataChecksInput
from tools.registry import ToolInput, tool

INVALID_CHECKS = ("invalid_json", "schema", "role_order", "empty_turn", "preference_empty", "preference_identical")


class CleanDatasetInput(DataChecksInput):
    path: str = Field(description="the data file to clean (never modified)")
    out_path: str | None = Field(None, description="where to write the cleaned JSONL (and <out>.manifest.jsonl "
                                 "beside it); default <name>.clean.jsonl beside the input")
    overwrite: bool = Field(False, description="replace an existing output and manifest (needs approval)")
    eval_path: str | None = Field(None, description="eval set for drop_contaminated")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="the audit's thresholds")
    drop_invalid: bool = Field(True, description="drop rows with invalid_json, schema, role_order, empty_turn, "
                               "preference_empty or preference_identical findings")
    drop_duplicates: Literal["none", "exact", "near"] = Field(
        "near", description="drop exact duplicates (exact) or exact and near-duplicates (near), keeping the first")
    redact_pii: bool = Field(True, description="replace emails, phones, card numbers, SSNs, public IPs, street "
                             "addresses and secrets by [EMAIL] etc. (documented test card numbers are kept)")
    too_long: Literal["keep", "drop", "truncate"] = Field(
        "drop", description="rows over max_tokens: keep, drop, or truncate the final answer to fit (rows whose "
        "prompt alone is too long are dropped)")
    drop_contaminated: bool = Field(True, description="drop train rows that overlap eval_path")
    drop_refusals: bool = Field(False, description="drop rows whose final answer (preference: chosen) refuses")
    drop_placeholders: bool = Field(True, description="drop rows whose answer is a placeholder (<nooutput>, N/A, ...)")
    convert: bool = Field(True, description="write TRL's conversational format (imports Alpaca, ShareGPT, OpenAI, "
                          "HH transcripts, text/label pairs, prompt/completion); false keeps each record's own layout")
    columns: dict[str, str] | None = COLUMNS_FIELD


class CleanDatasetOutput(BaseModel):
    out_path: str
    manifest_path: str
    input_rows: int
    output_rows: int
    dropped: int
    changed: int
    reasons: dict[str, int] = Field(description="dropped/changed rows per reason")
    format: str


def _redact(value: Any, spans: list[dict], where: str = "") -> Any:
    """Redact every string in a record; each replaced span is noted with the field it was in."""
    if isinstance(value, str):
        text, done = redact_pii(value)
        spans.extend({"field": where, **d} for d in done)
        return text
    if isinstance(value, list):
        return [_redact(v, spans, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _redact(v, spans, f"{where}.{k}" if where else k) for k, v in value.items()}
    return value


def output_paths(path: Path, args: CleanDatasetInput, eval_path: Path | None) -> tuple[Path, Path]:
    """The cleaned file and its manifest, checked: never an input, never in the data dir, never an existing file
    unless overwrite."""
    from runtime.outputs import check_distinct, check_output
    from runtime.paths import resolve_path

    stem = Path(path.name.removesuffix(".gz")).stem
    out = resolve_path(args.out_path) if args.out_path else path.with_name(f"{stem}.clean.jsonl")
    manifest = out.with_name(out.name.removesuffix(".jsonl") + ".manifest.jsonl")
    outs = [check_output(p, inputs=[path, eval_path], overwrite=args.overwrite, what=what)
            for p, what in ((out, "output"), (manifest, "manifest"))]
    check_distinct(outs)
    return outs[0], outs[1]


class _Truncator:
    def __init__(self, a: Analysis, model: str):
        from runtime.models import load_tokenizer

        self.tok = load_tokenizer(model)
        self.max = a.max_tokens
        self.templated = a.format not in ("text", "prompt_completion", "preference")

    def _len(self, conv: dict) -> int:
        if "text" in conv:
            return len(self.tok(conv["text"], add_special_tokens=False)["input_ids"])
        text = self.tok.apply_chat_template(conv["messages"], tokenize=False) if self.templated else \
            "".join(m["content"] for m in conv["messages"])
        return len(self.tok(text, add_special_tokens=False)["input_ids"])

    def truncate(self, conv: dict) -> tuple[dict | None, int]:
        """Cut the final answer (or the text) so the row fits; None when it cannot fit."""
        if "chosen" in conv:
            return None, 0
        key = "text" if "text" in conv else None
        msgs = conv.get("messages")
        if key is None and (not msgs or msgs[-1]["role"] != "assistant"):
            return None, 0
        content = conv["text"] if key else msgs[-1]["content"]
        ids = self.tok(content, add_special_tokens=False)["input_ids"]
        over = self._len(conv) - self.max
        keep = len(ids) - over
        for _ in range(6):
            if keep <= 0:
                return None, 0
            cut = self.tok.decode(ids[:keep])
            new = {"text": cut} if key else {**conv, "messages": msgs[:-1] + [{**msgs[-1], "content": cut}]}
            if self._len(new) <= self.max:
                return new, len(ids) - keep
            keep -= max(1, self._len(new) - self.max)
        return None, 0


def drop_plan(a: Analysis, args: CleanDatasetInput) -> dict[int, list[str]]:
    """Row -> the reasons it is dropped, from the analysis and the chosen fixes."""
    chosen = [*(INVALID_CHECKS if args.drop_invalid else ("invalid_json", "schema"))]  # unreadable rows go anyway
    chosen += ["refusal"] * args.drop_refusals + ["placeholder"] * args.drop_placeholders
    drop: dict[int, list[str]] = {}
    for c in chosen:
        for r in a.findings[c].rows:
            drop.setdefault(r, []).append(c)
    sets = {"exact_duplicate": a.exact_dups if args.drop_duplicates != "none" else (),
            "near_duplicate": a.near_dups if args.drop_duplicates == "near" else (),
            "contamination": a.contaminated if args.drop_contaminated else (),
            "too_long": a.too_long if args.too_long == "drop" else ()}
    for reason, rows in sets.items():
        for r in rows:
            drop.setdefault(r, []).append(reason)
    return drop


@tool("clean_dataset", "Write a cleaned copy of a data set (drop broken/duplicate/contaminated rows, redact PII) "
      "with a manifest of every change.", cost="cpu_job")
def clean_dataset(args: CleanDatasetInput) -> CleanDatasetOutput:
    from runtime import dataio
    from runtime.outputs import OutputSet, json_line
    from runtime.paths import resolve_path

    path = resolve_path(args.path, must_exist=True)
    eval_path = resolve_path(args.eval_path, must_exist=True) if args.eval_path else None
    out, manifest_path = output_paths(path, args, eval_path)
    a = analyze(path, eval_path=eval_path, model=args.model, max_tokens=args.max_tokens, thresholds=args.thresholds,
                check_tokens=args.too_long != "keep", columns=args.columns)
    drop = drop_plan(a, args)
    truncator = _Truncator(a, args.model) if args.too_long == "truncate" and a.too_long else None
    invalid = a.findings["invalid_json"]
    line_of = dict(zip(invalid.rows, invalid.lines)) if invalid.lines else {}
    reasons: Counter = Counter()
    written = dropped = changed = 0
    with OutputSet(overwrite=args.overwrite) as files:
        fo, fm = files.open(out), files.open(manifest_path)

        def note(entry: dict) -> None:
            fm.write(json_line(entry))

        for row, rec in dataio.iter_records(path, columns=args.columns):
            why = drop.get(row)
            if why:
                entry = {"row": row, "action": "dropped", "reasons": why}
                if row in line_of:
                    entry["line"] = line_of[row]
                if row in a.dup_of and ("exact_duplicate" in why or "near_duplicate" in why):
                    entry["duplicate_of"] = a.dup_of[row]
                if row in a.too_long:
                    entry["tokens"] = a.too_long[row]["tokens"]
                note(entry)
                reasons.update(why)
                dropped += 1
                continue
            new, changes, detail = _fix(row, rec, a, args, truncator)
            if new is None:
                note({"row": row, "action": "dropped", "reasons": ["too_long"], "tokens": a.too_long[row]["tokens"],
                      "note": "the prompt alone exceeds max_tokens"})
                reasons["too_long"] += 1
                dropped += 1
                continue
            fo.write(json_line(new))
            written += 1
            if changes and changes != ["converted"]:
                changed += 1
                reasons.update(c for c in changes if c != "converted")
                note({"row": row, "action": "changed", "reasons": changes, "output_row": written - 1, **detail})
            elif changes:
                reasons["converted"] += 1
        if written + dropped != a.rows:  # the contract: nothing is lost without a manifest line (nothing written)
            raise BadInput(f"internal count mismatch: {written} written + {dropped} dropped != {a.rows} rows")
    return CleanDatasetOutput(out_path=str(out), manifest_path=str(manifest_path), input_rows=a.rows,
                              output_rows=written, dropped=dropped, changed=changed, reasons=dict(reasons),
                              format=_written_format(a, args.convert))


def _written_format(a: Analysis, convert: bool) -> str:
    if convert and a.kind == "sft":
        return "conversational"
    return "preference_conversational" if convert and a.kind == "preference" else a.format


def _fix(row: int, rec: dict, a: Analysis, args: CleanDatasetInput, truncator: _Truncator | None
         ) -> tuple[dict | None, list[str], dict[str, Any]]:
    """One kept row: converted, truncated and redacted as chosen; (None, ...) when it cannot be made to fit."""
    from runtime import dataio

    changes: list[str] = []
    detail: dict[str, Any] = {}
    fmt = dataio.record_format(rec)
    new = dataio.to_conversational(rec, fmt) if args.convert else rec
    if args.convert and fmt not in ("conversational", "preference_conversational", "text"):
        changes.append("converted")
        detail["from_format"] = fmt
    if truncator is not None and row in a.too_long:
        cut, removed = truncator.truncate(new if args.convert else dataio.to_conversational(rec, fmt))
        if cut is None:
            return None, changes, detail
        new = cut
        changes.append("truncated")
        detail["removed_tokens"] = removed
    if args.redact_pii and row in a.pii_rows:
        spans: list[dict] = []
        new = _redact(new, spans)
        if spans:
            changes.append("pii_redacted")
            detail["pii"] = dict(Counter(s["kind"] for s in spans))
            detail["redactions"] = spans
    return new, changes, detail
