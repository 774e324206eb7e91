"""`audit_dataset` and `inspect_dataset`: what is in a data set and what is wrong with it."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tools.dataset.analysis import Analysis, analyze
from tools.dataset.checks import CHECKS, SEVERITY_ORDER, Thresholds, safe_text
from tools.registry import ToolInput, tool

COLUMNS_FIELD = Field(None, description="map ftpilot roles (prompt, completion, system, chosen, rejected) to your "
                      "file's column names, e.g. {\"prompt\": \"text\", \"completion\": \"category\"}; default: "
                      "detect the layout")


class DataChecksInput(ToolInput):
    """The fields every tool that runs the audit's checks takes (audit_dataset, clean_dataset)."""

    path: str = Field(description="the data file (JSONL, JSON, CSV, Parquet) or `datasets` save dir, in the workspace")
    eval_path: str | None = Field(None, description="an eval set to check the train set against (contamination)")
    model: str = Field("default", description="whose chat template and tokenizer count tokens (too_long)")
    max_tokens: int | None = Field(None, ge=8, description="token limit per row; default: the model's context length")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="check thresholds (documented defaults)")


class AuditDatasetInput(DataChecksInput):
    exact_token_counts: bool = Field(False, description="tokenize every row (slower) instead of only the rows whose "
                                     "byte length could exceed max_tokens plus a seeded 2,000-row sample")
    columns: dict[str, str] | None = COLUMNS_FIELD


class FindingOut(BaseModel):
    check: str
    severity: Literal["error", "warning", "info"]
    count: int
    rows: list[int] = Field(description="0-based record indices in file order")
    examples: list[dict[str, Any]]
    message: str
    lines: list[int] | None = Field(None, description="1-based line numbers (invalid_json in JSONL files)")
    details: dict[str, Any] | None = None


class AuditDatasetOutput(BaseModel):
    rows: int = Field(description="records read, malformed ones included")
    format: str
    findings: list[FindingOut]
    summary: dict[str, Any]
    recommendations: list[str]
    report_path: str
    json_path: str
    audit_id: int | None = None
    dataset_id: int | None = None


def findings_list(a: Analysis) -> list[dict]:
    out = [fi.as_dict() for fi in a.findings.values() if fi.rows]
    return sorted(out, key=lambda d: (SEVERITY_ORDER[d["severity"]], CHECKS.index(d["check"])))


BROKEN = ("invalid_json", "schema", "role_order", "empty_turn", "preference_empty", "preference_identical")
BROKEN_ADVICE = ("Drop {n} broken row(s) (invalid JSON, schema, role order, empty turns, empty or identical preference "
                 "pairs): clean_dataset with drop_invalid=true.")
DUP_ADVICE = ("Drop {exact_duplicate} exact and {near_duplicate} near-duplicate(s), keeping the first: clean_dataset "
              "with drop_duplicates=\"near\".")
FINDING_ADVICE = {  # in the order a person should act on them; {n} is the finding's row count
    "contamination": "Remove {n} train row(s) that overlap the eval set before training, or the evaluation will "
                     "overstate quality: clean_dataset with eval_path and drop_contaminated=true.",
    "too_long": "{n} row(s) exceed {max_tokens} tokens: drop them (too_long=\"drop\"), truncate "
                "(too_long=\"truncate\"), or train with a longer max_length.",
    "pii": "Redact personal data and secrets in {n} row(s): clean_dataset with redact_pii=true; rotate any real keys "
           "found."}
REFUSAL_ADVICE = {  # refusals are the behaviour wanted in harmlessness preference data
    "preference": "{n} chosen answer(s) refuse: in harmlessness preference data that is the behaviour wanted, keep "
                  "them; drop them (drop_refusals=true) only if the model should answer such prompts.",
    "other": "Review {n} refusal(s); drop them unless refusing is the behaviour you want (drop_refusals=true)."}
LATE_ADVICE = {
    "placeholder": "Drop {n} placeholder answer(s) such as \"<nooutput>\" or \"N/A\" (clean_dataset drops them by "
                   "default: drop_placeholders=true).",
    "label_imbalance": "Balance the labels (more examples of the rare ones, e.g. synthesize them) and use a "
                       "stratified split (split_dataset does this).",
    "length_bias": "Chosen answers are systematically longer/shorter than rejected ones: add pairs where the better "
                   "answer is the shorter one, or DPO will learn length."}


def recommendations(a: Analysis, has_eval: bool) -> list[str]:
    f = {k: len(v.rows) for k, v in a.findings.items()}
    refusal = REFUSAL_ADVICE["preference" if a.kind == "preference" else "other"]
    advice = [(sum(f[k] for k in BROKEN), BROKEN_ADVICE), (f["exact_duplicate"] + f["near_duplicate"], DUP_ADVICE),
              *((f[check], text) for check, text in FINDING_ADVICE.items()), (f["refusal"], refusal),
              *((f[check], text) for check, text in LATE_ADVICE.items())]
    rec = [text.format(n=n, max_tokens=a.max_tokens, **f) for n, text in advice if n]
    if not has_eval and a.kind != "unknown":
        rec.append("No eval set given: split_dataset makes a seeded, stratified, duplicate-aware split; then audit "
                   "train with eval_path to check contamination.")
    if a.kind == "unknown":
        rec.append("The format was not recognised: use TRL's messages, prompt/completion, text or "
                   "prompt/chosen/rejected fields (Alpaca and ShareGPT are imported).")
    if not rec:
        rec.append("No problems found: ready to train.")
    return rec


def render_markdown(out: dict, path: str) -> str:
    s = out["summary"]
    lines = [f"# Audit of `{path}`", "", f"- rows: {out['rows']} ({s['valid_rows']} usable), format: `{out['format']}`"
             f" ({s['kind']})", f"- model for tokens: `{s['model']}`; tokens: {json.dumps(s.get('tokens'))}"]
    if s.get("labels"):
        lines.append(f"- labels: {json.dumps(s['labels'])}")
    if s.get("eval"):
        lines.append(f"- eval set: {json.dumps(s['eval'])}")
    lines += ["", "## Findings", ""]
    if not out["findings"]:
        lines.append("None.")
    else:
        lines += ["| check | severity | count | message |", "|---|---|---|---|"]
        for fi in out["findings"]:
            lines.append(f"| `{fi['check']}` | {fi['severity']} | {fi['count']} | {fi['message']} |")
        for fi in out["findings"]:
            rows = ", ".join(map(str, fi["rows"][:20])) + (" …" if fi["count"] > 20 else "")
            lines += ["", f"### `{fi['check']}` ({fi['severity']}, {fi['count']})", "", fi["message"], "",
                      f"Rows: {rows}"]
            if fi.get("lines"):
                lines.append(f"Lines: {', '.join(map(str, fi['lines'][:20]))}")
            for ex in fi["examples"]:
                lines.append(f"- row {ex['row']}: {ex.get('detail', '')}".replace("\n", " ")
                             + (f" — `{ex['preview']}`" if ex.get("preview") else ""))
    lines += ["", "## Recommendations", ""] + [f"- {r}" for r in out["recommendations"]]
    return "\n".join(lines) + "\n"


def record_audit(path: Path, out: dict, eval_path: Path | None) -> tuple[int | None, int | None, str, str]:
    """Write the Markdown report and JSON copy, and record Dataset and Audit rows in the store."""
    from sqlmodel import select

    from runtime import store
    from runtime.paths import data_subdir, sha256_file

    digest = sha256_file(path) if path.is_file() else _dir_digest(path)
    with store.session() as s:
        ds = s.exec(select(store.Dataset).where(store.Dataset.path == str(path),
                                                store.Dataset.sha256 == digest)).first()
        if ds is None:
            ds = store.Dataset(path=str(path), sha256=digest)
        ds.format, ds.rows = out["format"], out["rows"]
        s.add(ds)
        s.flush()
        audit = store.Audit(dataset_id=ds.id, eval_path=str(eval_path) if eval_path else None,
                            summary={**out["summary"], "findings": {f["check"]: f["count"] for f in out["findings"]},
                                     "sha256": digest})
        s.add(audit)
        s.flush()
        stem = f"audit-{audit.id:05d}-{path.stem}"
        d = data_subdir("audits")
        json_path, md_path = d / f"{stem}.json", d / f"{stem}.md"
        audit.json_path, audit.report_path = str(json_path), str(md_path)
        ds.last_audit_id = audit.id
        s.add(ds)
        s.add(audit)
        ids = (audit.id, ds.id)
    out.update(report_path=str(md_path), json_path=str(json_path), audit_id=ids[0], dataset_id=ids[1])
    json_path.write_text(json.dumps(out, indent=1, ensure_ascii=False))
    md_path.write_text(render_markdown(out, str(path)))
    return ids[0], ids[1], str(md_path), str(json_path)


def _dir_digest(path: Path) -> str:
    import hashlib

    from runtime.paths import sha256_file

    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + sha256_file(p).encode())
    return h.hexdigest()


def run_audit(args: AuditDatasetInput) -> tuple[Analysis, dict]:
    from runtime.paths import resolve_path

    path = resolve_path(args.path, must_exist=True)
    eval_path = resolve_path(args.eval_path, must_exist=True) if args.eval_path else None
    a = analyze(path, eval_path=eval_path, model=args.model, max_tokens=args.max_tokens,
                thresholds=args.thresholds, exact_token_counts=args.exact_token_counts, columns=args.columns)
    counts = {"error": 0, "warning": 0, "info": 0}
    findings = findings_list(a)
    for fi in findings:
        counts[fi["severity"]] += 1
    summary = {**a.summary, "findings_by_severity": counts, "thresholds": args.thresholds.model_dump()}
    out = {"rows": a.rows, "format": a.format, "findings": findings, "summary": summary,
           "recommendations": recommendations(a, eval_path is not None)}
    record_audit(path, out, eval_path)
    return a, out


@tool("audit_dataset", "Audit a data set: format, broken rows, duplicates, length, PII, contamination, balance.",
      cost="cpu_job")
def audit_dataset(args: AuditDatasetInput) -> AuditDatasetOutput:
    _, out = run_audit(args)
    return AuditDatasetOutput(**out)


# --- inspect -------------------------------------------------------------------------------------------

class InspectDatasetInput(ToolInput):
    path: str = Field(description="the data file or `datasets` save dir, in the workspace")
    examples: int = Field(3, ge=0, le=20, description="how many rows to show")
    columns: dict[str, str] | None = COLUMNS_FIELD


class InspectDatasetOutput(BaseModel):
    path: str
    format: str
    kind: str
    layout: str = Field(description="which layout was recognised, in words (and which columns it reads)")
    columns: dict[str, str] | None = Field(None, description="role -> column the layout reads (given or detected)")
    rows: int
    malformed: int
    fields: list[str]
    examples: list[dict[str, Any]]
    seconds: float


@tool("inspect_dataset", "Show a data set's format, row count, fields and a few rows (no checks).", cost="instant")
def inspect_dataset(args: InspectDatasetInput) -> InspectDatasetOutput:
    from runtime import dataio
    from runtime.paths import resolve_path

    t0 = time.perf_counter()
    path = resolve_path(args.path, must_exist=True)
    fmt = dataio.detect_format(path, columns=args.columns)
    rows = malformed = 0
    fields: dict[str, None] = {}
    examples = []
    first = None  # the first record of the file's layout, to name its columns
    for _, rec in dataio.iter_records(path):
        rows += 1
        if isinstance(rec, dataio.RecordError):
            malformed += 1
            continue
        if first is None and (args.columns or dataio.record_format(rec) == fmt):
            first = rec
        if len(fields) < 50:
            fields.update(dict.fromkeys(rec))
        if len(examples) < args.examples:
            examples.append(_shorten(rec))
    layout, columns = dataio.describe_layout(fmt, first, dataio.check_columns(args.columns))
    return InspectDatasetOutput(path=str(path), format=fmt, kind=dataio.kind_of(fmt), layout=layout, columns=columns,
                                rows=rows, malformed=malformed, fields=list(fields), examples=examples,
                                seconds=round(time.perf_counter() - t0, 3))


def _shorten(v: Any, limit: int = 400) -> Any:
    if isinstance(v, str):
        v = safe_text(v)  # lone surrogates would break the JSON output
        return v if len(v) <= limit else v[:limit] + f"… ({len(v)} chars)"
    if isinstance(v, list):
        return [_shorten(x, limit) for x in v[:20]]
    if isinstance(v, dict):
        return {safe_text(str(k)): _shorten(x, limit) for k, x in list(v.items())[:30]}
    return v
