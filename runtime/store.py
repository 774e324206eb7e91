"""The store: SQLModel tables over SQLite (WAL) by default, any SQLAlchemy URL by setting.

The schema is owned by Alembic migrations (runtime/migrations); `open_store` upgrades to head.
Jobs write here from their own processes, so SQLite runs in WAL mode with a busy timeout.
"""

from __future__ import annotations

import functools
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import JSON, Column, event
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, create_engine

from runtime.settings import get_settings


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def _json(**kw) -> Any:
    return Field(default=None, sa_column=Column(JSON, nullable=True), **kw)


class Dataset(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    path: str = Field(index=True)
    sha256: str = Field(index=True)
    format: str | None = None
    rows: int | None = None
    last_audit_id: int | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Audit(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    dataset_id: int | None = Field(default=None, foreign_key="dataset.id", index=True)
    eval_path: str | None = None
    summary: dict | None = _json()
    json_path: str | None = None
    report_path: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Conversation(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    title: str = "New conversation"
    project: dict | None = _json()  # workflow state: task, datasets, model, audits, runs, evaluations, decision
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class Message(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str = Field(foreign_key="conversation.id", index=True)
    role: str
    content: str | None = None
    tool_calls: list | None = _json()
    tool_call_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ToolCallRecord(SQLModel, table=True):
    __tablename__ = "tool_call"
    id: int | None = Field(default=None, primary_key=True)
    conversation_id: str | None = Field(default=None, index=True)
    name: str = Field(index=True)
    arguments: dict | None = _json()
    result: dict | None = _json()
    ok: bool = True
    duration_s: float | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    kind: str = Field(index=True)             # train_sft | train_dpo | distill | ...
    method: str | None = None                 # lora | qlora | full | dpo | kto | ...
    status: str = Field(default="queued", index=True)  # queued|running|succeeded|failed|cancelled
    model: str | None = None
    dataset: str | None = None
    device: str | None = None
    config: dict | None = _json()
    result: dict | None = _json()
    run_dir: str | None = None
    log_path: str | None = None
    metrics_path: str | None = None
    pid: int | None = None
    step: int | None = None
    total_steps: int | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    heartbeat_at: datetime | None = None


class JobMetric(SQLModel, table=True):
    __tablename__ = "job_metric"
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    step: int
    data: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class Evaluation(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: str | None = Field(default=None, index=True)
    eval_path: str | None = None
    dataset_sha256: str | None = None
    results: dict | None = _json()
    report_path: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def migrate(url: str) -> None:
    """Upgrade the database at `url` to the newest schema."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


@functools.cache
def _engine_for(url: str) -> Engine:
    migrate(url)
    return make_engine(url)


def get_engine() -> Engine:
    return _engine_for(get_settings().db_url())


@contextmanager
def session() -> Iterator[Session]:
    """A session that commits on success; objects stay readable after it closes."""
    with Session(get_engine(), expire_on_commit=False) as s:
        yield s
        s.commit()


def add(obj: SQLModel) -> SQLModel:
    with session() as s:
        s.add(obj)
        s.flush()
        s.refresh(obj)
    return obj


def reset_engines() -> None:
    """Forget cached engines (tests point the store somewhere else)."""
    _engine_for.cache_clear()
