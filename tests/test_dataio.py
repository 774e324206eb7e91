"""runtime.dataio: every supported file type, format detection, imports to TRL's formats, bad input."""

from __future__ import annotations

import json

import pytest

from runtime import dataio
from runtime.errors import BadInput
from runtime.outputs import write_jsonl

MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_iter_records_jsonl_keeps_indices_through_bad_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"messages": []}\n\n{oops\n[1, 2]\n\xff\xfe bad bytes\n{"text": "ok"}\n')
    items = list(dataio.iter_records(p))
    assert [i for i, _ in items] == [0, 1, 2, 3, 4]  # the blank line is not a record
    kinds = [r.kind if isinstance(r, dataio.RecordError) else "ok" for _, r in items]
    assert kinds == ["ok", "invalid_json", "not_object", "encoding", "ok"]
    assert items[1][1].line == 3 and items[3][1].line == 5


def test_every_file_type_reads_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(5)]
    write_jsonl(tmp_path / "a.jsonl", rows)
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.csv").write_text("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(5)))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "hf"))
    for name in ("a.jsonl", "a.json", "a.csv", "a.parquet", "hf"):
        got = [r for _, r in dataio.iter_records(tmp_path / name)]
        assert got == rows, name
        assert dataio.detect_format(tmp_path / name) == "prompt_completion"


def test_csv_json_cells_become_messages(tmp_path):
    p = tmp_path / "c.csv"
    import csv

    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        w.writerow([json.dumps(MSGS)])
    (_, rec), = dataio.iter_records(p)
    assert rec == {"messages": MSGS} and dataio.detect_format(p) == "conversational"


@pytest.mark.parametrize("rec,fmt", [
    ({"messages": MSGS}, "conversational"),
    ({"messages": [{**MSGS[0]}, {**MSGS[1], "weight": 1}]}, "openai_chat"),
    ({"prompt": "a", "completion": "b"}, "prompt_completion"),
    ({"prompt": MSGS[:1], "completion": MSGS[1:]}, "prompt_completion_conversational"),
    ({"text": "abc"}, "text"),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "preference"),
    ({"prompt": MSGS[:1], "chosen": MSGS[1:], "rejected": MSGS[1:]}, "preference_conversational"),
    ({"chosen": MSGS, "rejected": MSGS}, "preference_conversational"),
    ({"input": {"messages": MSGS[:1]}, "preferred_output": MSGS[1:], "non_preferred_output": MSGS[1:]},
     "openai_preference"),
    ({"instruction": "Add", "input": "1+1", "output": "2"}, "alpaca"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "sharegpt"),
    ({"foo": 1}, "unknown"),
])
def test_record_format(rec, fmt):
    assert dataio.record_format(rec) == fmt


def test_imports_to_trl_conversational():
    alp = dataio.to_conversational({"instruction": "Add", "input": "1+1", "output": "2"}, "alpaca")
    assert alp == {"messages": [{"role": "user", "content": "Add\n\n1+1"}, {"role": "assistant", "content": "2"}]}
    sg = dataio.to_conversational({"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "h"},
                                                     {"from": "gpt", "value": "g"}]}, "sharegpt")
    assert [m["role"] for m in sg["messages"]] == ["system", "user", "assistant"]
    implicit = dataio.to_conversational({"chosen": MSGS, "rejected": [MSGS[0], {"role": "assistant", "content": "x"}]})
    assert implicit["prompt"] == MSGS[:1] and implicit["chosen"] == MSGS[1:]
    parts = dataio.to_conversational({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                                 {"type": "text", "text": "b"}]}]})
    assert parts["messages"][0]["content"] == "ab"
    with pytest.raises(BadInput):
        dataio.to_conversational({"conversations": [{"from": "alien", "value": "x"}]}, "sharegpt")
    with pytest.raises(BadInput):
        dataio.to_conversational({"messages": "not a list"}, "conversational")


def test_50mb_single_line_is_one_record(tmp_path):
    p = tmp_path / "big.jsonl"
    big = "word " * (10 * 1024 * 1024)  # 50 MB
    with open(p, "w") as f:
        f.write(json.dumps({"text": "small"}) + "\n" + json.dumps({"text": big}) + "\n" + '{"text": "end"}\n')
    items = list(dataio.iter_records(p))
    assert len(items) == 3 and len(items[1][1]["text"]) == len(big)


def test_json_array_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"text": "a"}, {"text": ')
    with pytest.raises(BadInput, match="not valid JSON"):
        list(dataio.iter_records(bad))
    weird = tmp_path / "w.json"
    weird.write_text('[{"text": "a"}, 3]')
    (_, a), (_, b) = dataio.iter_records(weird)
    assert a == {"text": "a"} and b.kind == "not_object"


def test_write_jsonl_round_trip(tmp_path):
    p = write_jsonl(tmp_path / "x" / "o.jsonl", [{"text": "é"}])
    assert [r for _, r in dataio.iter_records(p)] == [{"text": "é"}] and sorted(x.name for x in p.parent.iterdir()) \
        == ["o.jsonl"]


def test_load_dataset_for_training(workspace):
    rows = [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(4)]
    write_jsonl(workspace / "a.jsonl", rows)
    ds = dataio.load_dataset(workspace / "a.jsonl")
    assert len(ds) == 4 and ds[1]["messages"] == [{"role": "user", "content": "Say 1"},
                                                  {"role": "assistant", "content": "1"}]
    native = [{"messages": MSGS}] * 3
    write_jsonl(workspace / "n.jsonl", native)
    assert dataio.load_dataset(workspace / "n.jsonl").to_list() == native
    write_jsonl(workspace / "n.jsonl", native[:2], overwrite=True)  # same name, new content: no stale cache
    assert len(dataio.load_dataset(workspace / "n.jsonl")) == 2
    (workspace / "bad.jsonl").write_text(json.dumps({"messages": MSGS}) + "\n{oops\n")
    with pytest.raises(BadInput, match="row 1"):
        dataio.load_dataset(workspace / "bad.jsonl")
    assert len(dataio.load_dataset(workspace / "bad.jsonl", strict=False)) == 1
