"""Hardening of the shared pieces every tool stands on: paths, outputs, the store, the CLI's error contract.
Each case was an attack that broke an earlier version (the hardening issue)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from runtime.errors import BadInput, FtpilotError, NotFound

REPO = Path(__file__).resolve().parents[1]


def ftpilot(*argv: str, env_extra: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "assistant", *argv], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


# --- paths -----------------------------------------------------------------------------------------------

def test_fifo_input_is_refused_not_read(workspace):
    from runtime.paths import resolve_path

    fifo = workspace / "pipe.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(BadInput) as e:
        resolve_path(fifo, must_exist=True)  # opening it would block forever
    assert e.value.code == "not_a_regular_file" and "FIFO" in e.value.message


def test_nul_byte_long_and_surrogate_paths_are_clear_errors(workspace):
    from runtime.paths import resolve_path

    for bad in ("data\x00.jsonl", "a/" * 3000 + "x.jsonl", "bad\udc80.jsonl"):
        with pytest.raises(BadInput) as e:
            resolve_path(bad, must_exist=True)
        assert e.value.code == "bad_path"
    long_name = "x" * 300 + ".jsonl"  # longer than a file name may be
    with pytest.raises((BadInput, NotFound)):
        resolve_path(long_name, must_exist=True)


# --- outputs ---------------------------------------------------------------------------------------------

def test_outputs_never_replace_inputs_existing_files_or_the_store(workspace):
    from runtime.outputs import check_output
    from runtime.settings import get_settings

    src = workspace / "train.jsonl"
    src.write_text('{"text": "a"}\n')
    with pytest.raises(BadInput) as e:
        check_output(src, inputs=[src], overwrite=True)
    assert e.value.code == "output_is_input"
    link = workspace / "alias.jsonl"
    link.symlink_to(src)
    with pytest.raises(BadInput) as e:
        check_output(link, inputs=[src], overwrite=True)
    assert e.value.code == "output_is_input"
    with pytest.raises(BadInput) as e:
        check_output(workspace / "alias2.jsonl", inputs=[src]) if False else check_output(src, inputs=[])
    assert e.value.code == "output_exists"
    store_file = get_settings().data_dir / "ftpilot.db"
    with pytest.raises(BadInput) as e:
        check_output(store_file, overwrite=True)
    assert e.value.code == "output_in_data_dir"
    with pytest.raises(BadInput) as e:
        check_output(workspace, overwrite=True)
    assert e.value.code == "bad_output_path"
    with pytest.raises(BadInput) as e:
        check_output(src / "below-a-file.jsonl")
    assert e.value.code == "bad_output_path"
    assert check_output(src, overwrite=True) == src.resolve()
    assert src.read_text() == '{"text": "a"}\n'  # checking never touches anything


def test_a_failed_write_leaves_nothing_behind(workspace):
    from runtime.outputs import OutputSet

    target = workspace / "out.jsonl"
    with pytest.raises(RuntimeError):
        with OutputSet() as files:
            files.open(target).write("half")
            files.open(workspace / "out.manifest.jsonl").write("x")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in workspace.iterdir()) == []


def test_commit_is_all_or_nothing_and_never_replaces(workspace):
    from runtime.outputs import OutputSet

    (workspace / "b.jsonl").write_text("owned by the person\n")
    with pytest.raises(BadInput) as e:
        with OutputSet() as files:
            files.open(workspace / "a.jsonl").write("new a\n")
            files.open(workspace / "b.jsonl").write("new b\n")  # b appeared after the checks
    assert e.value.code == "output_exists"
    assert sorted(p.name for p in workspace.iterdir()) == ["b.jsonl"]
    assert (workspace / "b.jsonl").read_text() == "owned by the person\n"


def test_two_concurrent_writers_one_wins_cleanly(workspace):
    from runtime.outputs import OutputSet

    target = workspace / "race.jsonl"
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def writer(tag: str) -> None:
        try:
            with OutputSet() as files:
                f = files.open(target)
                f.write((tag * 1000 + "\n") * 50)
                barrier.wait()
            outcomes.append("won")
        except BadInput as e:
            outcomes.append(e.code)

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["output_exists", "won"]
    lines = target.read_text().splitlines()
    assert len(lines) == 50 and len(set(lines)) == 1  # one writer's whole content, not a mix
    assert [p.name for p in workspace.iterdir()] == ["race.jsonl"]


def test_overwrite_replaces_atomically(workspace):
    from runtime.outputs import write_jsonl

    target = workspace / "o.jsonl"
    write_jsonl(target, [{"a": 1}])
    with pytest.raises(BadInput):
        write_jsonl(target, [{"a": 2}])
    write_jsonl(target, [{"a": 3}, {"s": "lone \udc80 surrogate"}], overwrite=True)
    lines = target.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"a": 3} and json.loads(lines[1])["s"].endswith("surrogate")


# --- the store -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"this is not sqlite\n" * 50, b"SQLite format 3\x00" + b"\xff" * 4096])
def test_a_broken_store_is_a_clear_error_even_for_runs_list(workspace, content):
    from runtime.settings import get_settings

    data = get_settings().data_dir
    (data / "ftpilot.db").write_bytes(content)
    for argv in (("runs", "list"), ("tool", "call", "list_runs")):
        r = ftpilot(*argv)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        err = json.loads(r.stdout)["error"]
        assert err["code"] == "store_unavailable" and "hint" in err


def test_a_locked_store_is_a_clear_error(workspace, monkeypatch):
    from runtime import store

    store.add(store.Conversation())
    store.reset_engines()
    monkeypatch.setattr(store, "BUSY_TIMEOUT_S", 0.3)
    from runtime.settings import get_settings

    holder = sqlite3.connect(get_settings().data_dir / "ftpilot.db")
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(FtpilotError) as e:
            store.add(store.Conversation())
        assert e.value.code == "store_unavailable" and "locked" in e.value.message
    finally:
        holder.rollback()
        holder.close()


# --- the CLI ---------------------------------------------------------------------------------------------

def test_args_file_nested_a_million_deep_is_invalid_not_a_crash(workspace):
    deep = workspace / "args.json"
    deep.write_text("[" * 1_000_000 + "]" * 1_000_000)
    r = ftpilot("tool", "call", "probe_hardware", "--args-file", str(deep))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert json.loads(r.stdout)["error"]["code"] == "validation_error"


def test_tool_list_names_each_tools_module():
    r = ftpilot("tool", "list")
    rows = json.loads(r.stdout)
    assert all(row["module"].startswith("tools.") for row in rows)
    assert {"audit_dataset", "train_sft"} <= {row["name"] for row in rows}
