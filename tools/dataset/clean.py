"""`clean_dataset`: apply chosen fixes into a NEW file plus a manifest of every dropped or changed row and why."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

from runtime.errors import BadInput
from tools.dataset._analyze import Analysis, Thresholds, analyze, redact_pii
from tools.registry import ToolInput, tool

INVALID_CHECKS = ("invalid_json", "schema", "role_order", "empty_turn", "preference_empty", "preference_identical")


class CleanDatasetInput(ToolInput):
    path: str = Field(description="the data file to clean (never modified)")
    out_path: str | None = Field(None, description="where to write the cleaned JSONL; default <name>.clean.jsonl "
                                 "beside the input")
    eval_path: str | None = Field(None, description="eval set for drop_contaminated")
    model: str = Field("default", description="tokenizer and chat template for too_long")
    max_tokens: int | None = Field(None, ge=8, description="token limit per row; default: the model's context length")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="the audit's thresholds")
    drop_invalid: bool = Field(True, description="drop rows with invalid_json, schema, role_order, empty_turn, "
                               "preference_empty or preference_identical findings")
    drop_duplicates: Literal["none", "exact", "near"] = Field(
        "near", description="drop exact duplicates (exact) or exact and near-duplicates (near), keeping the first")
    redact_pii: bool = Field(True, description="replace emails, phones, card numbers, IPs and secrets by [EMAIL] etc.")
    too_long: Literal["keep", "drop", "truncate"] = Field(
        "drop", description="rows over max_tokens: keep, drop, or truncate the final answer to fit (rows whose "
        "prompt alone is too long are dropped)")
    drop_contaminated: bool = Field(True, description="drop train rows that overlap eval_path")
    drop_refusals: bool = Field(False, description="drop rows whose assistant turns refuse")
    convert: bool = Field(True, description="write TRL's conversational format (imports Alpaca, ShareGPT, OpenAI, "
                          "prompt/completion); false keeps each record's own layout")


class CleanDatasetOutput(BaseModel):
    out_path: str
    manifest_path: str
    input_rows: int
    output_rows: int
    dropped: int
    changed: int
    reasons: dict[str, int] = Field(description="dropped/changed rows per reason")
    format: str


def _redact(value: Any, kinds: Counter) -> Any:
    if isinstance(value, str):
        text, k = redact_pii(value)
        kinds.update(k)
        return text
    if isinstance(value, list):
        return [_redact(v, kinds) for v in value]
    if isinstance(value, dict):
        return {k: _redact(v, kinds) for k, v in value.items()}
    return value


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


@tool("clean_dataset", "Write a cleaned copy of a data set (drop broken/duplicate/contaminated rows, redact PII) "
      "with a manifest of every change.", cost="cpu_job")
def clean_dataset(args: CleanDatasetInput) -> CleanDatasetOutput:
    from runtime import dataio
    from runtime.paths import resolve_path

    path = resolve_path(args.path, must_exist=True)
    out = resolve_path(args.out_path) if args.out_path else path.with_name(f"{path.stem}.clean.jsonl")
    if out.resolve() == path.resolve():
        raise BadInput("out_path is the input file; clean_dataset never overwrites its input",
                       hint="Give another out_path, or leave it empty for <name>.clean.jsonl.")
    eval_path = resolve_path(args.eval_path, must_exist=True) if args.eval_path else None
    a = analyze(path, eval_path=eval_path, model=args.model, max_tokens=args.max_tokens, thresholds=args.thresholds,
                check_tokens=args.too_long != "keep")
    drop: dict[int, list[str]] = {}
    if args.drop_invalid:
        for c in INVALID_CHECKS:
            for r in a.findings[c].rows:
                drop.setdefault(r, []).append(c)
    else:  # unreadable rows cannot be written either way
        for c in ("invalid_json", "schema"):
            for r in a.findings[c].rows:
                drop.setdefault(r, []).append(c)
    if args.drop_duplicates in ("exact", "near"):
        for r in a.exact_dups:
            drop.setdefault(r, []).append("exact_duplicate")
    if args.drop_duplicates == "near":
        for r in a.near_dups:
            drop.setdefault(r, []).append("near_duplicate")
    if args.drop_contaminated:
        for r in a.contaminated:
            drop.setdefault(r, []).append("contamination")
    if args.drop_refusals:
        for r in a.findings["refusal"].rows:
            drop.setdefault(r, []).append("refusal")
    if args.too_long == "drop":
        for r in a.too_long:
            drop.setdefault(r, []).append("too_long")
    truncator = _Truncator(a, args.model) if args.too_long == "truncate" and a.too_long else None
    manifest_path = out.with_name(out.name.removesuffix(".jsonl") + ".manifest.jsonl")
    reasons: Counter = Counter()
    written = dropped = changed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out, tmp_man = out.with_name(out.name + ".partial"), manifest_path.with_name(manifest_path.name + ".partial")
    with open(tmp_out, "w", encoding="utf-8") as fo, open(tmp_man, "w", encoding="utf-8") as fm:
        def note(entry: dict) -> None:
            fm.write(json.dumps(entry, ensure_ascii=False) + "\n")

        for row, rec in dataio.iter_records(path):
            why = drop.get(row)
            line = a.findings["invalid_json"].lines[a.findings["invalid_json"].rows.index(row)] \
                if why and "invalid_json" in why and a.findings["invalid_json"].lines else None
            if why:
                entry = {"row": row, "action": "dropped", "reasons": why}
                if line is not None:
                    entry["line"] = line
                if row in a.dup_of and ("exact_duplicate" in why or "near_duplicate" in why):
                    entry["duplicate_of"] = a.dup_of[row]
                if row in a.too_long:
                    entry["tokens"] = a.too_long[row]["tokens"]
                note(entry)
                reasons.update(why)
                dropped += 1
                continue
            changes: list[str] = []
            detail: dict[str, Any] = {}
            if args.convert:
                new = dataio.to_conversational(rec, dataio.record_format(rec))
                if dataio.record_format(rec) not in ("conversational", "preference_conversational", "text"):
                    changes.append("converted")
                    detail["from_format"] = dataio.record_format(rec)
            else:
                new = rec
            if truncator is not None and row in a.too_long:
                conv = new if args.convert else dataio.to_conversational(rec, dataio.record_format(rec))
                cut, removed = truncator.truncate(conv)
                if cut is None:
                    note({"row": row, "action": "dropped", "reasons": ["too_long"],
                          "tokens": a.too_long[row]["tokens"], "note": "the prompt alone exceeds max_tokens"})
                    reasons["too_long"] += 1
                    dropped += 1
                    continue
                new = cut
                changes.append("truncated")
                detail["removed_tokens"] = removed
            if args.redact_pii and row in a.pii_rows:
                kinds: Counter = Counter()
                new = _redact(new, kinds)
                if kinds:
                    changes.append("pii_redacted")
                    detail["pii"] = dict(kinds)
            fo.write(json.dumps(new, ensure_ascii=False) + "\n")
            written += 1
            if changes and changes != ["converted"]:
                changed += 1
                reasons.update(c for c in changes if c != "converted")
                note({"row": row, "action": "changed", "reasons": changes, "output_row": written - 1, **detail})
            elif changes:
                reasons["converted"] += 1
    tmp_out.replace(out)
    tmp_man.replace(manifest_path)
    if written + dropped != a.rows:  # the contract: nothing is lost without a manifest line
        raise BadInput(f"internal count mismatch: {written} written + {dropped} dropped != {a.rows} rows")
    return CleanDatasetOutput(out_path=str(out), manifest_path=str(manifest_path), input_rows=a.rows,
                              output_rows=written, dropped=dropped, changed=changed, reasons=dict(reasons),
                              format="conversational" if args.convert and a.kind == "sft" else a.format)
