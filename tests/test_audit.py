"""audit_dataset: planted problems of every check id are found; clean data gives few false alarms."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from runtime.outputs import write_jsonl
from runtime.samples import ticket_preference_records, ticket_records
from tools import call_tool

WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
         "government company number group problem fact water money story month lot right study book job word "
         "business issue side kind head house service friend father power hour game line end member law car city "
         "community name president team minute idea kid body information back parent face others level office door "
         "health art war history party result change morning reason research girl guy moment air teacher force").split()


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def chat(user: str, answer: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return {"messages": msgs}


def audit(**args) -> dict:
    res = call_tool("audit_dataset", {"model": "default", **args})
    assert res.ok, res.error
    return res.output


def by_check(out: dict) -> dict:
    return {f["check"]: f for f in out["findings"]}


@pytest.fixture
def planted(workspace, bundled_model_dir):
    """40 clean filler rows, then one planted problem per SFT check id at known rows."""
    rng = random.Random(1)
    rows = [chat(sentence(rng, 25), sentence(rng, 15)) for _ in range(40)]
    base40 = sentence(random.Random(99), 40).split()
    edited = list(base40)
    edited[20] = "zebra"
    lines = [json.dumps(r) for r in rows]
    planted = {
        "invalid_json": '{"messages": [oops',
        "schema": json.dumps({"messages": [{"role": "user", "content": 5}]}),
        "role_order": json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}),
        "empty_turn": json.dumps(chat("a question here", "")),
        "too_long": json.dumps(chat(sentence(rng, 10), sentence(rng, 250))),
        "exact_duplicate": json.dumps(chat("  " + rows[3]["messages"][0]["content"].upper(),
                                           rows[3]["messages"][1]["content"])),
        "near_duplicate_a": json.dumps(chat(" ".join(base40), "ok fine")),
        "near_duplicate": json.dumps(chat(" ".join(edited), "ok fine")),
        "pii": json.dumps(chat("mail me at jane.doe@example.com or call +1 415-555-0132 from 81.2.69.160",
                               "card 4556 7375 8689 9855 and key sk-abcdefghijklmnopqrstuvwx1234")),
        "refusal": json.dumps(chat(sentence(rng, 12), "I'm sorry, but I can't help with that request.")),
        "contamination": json.dumps(chat("eval text " + sentence(random.Random(5), 30), "the eval answer")),
    }
    idx = {}
    for k, v in planted.items():
        idx[k] = len(lines)
        lines.append(v)
    train = workspace / "train.jsonl"
    train.write_bytes(("\n".join(lines) + "\n").encode() + b'{"text": "\xff\xfe"}\n')
    idx["non_utf8"] = len(lines)
    evals = workspace / "eval.jsonl"
    write_jsonl(evals, [json.loads(planted["contamination"])] + [chat(sentence(rng, 20), "x") for _ in range(5)])
    return {"train": train, "eval": evals, "idx": idx}


def test_every_sft_check_finds_its_planted_row(planted):
    out = audit(path=str(planted["train"]), eval_path=str(planted["eval"]), max_tokens=160)
    f, idx = by_check(out), planted["idx"]
    assert out["rows"] == 52 and out["format"] == "conversational"
    assert set(f["invalid_json"]["rows"]) == {idx["invalid_json"], idx["non_utf8"]}
    assert f["invalid_json"]["lines"] == [idx["invalid_json"] + 1, idx["non_utf8"] + 1]
    assert f["schema"]["rows"] == [idx["schema"]]
    assert f["role_order"]["rows"] == [idx["role_order"]]
    assert f["empty_turn"]["rows"] == [idx["empty_turn"]] and f["empty_turn"]["severity"] == "error"
    assert f["too_long"]["rows"] == [idx["too_long"]]
    assert "part of the answer" in f["too_long"]["examples"][0]["detail"]
    assert f["exact_duplicate"]["rows"] == [idx["exact_duplicate"]]
    assert f["near_duplicate"]["rows"] == [idx["near_duplicate"]]
    assert f["contamination"]["rows"] == [idx["contamination"]] and f["contamination"]["severity"] == "error"
    assert f["pii"]["rows"] == [idx["pii"]]
    assert set(f["pii"]["details"]["kinds"]) == {"email", "phone", "ip", "card", "secret"}
    assert "jane.doe@example.com" not in json.dumps(out) and "[EMAIL]" in f["pii"]["examples"][0]["preview"]
    assert f["refusal"]["rows"] == [idx["refusal"]]
    for fi in out["findings"]:
        assert set(fi) >= {"check", "severity", "count", "rows", "examples", "message"}
        assert fi["count"] == len(fi["rows"]) and fi["severity"] in ("error", "warning", "info")
    assert out["recommendations"] and out["summary"]["valid_rows"] < out["rows"]


def test_audit_writes_report_json_and_store_rows(planted):
    from sqlmodel import select

    from runtime import store

    out = audit(path=str(planted["train"]), max_tokens=160)
    md = open(out["report_path"]).read()
    assert "# Audit of" in md and "`invalid_json`" in md
    assert json.load(open(out["json_path"]))["rows"] == out["rows"]
    with store.session() as s:
        ds = s.exec(select(store.Dataset)).one()
        audit_row = s.exec(select(store.Audit)).one()
    assert ds.rows == 52 and ds.format == "conversational" and ds.last_audit_id == audit_row.id == out["audit_id"]
    assert len(ds.sha256) == 64 and audit_row.summary["findings"]["pii"] == 1


def test_prompt_longer_than_limit_is_an_error(workspace, bundled_model_dir):
    rng = random.Random(3)
    rows = [chat(sentence(rng, 10), "yes") for _ in range(5)] + [chat(sentence(rng, 200), "yes")]
    write_jsonl(workspace / "d.jsonl", rows)
    f = by_check(audit(path="d.jsonl", max_tokens=64, exact_token_counts=True))
    assert f["too_long"]["rows"] == [5] and f["too_long"]["severity"] == "error"
    assert "all assistant tokens" in f["too_long"]["examples"][0]["detail"]


def test_tokens_counted_after_chat_template(workspace, bundled_model_dir):
    """The count includes the template (SmolLM2 adds a default system prompt): exact, not a word estimate."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    row = chat("hello there", "general kenobi")
    write_jsonl(workspace / "d.jsonl", [row])
    n = len(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
    assert by_check(audit(path="d.jsonl", max_tokens=n))  == {}
    f = by_check(audit(path="d.jsonl", max_tokens=n - 1))
    assert f["too_long"]["rows"] == [0]


def test_preference_checks(workspace, bundled_model_dir):
    rng = random.Random(2)
    rows = []
    for i in range(40):
        q = sentence(rng, 10)
        rows.append({"prompt": [{"role": "user", "content": q}],
                     "chosen": [{"role": "assistant", "content": sentence(rng, 30)}],
                     "rejected": [{"role": "assistant", "content": sentence(rng, 8)}]})
    rows.append({"prompt": [{"role": "user", "content": "x y"}], "chosen": [{"role": "assistant", "content": "Same"}],
                 "rejected": [{"role": "assistant", "content": "same "}]})
    rows.append({"prompt": [{"role": "user", "content": "x z"}], "chosen": [{"role": "assistant", "content": "a"}],
                 "rejected": [{"role": "assistant", "content": ""}]})
    write_jsonl(workspace / "p.jsonl", rows)
    out = audit(path="p.jsonl")
    f = by_check(out)
    assert out["format"] == "preference_conversational"
    assert f["preference_identical"]["rows"] == [40] and f["preference_empty"]["rows"] == [41]
    assert f["length_bias"]["count"] == 40 and "longer" in f["length_bias"]["message"]


def test_label_imbalance(workspace, bundled_model_dir):
    rows = ticket_records(90, seed=4)
    keep = [r for r in rows if r["messages"][-1]["content"] == "billing"] + \
        [r for r in rows if r["messages"][-1]["content"] != "billing"][:6]
    write_jsonl(workspace / "l.jsonl", keep)
    out = audit(path="l.jsonl")
    f = by_check(out)
    assert f["label_imbalance"]["count"] == 6 and f["label_imbalance"]["severity"] == "warning"
    assert out["summary"]["labels"]["billing"] == 30


def test_clean_ticket_data_gives_no_errors_and_no_near_duplicate_storm(workspace, bundled_model_dir):
    write_jsonl(workspace / "t.jsonl", ticket_records(300, seed=0))
    out = audit(path="t.jsonl")
    assert [f for f in out["findings"] if f["severity"] == "error"] == []
    f = by_check(out)
    assert f.get("near_duplicate", {"count": 0})["count"] < 0.1 * 300
    assert set(f) <= {"near_duplicate"}  # template near-copies (same ticket, other greeting) at most
    assert out["summary"]["labels"] == {"billing": 100, "technical": 100, "shipping": 100}
    write_jsonl(workspace / "p.jsonl", ticket_preference_records(200, seed=0))
    out = audit(path="p.jsonl")
    assert [f for f in out["findings"] if f["severity"] == "error"] == []
    assert "length_bias" not in by_check(out)


def test_unrelated_records_are_not_near_duplicates(workspace, bundled_model_dir):
    rng = random.Random(7)
    write_jsonl(workspace / "u.jsonl", [chat(sentence(rng, 40), sentence(rng, 10)) for _ in range(500)])
    assert "near_duplicate" not in by_check(audit(path="u.jsonl"))


@pytest.mark.parametrize("position", [0, 19, 39])
def test_one_word_edit_of_40_words_is_a_near_duplicate(workspace, bundled_model_dir, position):
    rng = random.Random(position)
    base = sentence(rng, 40).split()
    edited = list(base)
    edited[position] = "xylophone"
    rows = [chat(sentence(rng, 40), "ok") for _ in range(30)]
    rows[10] = chat(" ".join(base), "ok")
    rows[25] = chat(" ".join(edited), "ok")
    f = by_check(audit(path=_write(workspace, rows)))
    assert f["near_duplicate"]["rows"] == [25]


def _write(ws, rows):
    write_jsonl(ws / "n.jsonl", rows)
    return "n.jsonl"


def test_bad_input_gives_findings_or_clear_errors(workspace, bundled_model_dir):
    (workspace / "empty.jsonl").write_text("")
    res = call_tool("audit_dataset", {"path": "empty.jsonl"})
    assert not res.ok and res.error["code"] == "bad_input" and "empty" in res.error["message"]
    res = call_tool("audit_dataset", {"path": "missing.jsonl"})
    assert not res.ok and res.error["code"] == "not_found"
    res = call_tool("audit_dataset", {"path": "/etc/passwd"})
    assert not res.ok and res.error["code"] == "outside_workspace"
    (workspace / "types.jsonl").write_text(
        '{"messages": [{"role": "user", "content": ["x", 1]}]}\n{"messages": {"a": 1}}\n{"messages": 3}\n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n')
    f = by_check(audit(path="types.jsonl"))
    assert f["schema"]["rows"] == [1, 2] and f["role_order"]["rows"] == [0]


def test_50mb_single_line(workspace, bundled_model_dir):
    rng = random.Random(0)
    rows = [chat(sentence(rng, 20), sentence(rng, 10)) for _ in range(5)]
    with open(workspace / "big.jsonl", "w") as f:
        for r in rows[:2]:
            f.write(json.dumps(r) + "\n")
        f.write(json.dumps(chat("summarise", "lorem ipsum " * (50 * 1024 * 1024 // 12))) + "\n")
        for r in rows[2:]:
            f.write(json.dumps(r) + "\n")
    out = audit(path="big.jsonl")
    f = by_check(out)
    assert out["rows"] == 6 and f["too_long"]["rows"] == [2]
    assert "at least" in f["too_long"]["examples"][0]["detail"]


def test_cli_audit_dataset(workspace, bundled_model_dir):
    write_jsonl(workspace / "t.jsonl", ticket_records(30) + ticket_records(1))
    env = {**os.environ, "FTPILOT_WORKSPACE_ROOT": str(workspace)}
    proc = subprocess.run([sys.executable, "-m", "assistant", "tool", "call", "audit_dataset", "--args",
                           json.dumps({"path": str(workspace / "t.jsonl")})],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert out["rows"] == 31 and by_check(out)["exact_duplicate"]["rows"] == [30]
    bad = subprocess.run([sys.executable, "-m", "assistant", "tool", "call", "audit_dataset", "--args",
                          '{"path": "t.jsonl", "bogus": 1}'], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2


def test_strict_schema_nulls_mean_defaults_and_other_file_types(workspace, bundled_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"Name a colour number {i}", "input": "", "output": f"colour {i}"} for i in range(25)]
    pq.write_table(pa.Table.from_pylist(rows + [rows[0]]), workspace / "alpaca.parquet")
    out = audit(path="alpaca.parquet", max_tokens=None, eval_path=None,
                thresholds={"near_duplicate": None, "contamination_ngram": None, "contamination_similarity": None,
                            "label_max_classes": None, "label_imbalance_ratio": None, "length_bias": None,
                            "min_rows_for_stats": None}, exact_token_counts=None)
    assert out["format"] == "alpaca" and out["rows"] == 26
    assert by_check(out)["exact_duplicate"]["rows"] == [25]
    assert out["summary"]["thresholds"]["near_duplicate"] == 0.75
    with open(workspace / "sg.json", "w") as f:
        json.dump([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
                   {"conversations": [{"from": "gpt", "value": "first"}, {"from": "human", "value": "hi"}]}], f)
    out = audit(path="sg.json")
    assert out["format"] == "sharegpt" and by_check(out)["role_order"]["rows"] == [1]


def test_examples_carry_previews(workspace, bundled_model_dir):
    rows = ticket_records(25, seed=2)
    write_jsonl(workspace / "t.jsonl", rows + [rows[4]])
    out = audit(path="t.jsonl")
    ex = by_check(out)["exact_duplicate"]["examples"][0]
    assert ex["row"] == 25 and rows[4]["messages"][1]["content"][:40] in ex["preview"]
    assert "preview" in open(out["report_path"]).read() or rows[4]["messages"][1]["content"][:30] in open(
        out["report_path"]).read()
