"""The store: Alembic migrations to head on SQLite (WAL) and, when a server can be started, PostgreSQL."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

EXPECTED_TABLES = {"dataset", "audit", "conversation", "message", "tool_call", "job", "job_metric", "evaluation",
                   "alembic_version"}


def test_sqlite_store_migrates_and_uses_wal():
    from runtime import store

    engine = store.get_engine()
    assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("select version_num from alembic_version")).scalar()
    job = store.add(store.Job(kind="train_sft", config={"lr": 1e-4}))
    conv = store.add(store.Conversation(project={"task": "tickets"}))
    store.add(store.Message(conversation_id=conv.id, role="user", content="hi"))
    with store.session() as s:
        got = s.exec(select(store.Job).where(store.Job.id == job.id)).one()
        assert got.config == {"lr": 1e-4} and got.status == "queued" and got.created_at.tzinfo is not None
        assert s.exec(select(store.Message)).one().conversation_id == conv.id


def test_schema_matches_models():
    """Autogenerate finds nothing to do: the migrations and the SQLModel tables agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    from runtime import store

    with store.get_engine().connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins or not os.path.exists(os.path.join(bins[-1], "postgres")):
        pytest.skip("no PostgreSQL server installed (apt-get install postgresql)")
    bindir = bins[-1]
    run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    if run_as and not shutil.which("runuser"):
        pytest.skip("running as root without runuser to drop to the postgres user")
    # Not under pytest's tmp dir: its parents are private to root and the server runs as `postgres`.
    tmp_path = Path(tempfile.mkdtemp(prefix="ftpilot-pg-"))
    data = tmp_path / "pg"
    data.mkdir()
    if run_as:
        shutil.chown(tmp_path, "postgres")
        shutil.chown(data, "postgres")
    subprocess.run(run_as + [f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "ftpilot"],
                   check=True, capture_output=True)
    port = _free_port()
    proc = subprocess.Popen(run_as + [f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-k", str(tmp_path),
                                      "-c", "listen_addresses=127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"postgresql+psycopg2://ftpilot@127.0.0.1:{port}/postgres"
    try:
        from sqlalchemy import create_engine

        deadline = time.time() + 30
        while True:
            try:
                create_engine(url).connect().close()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.postgres
def test_postgres_migrations(postgres_url, monkeypatch):
    from runtime import store
    from runtime.settings import reset_settings

    monkeypatch.setenv("FTPILOT_DATABASE_URL", postgres_url)
    reset_settings()
    store.reset_engines()
    engine = store.get_engine()
    assert engine.dialect.name == "postgresql"
    assert EXPECTED_TABLES <= set(inspect(engine).get_table_names())
    job = store.add(store.Job(kind="train_dpo", config={"beta": 0.1}))
    with store.session() as s:
        assert s.get(store.Job, job.id).config == {"beta": 0.1}
    engine.dispose()
