"""Hardening of the data tools (the hardening issue, dataset side): nothing a person owns is overwritten, no input
hangs or crashes inspect/audit/clean/split, every odd file is a clear error or a row-level finding."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3

import pytest

from runtime.outputs import write_jsonl
from runtime.samples import ticket_records
from tools import call_tool


def digest(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def no_traceback(res) -> None:
    assert res.ok or res.error["code"] != "internal_error", res.error


@pytest.fixture
def pair(workspace):
    rows = ticket_records(40, seed=2)
    return write_jsonl(workspace / "train.jsonl", rows[:30]), write_jsonl(workspace / "eval.jsonl", rows[30:])


# --- never overwrite, never write onto an input or the store -----------------------------------------------

def test_clean_never_writes_onto_its_eval_file(workspace, pair):
    before = digest(pair[1])
    res = call_tool("clean_dataset", {"path": "train.jsonl", "eval_path": "eval.jsonl", "out_path": "eval.jsonl"})
    assert res.error["code"] == "output_is_input" and digest(pair[1]) == before


def test_clean_manifest_temporary_never_lands_on_the_input(workspace):
    """The old manifest temporary was `<out>.manifest.jsonl.partial`: an input of that name became 0 bytes."""
    src = write_jsonl(workspace / "d.manifest.jsonl.partial", [chat(f"q {i}", f"a {i}") for i in range(5)])
    before = digest(src)
    res = call_tool("clean_dataset", {"path": src.name, "out_path": "d.jsonl", "too_long": "keep"})
    assert res.ok, res.error
    assert digest(src) == before and res.output["output_rows"] == 5
    assert not [p.name for p in workspace.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_clean_never_replaces_the_store(workspace, pair):
    from runtime.settings import get_settings
    from runtime.store import session

    with session():
        pass
    db = get_settings().data_dir / "ftpilot.db"
    before = digest(db)
    res = call_tool("clean_dataset", {"path": "train.jsonl", "out_path": str(db), "too_long": "keep"})
    assert res.error["code"] == "output_in_data_dir" and digest(db) == before
    sqlite3.connect(db).execute("select count(*) from sqlite_master").fetchone()


def test_clean_split_and_samples_replace_files_only_with_overwrite(workspace, pair):
    from tools.registry import get_tool

    for name, args in [("clean_dataset", {"path": "train.jsonl", "too_long": "keep"}),
                       ("split_dataset", {"path": "train.jsonl", "eval_rows": 5}),
                       ("create_sample_dataset", {"out_dir": "s", "train_rows": 6, "eval_rows": 3})]:
        first = call_tool(name, args)
        assert first.ok, first.error
        outs = [v for k, v in first.output.items() if k.endswith("_path")]
        before = {p: digest(workspace / p) for p in outs}
        again = call_tool(name, args)
        assert again.error["code"] == "output_exists", name
        assert {p: digest(workspace / p) for p in outs} == before  # nothing half-written
        assert get_tool(name).cost_for({**args, "overwrite": True}) == "destructive"
        assert call_tool(name, {**args, "overwrite": True}).ok


def test_out_path_that_is_a_folder_or_under_a_file_is_a_clear_error(workspace, pair):
    (workspace / "folder.jsonl").mkdir()
    for out in ("folder.jsonl", "train.jsonl/x.jsonl"):
        res = call_tool("clean_dataset", {"path": "eval.jsonl", "out_path": out})
        assert res.error["code"] == "bad_output_path", res.error
    res = call_tool("split_dataset", {"path": "train.jsonl", "out_dir": "eval.jsonl"})
    assert res.error["code"] == "bad_output_path", res.error


def test_one_write_jsonl_in_the_project():
    import runtime.dataio
    import runtime.samples

    assert not hasattr(runtime.dataio, "write_jsonl")
    assert runtime.samples.write_jsonl is write_jsonl  # imported, not a second implementation


# --- inputs that hang or crash -----------------------------------------------------------------------------

def test_fifo_input_or_eval_is_refused_by_inspect_and_audit(workspace, pair):
    os.mkfifo(workspace / "pipe.jsonl")
    for name, args in [("inspect_dataset", {"path": "pipe.jsonl"}), ("audit_dataset", {"path": "pipe.jsonl"}),
                       ("audit_dataset", {"path": "train.jsonl", "eval_path": "pipe.jsonl"})]:
        res = call_tool(name, args)
        assert res.error["code"] == "not_a_regular_file", (name, res.error)


def deep(n: int) -> str:
    return "[" * n + "]" * n


@pytest.mark.parametrize("depth", [900, 1_000_000])
def test_absurdly_nested_rows_are_findings_not_crashes(workspace, depth):
    lines = [json.dumps(chat("fine", "row")), '{"messages": ' + deep(depth) + "}", json.dumps(chat("also", "fine"))]
    (workspace / "d.jsonl").write_text("\n".join(lines) + "\n")
    inspect = call_tool("inspect_dataset", {"path": "d.jsonl"})
    assert inspect.ok and inspect.output["rows"] == 3
    audit = call_tool("audit_dataset", {"path": "d.jsonl"})
    assert audit.ok, audit.error
    bad = {f["check"]: f["rows"] for f in audit.output["findings"] if f["severity"] == "error"}
    assert [1] in bad.values()
    clean = call_tool("clean_dataset", {"path": "d.jsonl", "too_long": "keep"})
    assert clean.ok and clean.output["output_rows"] == 2


def test_absurdly_nested_json_file_and_csv_cell(workspace):
    (workspace / "deep.json").write_text(deep(1_000_000))
    res = call_tool("audit_dataset", {"path": "deep.json"})
    assert res.error["code"] == "bad_input" and "nested" in res.error["message"]
    (workspace / "deep.csv").write_text('prompt,completion\nhello,world\n"' + deep(1_000_000) + '",x\n')
    for name in ("inspect_dataset", "audit_dataset"):
        res = call_tool(name, {"path": "deep.csv"})
        assert res.ok, res.error  # the cell is text, not a structure
    assert call_tool("clean_dataset", {"path": "deep.csv", "too_long": "keep"}).ok


def test_lone_surrogates_are_schema_findings_in_audit_clean_and_split(workspace):
    good = [{"conversations": [{"from": "human", "value": f"q {i}"}, {"from": "gpt", "value": f"a {i}"}]}
            for i in range(6)]
    bad_sharegpt = '{"conversations": [{"from": "human", "value": "hi \\ud800"}, {"from": "gpt", "value": "x"}]}'
    (workspace / "sg.jsonl").write_text("\n".join([json.dumps(r) for r in good] + [bad_sharegpt]) + "\n")
    alp = [{"instruction": f"say {i}", "input": "", "output": str(i)} for i in range(6)]
    bad_alpaca = '{"instruction": "x", "input": "", "output": "y", "system": "\\udfff sys"}'
    (workspace / "al.jsonl").write_text("\n".join([json.dumps(r) for r in alp] + [bad_alpaca]) + "\n")
    for name in ("sg.jsonl", "al.jsonl"):
        audit = call_tool("audit_dataset", {"path": name})
        assert audit.ok, audit.error
        assert {f["check"]: f["rows"] for f in audit.output["findings"]}["schema"] == [6]
        clean = call_tool("clean_dataset", {"path": name, "too_long": "keep"})
        assert clean.ok and clean.output["output_rows"] == 6, clean.error
        split = call_tool("split_dataset", {"path": name, "eval_rows": 2})
        assert split.ok and split.output["skipped_rows"] == [6], split.error
        assert call_tool("inspect_dataset", {"path": name}).ok


def test_folder_with_a_bogus_dataset_info_is_a_clear_error(workspace):
    d = workspace / "ds"
    d.mkdir()
    (d / "dataset_info.json").write_text("{not json at all")
    for name in ("inspect_dataset", "audit_dataset"):
        res = call_tool(name, {"path": "ds"})
        assert res.error["code"] == "bad_input" and "datasets" in res.error["message"], res.error


def test_csv_with_an_unterminated_quote_is_an_invalid_row(workspace):
    (workspace / "q.csv").write_text('prompt,completion\nhello,world\n"broken,oops\nnext,row\n')
    res = call_tool("audit_dataset", {"path": "q.csv"})
    assert res.ok, res.error
    f = {x["check"]: x for x in res.output["findings"]}
    assert f["invalid_json"]["rows"] == [1] and "unterminated quote" in f["invalid_json"]["examples"][0]["detail"]
    assert "schema" not in f


def test_gzip_jsonl_and_json_are_read(workspace):
    rows = ticket_records(30, seed=1)
    with gzip.open(workspace / "t.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with gzip.open(workspace / "t.json.gz", "wt") as f:
        json.dump(rows, f)
    for name in ("t.jsonl.gz", "t.json.gz"):
        inspect = call_tool("inspect_dataset", {"path": name})
        assert inspect.ok and inspect.output["rows"] == 30 and inspect.output["malformed"] == 0
        audit = call_tool("audit_dataset", {"path": name})
        assert audit.ok and "invalid_json" not in {f["check"] for f in audit.output["findings"]}
        clean = call_tool("clean_dataset", {"path": name, "too_long": "keep", "drop_duplicates": "none"})
        assert clean.ok and clean.output["output_rows"] == 30
        assert clean.output["out_path"].endswith("t.clean.jsonl") or clean.output["out_path"].endswith(".clean.jsonl")
        (workspace / "t.clean.jsonl").unlink()
        (workspace / "t.clean.manifest.jsonl").unlink()
    (workspace / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"text": "a"}\n' * 100)[:40])
    res = call_tool("audit_dataset", {"path": "bad.jsonl.gz"})
    assert res.error["code"] == "bad_input" and "gzip" in res.error["message"]
