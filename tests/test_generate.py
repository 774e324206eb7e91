"""generate_synthetic, fast: the filter accounting, provenance and the never-overwrite rule on the tiny model."""

from __future__ import annotations

import json

from tools import call_tool


def _seeds(ws, n=10):
    from runtime.outputs import write_jsonl
    from runtime.samples import ticket_records

    return write_jsonl(ws / "seeds.jsonl", ticket_records(n, seed=5))


def test_generate_counts_add_up_and_seeds_are_untouched(tiny_model_dir, workspace):
    seeds = _seeds(workspace)
    before = seeds.read_bytes()
    res = call_tool("generate_synthetic", {"seeds_path": "seeds.jsonl", "n": 4, "teacher": f"hf:{tiny_model_dir}",
                                           "max_new_tokens": 24, "max_rounds": 1, "temperature": 1.0})
    assert res.ok, res.error
    o = res.output
    c = o["counts"]
    # every request is accounted for by exactly one filter outcome
    assert c["generated"] == 8
    assert c["generated"] == c["schema_valid"] + c.get("rejected_schema_invalid", 0)
    assert c["schema_valid"] == c["length_ok"] + c.get("rejected_length", 0)
    assert c["length_ok"] == c["not_echo"] + c.get("rejected_echoes_instructions", 0)
    assert c["not_echo"] == c["not_duplicate"] + c.get("rejected_near_duplicate", 0)
    assert c["written"] == o["rows_written"] == min(4, c["not_duplicate"])
    assert seeds.read_bytes() == before
    rows = [json.loads(x) for x in open(o["out_path"]) if x.strip()]
    assert len(rows) == o["rows_written"]
    for r in rows:
        assert r["provenance"]["teacher"]["backend"] == "transformers"
        assert r["provenance"]["prompt"].startswith("prompts/synth_self_instruct.md@")
        assert r["provenance"]["seed_rows"] and r["messages"][-1]["content"] in ("billing", "technical", "shipping")
    manifest = json.loads(open(o["manifest_path"]).read())
    assert manifest["counts"] == c and manifest["seeds_sha256"]
    # the audit step ran (or says clearly why not)
    assert o["audit"] is not None and ("passed" in o["audit"] or "note" in o["audit"])


def test_generate_refuses_to_overwrite_seeds(tiny_model_dir, workspace):
    _seeds(workspace)
    res = call_tool("generate_synthetic", {"seeds_path": "seeds.jsonl", "out_path": "seeds.jsonl",
                                           "teacher": f"hf:{tiny_model_dir}"})
    assert not res.ok and res.error["code"] == "bad_input" and "overwrite" in res.error["message"]


def test_near_duplicate_filter_uses_minhash():
    from runtime.neardup import NearDuplicateIndex, minhash
    from tools.generate import _echoes_instructions

    a = minhash("my router keeps disconnecting from wifi every 10 minutes please help")
    b = minhash("My router keeps disconnecting from WiFi every 10 minutes please help me")
    c = minhash("I was charged twice for my order and want a refund")
    assert a.jaccard(b) > 0.7 and a.jaccard(c) < 0.2
    index = NearDuplicateIndex(0.7)
    index.add("seed0", "my router keeps disconnecting from wifi every 10 minutes please help")
    index.add("seed1", "I was charged twice for my order and want a refund")
    assert index.find("My router keeps disconnecting from WiFi every 10 minutes please help me") == "seed0"
    assert index.find("where is my parcel, it was due on monday") is None
    assert _echoes_instructions("<the new request>", "classify tickets")
    assert not _echoes_instructions("My order is late", "classify tickets")


def test_evol_instruct_and_judge_paths_run_and_account(tiny_model_dir, workspace):
    _seeds(workspace)
    res = call_tool("generate_synthetic", {"seeds_path": "seeds.jsonl", "n": 3, "method": "evol_instruct",
                                           "teacher": f"hf:{tiny_model_dir}", "judge": f"hf:{tiny_model_dir}",
                                           "judge_threshold": 1, "max_new_tokens": 40, "max_rounds": 1,
                                           "min_prompt_chars": 4, "max_prompt_chars": 12,
                                           "out_path": "evol.jsonl"})
    assert res.ok, res.error
    c = res.output["counts"]
    assert c["generated"] == 6 and "judge_passed" in c
    # the length bounds are in the grammar: even a random teacher closes its JSON in time
    assert c["schema_valid"] == 6
    # threshold 1: every row the judge scored passes, so the judge only rejects unparseable verdicts (none)
    assert c["not_duplicate"] >= 1 and c["judge_passed"] == c["not_duplicate"]
    import json

    rows = [json.loads(x) for x in open(res.output["out_path"]) if x.strip()]
    assert rows and all(r["provenance"]["judge_score"] in (1, 2, 3, 4, 5) for r in rows)
    assert all(4 <= len(r["messages"][1]["content"]) <= 12 for r in rows)
    assert res.output["prompt"].startswith("prompts/synth_evol_instruct.md@")


def test_generate_never_replaces_an_existing_file(tiny_model_dir, workspace):
    """Issue 8's rule for every tool that writes: an existing out_path (or its manifest) is refused before any
    generation, unless overwrite."""
    _seeds(workspace)
    (workspace / "out.jsonl").write_text("mine\n")
    args = {"seeds_path": "seeds.jsonl", "out_path": "out.jsonl", "teacher": f"hf:{tiny_model_dir}", "n": 1,
            "max_rounds": 1, "max_new_tokens": 24, "audit": False}
    res = call_tool("generate_synthetic", args)
    assert not res.ok and res.error["code"] == "output_exists"
    assert (workspace / "out.jsonl").read_text() == "mine\n"
    (workspace / "new.manifest.json").write_text("{}")
    res = call_tool("generate_synthetic", {**args, "out_path": "new.jsonl"})
    assert not res.ok and res.error["code"] == "output_exists" and not (workspace / "new.jsonl").exists()
    res = call_tool("generate_synthetic", {**args, "overwrite": True})
    assert res.ok, res.error
    assert (workspace / "out.jsonl").read_text() != "mine\n"
