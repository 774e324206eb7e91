"""The read service: every store query the UI needs, returning typed objects (Elia's service layer).

Screens and the playground call these instead of running `select()` themselves, so the store's shape is known
in one place. Stored JSON (audit reports, `Evaluation.results`) is parsed into models here, tolerantly: a field
a newer tool adds is kept (extra="allow"), a field an older row lacks gets its default.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runtime import store


class _View(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- audits -------------------------------------------------------------------------------------------------

class FindingView(_View):
    check: str
    severity: str = "info"
    count: int = 0
    rows: list[int] = Field(default_factory=list)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    message: str = ""
    lines: list[int] | None = None


class AuditView(_View):
    id: int
    dataset_path: str | None = None
    dataset_rows: int | None = None
    eval_path: str | None = None
    report_path: str | None = None
    json_path: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    findings: list[FindingView] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)
    created_at: datetime | None = None


def latest_audit() -> AuditView | None:
    """The newest audit with its full findings (from its JSON report; the store keeps counts only)."""
    from sqlmodel import select

    with store.session() as s:
        audit = s.exec(select(store.Audit).order_by(store.Audit.id.desc())).first()
        ds = s.get(store.Dataset, audit.dataset_id) if audit and audit.dataset_id else None
    if audit is None:
        return None
    report = _read_json(audit.json_path)
    findings = report.get("findings")
    if not isinstance(findings, list):  # no report file: the store's {check: count}
        counts = (audit.summary or {}).get("findings") or {}
        findings = [{"check": k, "count": v} for k, v in counts.items()] if isinstance(counts, dict) else []
    return AuditView(id=audit.id, dataset_path=ds.path if ds else None, dataset_rows=ds.rows if ds else None,
                     eval_path=audit.eval_path, report_path=audit.report_path, json_path=audit.json_path,
                     summary=report.get("summary") or audit.summary or {},
                     findings=[f for f in (_parse(FindingView, x) for x in findings) if f],
                     recommendations=[str(r) for r in report.get("recommendations") or []],
                     created_at=audit.created_at)


# --- evaluations --------------------------------------------------------------------------------------------

class MetricValue(_View):
    value: float | None = None
    ci95: list[float | None] | None = None
    n: int | None = None


class SystemResult(_View):
    """One candidate (base, k-shot, adapter...) with its metrics."""

    name: str
    metrics: dict[str, MetricValue] = Field(default_factory=dict)
    tokens_per_s: float | None = None
    latency_s: dict[str, Any] | None = None


class MetricDelta(_View):
    delta: float | None = None
    ci95: list[float | None] | None = None
    n: int | None = None
    excludes_zero: bool | None = None


class Comparison(_View):
    candidate: str
    baseline: str
    metrics: dict[str, MetricDelta] = Field(default_factory=dict)


class EvaluationResults(_View):
    """The typed shape of `Evaluation.results` (what the evaluate tool stores)."""

    n: int | None = None
    baseline: str | None = None
    results: list[SystemResult] = Field(default_factory=list)
    comparisons: list[Comparison] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class EvaluationView(_View):
    id: int
    job_id: str | None = None
    eval_path: str | None = None
    report_path: str | None = None
    results: EvaluationResults
    created_at: datetime | None = None


def latest_evaluation() -> EvaluationView | None:
    from sqlmodel import select

    with store.session() as s:
        ev = s.exec(select(store.Evaluation).order_by(store.Evaluation.id.desc())).first()
    if ev is None:
        return None
    results = _parse(EvaluationResults, ev.results or {}) or EvaluationResults()
    return EvaluationView(id=ev.id, job_id=ev.job_id, eval_path=ev.eval_path, report_path=ev.report_path,
                          results=results, created_at=ev.created_at)


# --- jobs ---------------------------------------------------------------------------------------------------

def recent_jobs(limit: int = 100) -> list[store.Job]:
    from sqlmodel import select

    with store.session() as s:
        return list(s.exec(select(store.Job).order_by(store.Job.created_at.desc()).limit(limit)).all())


def jobs_by_id(ids: list[str]) -> list[store.Job]:
    from sqlmodel import select

    if not ids:
        return []
    with store.session() as s:
        return list(s.exec(select(store.Job).where(store.Job.id.in_(ids))).all())


class AdapterRun(_View):
    """A finished run the playground can load: an adapter on its base, or merged weights."""

    job_id: str
    model: str
    adapter: str | None = None
    model_dir: str | None = None


def adapter_run(job_id: str | None = None) -> AdapterRun | None:
    """The given job, else the newest succeeded job with an adapter or merged weights."""
    from sqlmodel import select

    with store.session() as s:
        if job_id:
            jobs = [s.get(store.Job, job_id)]
        else:
            jobs = list(s.exec(select(store.Job).where(store.Job.status == "succeeded")
                               .order_by(store.Job.created_at.desc()).limit(50)).all())
    for j in jobs:
        result = (j.result or {}) if j is not None else {}
        if result.get("adapter_path") or result.get("model_dir"):
            return AdapterRun(job_id=j.id, model=j.model or "default", adapter=result.get("adapter_path"),
                              model_dir=result.get("model_dir"))
    return None


# --- conversations ------------------------------------------------------------------------------------------

class ConversationRow(_View):
    id: str
    title: str
    updated_at: datetime
    project: dict[str, Any] = Field(default_factory=dict)
    messages: int = 0


def conversations(limit: int = 50) -> list[ConversationRow]:
    """Conversations, most recently updated first, with their message counts."""
    from sqlalchemy import func
    from sqlmodel import select

    with store.session() as s:
        rows = s.exec(select(store.Conversation).order_by(store.Conversation.updated_at.desc()).limit(limit)).all()
        counts = dict(s.exec(select(store.Message.conversation_id, func.count(store.Message.id))
                             .group_by(store.Message.conversation_id)).all())
    return [ConversationRow(id=r.id, title=r.title, updated_at=r.updated_at, project=r.project or {},
                            messages=counts.get(r.id, 0)) for r in rows]


def last_conversation_id() -> str | None:
    """The most recently updated conversation that holds at least one message (what a restart resumes)."""
    return next((c.id for c in conversations(20) if c.messages), None)


# --- helpers ------------------------------------------------------------------------------------------------

def _read_json(path: str | None) -> dict:
    if not path or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _parse(model: type[BaseModel], data: Any):
    try:
        return model.model_validate(data)
    except ValidationError:
        return None
