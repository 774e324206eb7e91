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

from runtime.errors import FtpilotError
from runtime.settings import get_settings

BUSY_TIMEOUT_S = 30.0


class StoreUnavailable(FtpilotError):
    code = "store_unavailable"


def store_error(exc: Exception, url: str | None = None) -> StoreUnavailable:
    """A database error as something a person can act on (never a raw SQLAlchemy traceback)."""
    url = url or get_settings().db_url()
    where = url.split("@")[-1] if "@" in url else url  # no password in messages
    text = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
    low = text.lower()
    if "locked" in low or "busy" in low:
        hint = "Another process holds the store; try again in a moment (a job or the app may be writing)."
    elif "not a database" in low or "malformed" in low or "file is encrypted" in low:
        hint = ("The store file is damaged or is not an SQLite database. Move it aside (ftpilot then creates a "
                "new one) or point FTPILOT_DATABASE_URL at another store.")
    elif "readonly" in low or "read-only" in low or "unable to open" in low or "permission" in low:
        hint = "The data dir or the store file is not writable: set FTPILOT_DATA_DIR to a writable folder."
    else:
        hint = "Check FTPILOT_DATABASE_URL and that the database server is up."
    return StoreUnavailable(f"the store at {where} cannot be used: {text}", hint=hint)


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
    cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
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
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


_ENGINES_SEEN: list[Engine] = []  # so that reset_engines can close their pooled connections


@functools.cache
def _engine_for(url: str) -> Engine:
    from sqlalchemy.exc import SQLAlchemyError

    try:
        migrate(url)
    except SQLAlchemyError as e:
        raise store_error(e, url) from None
    engine = make_engine(url)
    _ENGINES_SEEN.append(engine)
    return engine


def get_engine() -> Engine:
    return _engine_for(get_settings().db_url())


@contextmanager
def session() -> Iterator[Session]:
    """A session that commits on success; objects stay readable after it closes. Database errors become
    `StoreUnavailable` with a hint."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with Session(get_engine(), expire_on_commit=False) as s:
            yield s
            s.commit()
    except SQLAlchemyError as e:
        raise store_error(e) from None


def add(obj: SQLModel) -> SQLModel:
    with session() as s:
        s.add(obj)
        s.flush()
        s.refresh(obj)
    return obj


def reset_engines() -> None:
    """Close and forget cached engines (tests point the store somewhere else)."""
    for engine in _ENGINES_SEEN:
        engine.dispose()
    _ENGINES_SEEN.clear()
    _engine_for.cache_clear()
