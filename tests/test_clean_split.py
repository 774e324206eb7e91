"""clean_dataset and split_dataset: new files only, a manifest for every change, nothing lost."""

from __future__ import annotations

import hashlib
import json
import random

from runtime.outputs import write_jsonl
from runtime.samples import ticket_records
from tools import call_tool


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def words(rng, n):
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "omega", "kappa", "sigma", "theta", "zeta",
                                "iota", "lambda", "rho", "tau", "phi", "chi", "psi", "mu", "nu", "xi", "pi"])
                    for _ in range(n))


def read(path):
    return [json.loads(line) for line in open(path)]


def messy(ws):
    rng = random.Random(0)
    rows = [chat(words(rng, 30), words(rng, 10)) for _ in range(20)]
    lines = [json.dumps(r) for r in rows]
    lines += ["{broken", json.dumps(rows[0]), json.dumps(chat("write to bob@example.org please", "done")),
              json.dumps(chat(words(rng, 5), words(rng, 300))), json.dumps(chat("", "empty user"))]
    p = ws / "messy.jsonl"
    p.write_bytes(("\n".join(lines) + "\n").encode() + b"\xff\n")
    return p


def test_clean_writes_new_file_and_manifest_and_loses_nothing(workspace, bundled_model_dir):
    p = messy(workspace)
    before = hashlib.sha256(p.read_bytes()).hexdigest()
    res = call_tool("clean_dataset", {"path": "messy.jsonl", "max_tokens": 200})
    assert res.ok, res.error
    out = res.output
    assert hashlib.sha256(p.read_bytes()).hexdigest() == before  # the input is untouched
    cleaned, manifest = read(out["out_path"]), read(out["manifest_path"])
    dropped = [m for m in manifest if m["action"] == "dropped"]
    assert out["input_rows"] == 26 and len(cleaned) == out["output_rows"]
    assert len(cleaned) + len(dropped) == out["input_rows"]  # nothing lost
    why = {m["row"]: m for m in manifest}
    assert why[20]["reasons"] == ["invalid_json"] and why[20]["line"] == 21
    assert why[21]["reasons"] == ["exact_duplicate"] and why[21]["duplicate_of"] == 0
    assert why[22]["action"] == "changed" and why[22]["pii"] == {"email": 1}
    assert why[23]["reasons"] == ["too_long"] and why[24]["reasons"] == ["empty_turn"]
    assert why[25]["reasons"] == ["invalid_json"]
    assert any("[EMAIL]" in r["messages"][0]["content"] for r in cleaned)
    assert not any("bob@example.org" in json.dumps(r) for r in cleaned)
    again = call_tool("audit_dataset", {"path": out["out_path"], "max_tokens": 200})
    assert again.ok and [f for f in again.output["findings"] if f["severity"] == "error"] == []


def test_clean_truncates_answers_to_fit(workspace, bundled_model_dir):
    from transformers import AutoTokenizer

    rng = random.Random(1)
    write_jsonl(workspace / "d.jsonl", [chat(words(rng, 5), words(rng, 400)), chat("hi", "short")])
    res = call_tool("clean_dataset", {"path": "d.jsonl", "max_tokens": 128, "too_long": "truncate"})
    assert res.ok, res.error
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    rows = read(res.output["out_path"])
    assert len(rows) == 2
    n = len(tok.apply_chat_template(rows[0]["messages"], tokenize=True, return_dict=True)["input_ids"])
    assert 100 <= n <= 128
    man = read(res.output["manifest_path"])
    assert man[0]["reasons"] == ["truncated"] and man[0]["removed_tokens"] > 0


def test_clean_imports_alpaca_and_refuses_to_overwrite(workspace, bundled_model_dir):
    write_jsonl(workspace / "a.jsonl", [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(5)])
    res = call_tool("clean_dataset", {"path": "a.jsonl", "out_path": "out/a.jsonl"})
    assert res.ok, res.error
    assert read(res.output["out_path"])[0] == chat("Say 0", "0") and res.output["reasons"] == {"converted": 5}
    bad = call_tool("clean_dataset", {"path": "a.jsonl", "out_path": "a.jsonl"})
    assert not bad.ok and bad.error["code"] == "output_is_input"


def test_clean_drops_contaminated_rows(workspace, bundled_model_dir):
    rows = ticket_records(100, seed=3)
    write_jsonl(workspace / "train.jsonl", rows[:80] + rows[85:87])
    write_jsonl(workspace / "eval.jsonl", rows[80:100])
    res = call_tool("clean_dataset", {"path": "train.jsonl", "eval_path": "eval.jsonl", "drop_duplicates": "none"})
    assert res.ok, res.error
    dropped = {m["row"] for m in read(res.output["manifest_path"]) if "contamination" in m["reasons"]}
    assert {80, 81} <= dropped


def test_split_is_seeded_stratified_and_keeps_duplicates_together(workspace, bundled_model_dir):
    rows = ticket_records(200, seed=1)
    rng = random.Random(0)
    base = words(rng, 40).split()
    dups = []
    for k in range(4):  # a near-duplicate cluster of 4
        w = list(base)
        w[k * 9] = "changed"
        dups.append(chat(" ".join(w), "billing"))
    data = rows + dups + [rows[5]]  # plus an exact copy of row 5
    p = workspace / "all.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in data) + "{bad\n")
    res = call_tool("split_dataset", {"path": "all.jsonl", "eval_fraction": 0.2, "seed": 3})
    assert res.ok, res.error
    out = res.output
    train, evals = read(out["train_path"]), read(out["eval_path"])
    assert out["skipped_rows"] == [205] and len(train) + len(evals) + 1 == len(data) + 1
    assert out["stratified"] and abs(len(evals) - 41) <= 4
    for lab, c in out["labels"].items():
        assert abs(c["eval"] / (c["eval"] + c["train"]) - 0.2) < 0.06, (lab, c)
    key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    tr, ev = {key(r) for r in train}, {key(r) for r in evals}
    assert not tr & ev  # the exact copy of row 5 is on the same side as row 5
    cluster_sides = {key(d) in ev for d in dups}
    assert len(cluster_sides) == 1 and out["duplicate_groups"] >= 2
    again = call_tool("split_dataset", {"path": "all.jsonl", "eval_fraction": 0.2, "seed": 3, "out_dir": "again"})
    assert read(again.output["eval_path"]) == evals  # same seed, same split
    other = call_tool("split_dataset", {"path": "all.jsonl", "eval_fraction": 0.2, "seed": 4, "out_dir": "other"})
    assert read(other.output["eval_path"]) != evals


WEIRD = [
    '{"messages": [{"role": ["user"], "content": "x"}, {"role": "assistant", "content": "y"}]}',
    '{"messages": [{"role": "user", "content": {"a": 1}}, {"role": "assistant", "content": "y"}]}',
    '{"messages": [{"role": "user", "content": "bad \\ud800 surrogate"}, {"role": "assistant", "content": "y"}]}',
    '{"messages": [{"role": "user", "content": null}, {"role": "assistant", "content": "y"}]}',
    '{"messages": [null, 3]}',
    '{"messages": []}',
    '{"messages": [{"content": "no role"}]}',
    '"just a string"',
    "[" * 100_000 + "]" * 100_000,
]


def test_hostile_records_are_findings_and_every_tool_survives_them(workspace, bundled_model_dir):
    rows = ticket_records(10, seed=5)
    (workspace / "w.jsonl").write_text("\n".join(WEIRD + [json.dumps(r) for r in rows]) + "\n")
    audit = call_tool("audit_dataset", {"path": "w.jsonl"})
    assert audit.ok, audit.error
    flagged = set()
    for f in audit.output["findings"]:
        flagged |= set(f["rows"])
    assert set(range(len(WEIRD))) <= flagged and audit.output["rows"] == len(WEIRD) + 10
    clean = call_tool("clean_dataset", {"path": "w.jsonl"})
    assert clean.ok, clean.error
    assert clean.output["output_rows"] == 10 and clean.output["dropped"] == len(WEIRD)
    split = call_tool("split_dataset", {"path": "w.jsonl", "eval_rows": 2})
    assert split.ok, split.error
    assert split.output["train_rows"] + split.output["eval_rows"] + len(split.output["skipped_rows"]) >= 10
    assert call_tool("inspect_dataset", {"path": "w.jsonl"}).ok


def test_split_halves_pass_the_contamination_audit(workspace, bundled_model_dir):
    """The sample tickets hold template near-copies (same ticket, other greeting): a random split leaks them into
    eval; split_dataset groups them, so auditing train against eval finds no contamination."""
    write_jsonl(workspace / "all.jsonl", ticket_records(300, seed=0))
    for seed in (0, 1):
        s = call_tool("split_dataset", {"path": "all.jsonl", "eval_fraction": 0.2, "seed": seed, "overwrite": seed > 0})
        assert s.ok, s.error
        audit = call_tool("audit_dataset", {"path": s.output["train_path"], "eval_path": s.output["eval_path"]})
        assert audit.ok, audit.error
        assert "contamination" not in {f["check"] for f in audit.output["findings"]}
        assert s.output["eval_rows"] == 60 and s.output["stratified"]
