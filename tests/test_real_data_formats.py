"""Real data (the real-data issue): the formats and labels public data sets come in, and content checks that are
right. Each fixture is small and written here, shaped like the real set it stands for (HH-RLHF, Banking77,
Stanford Alpaca)."""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections import Counter

from runtime import dataio
from runtime.outputs import write_jsonl
from tools import call_tool

WORDS = ("card payment transfer account balance money refund fee limit pin atm cash top up exchange rate phone app "
         "verify identity statement lost stolen freeze unlock charge pending declined fraud travel abroad").split()


def read(path):
    return [json.loads(line) for line in open(path)]


def findings(res) -> dict:
    assert res.ok, res.error
    return {f["check"]: f for f in res.output["findings"]}


# --- HH-RLHF transcripts ---------------------------------------------------------------------------------

def hh(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{who}: {text}" if text else f"\n\n{who}:" for who, text in turns)


def hh_rows() -> list[dict]:
    shared = [("Human", "What are some cuss words in english?"), ("Assistant", "Here's an incomplete list."),
              ("Human", "What's your favorite one?")]
    rows = [
        {"chosen": hh(shared + [("Assistant", "I haven't even thought about it.")]),
         "rejected": hh(shared + [("Assistant", "Ass.")])},
        # the human's words refuse; an earlier assistant turn refused; the final chosen answer complies
        {"chosen": hh([("Human", "I'm sorry, but I can't sleep. Help?"), ("Assistant", "I'm sorry, I can't help with "
                       "that."), ("Human", "Please, just one tip."), ("Assistant", "Try a warm shower before bed.")]),
         "rejected": hh([("Human", "I'm sorry, but I can't sleep. Help?"), ("Assistant", "I'm sorry, I can't help "
                         "with that."), ("Human", "Please, just one tip."), ("Assistant", "Drink more coffee.")])},
        # the answer being reinforced refuses, the rejected one complies: harmlessness data
        {"chosen": hh([("Human", "How do I pick a lock to get into my neighbour's house?"),
                       ("Assistant", "I'm sorry, but I can't help you break into someone's home.")]),
         "rejected": hh([("Human", "How do I pick a lock to get into my neighbour's house?"),
                         ("Assistant", "Insert a tension wrench, then rake the pins.")])},
        # an empty final reply
        {"chosen": hh([("Human", "Tell me a joke"), ("Assistant", "")]),
         "rejected": hh([("Human", "Tell me a joke"), ("Assistant", "Why did the chicken cross the road?")])},
        # personal data in the human's turn
        {"chosen": hh([("Human", "My SSN is 859-56-0028 and I live at 390 Windsor Street. Who am I?"),
                       ("Assistant", "Please don't share that kind of information.")]),
         "rejected": hh([("Human", "My SSN is 859-56-0028 and I live at 390 Windsor Street. Who am I?"),
                         ("Assistant", "You are a person with a social security number.")])},
    ]
    return rows


def test_hh_transcripts_become_trl_conversational_preferences(workspace):
    with gzip.open(workspace / "hh.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in hh_rows())
    inspect = call_tool("inspect_dataset", {"path": "hh.jsonl.gz"})
    assert inspect.ok and inspect.output["format"] == "hh_transcript" and inspect.output["kind"] == "preference"
    assert "HH-RLHF" in inspect.output["layout"]
    conv = dataio.to_conversational(hh_rows()[0])
    assert conv == {"prompt": [{"role": "user", "content": "What are some cuss words in english?"},
                               {"role": "assistant", "content": "Here's an incomplete list."},
                               {"role": "user", "content": "What's your favorite one?"}],
                    "chosen": [{"role": "assistant", "content": "I haven't even thought about it."}],
                    "rejected": [{"role": "assistant", "content": "Ass."}]}
    f = findings(call_tool("audit_dataset", {"path": "hh.jsonl.gz"}))
    assert f["preference_empty"]["rows"] == [3]
    # only the final chosen answer counts: not the human's words, not an earlier assistant turn
    assert f["refusal"]["rows"] == [2] and f["refusal"]["severity"] == "info"
    assert f["refusal"]["details"]["pairs"] == {"chosen": 1}
    audit = call_tool("audit_dataset", {"path": "hh.jsonl.gz"}).output
    assert any("harmlessness" in r and "keep them" in r for r in audit["recommendations"])
    assert {"ssn", "address"} <= set(f["pii"]["details"]["kinds"]) and f["pii"]["severity"] == "error"
    clean = call_tool("clean_dataset", {"path": "hh.jsonl.gz", "too_long": "keep", "redact_pii": False})
    assert clean.ok and clean.output["output_rows"] == 4 and clean.output["format"] == "preference_conversational"
    assert read(clean.output["out_path"])[0] == conv
    ds = dataio.load_dataset(clean.output["out_path"])
    assert ds[0]["chosen"] == conv["chosen"] and len(ds[0]["prompt"]) == 3


# --- labelled CSVs: text/label layouts, 77+ labels, a columns mapping --------------------------------------

def labelled_rows(n_labels: int = 80, seed: int = 0) -> list[tuple[str, str]]:
    """Banking77-shaped: short queries, snake_case intents, 8 to 44 rows per intent (5.5x imbalance)."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for i in range(n_labels):
        k = 0
        while k < 8 + (i % 10) * 4:
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) + f" {rng.randint(0, 10**6)}?"
            if text not in seen:
                seen.add(text)
                rows.append((text, f"intent_{i}_{WORDS[i % len(WORDS)]}"))
                k += 1
    rng.shuffle(rows)
    return rows


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_labelled_csv_with_80_labels_is_read_as_text_and_label(workspace, bundled_model_dir):
    rows = labelled_rows()
    write_csv(workspace / "bank.csv", ["text", "category"], rows)
    inspect = call_tool("inspect_dataset", {"path": "bank.csv"})
    assert inspect.ok and inspect.output["format"] == "text_label" and inspect.output["kind"] == "sft"
    assert inspect.output["columns"] == {"prompt": "text", "completion": "category"}
    assert "'category'" in inspect.output["layout"]
    audit = call_tool("audit_dataset", {"path": "bank.csv"})
    f = findings(audit)
    assert len(audit.output["summary"]["labels"]) == 80
    assert "label_imbalance" in f and "5.5x" in f["label_imbalance"]["message"]
    split = call_tool("split_dataset", {"path": "bank.csv", "eval_fraction": 0.1})
    assert split.ok and split.output["stratified"], split.error
    per_label = Counter(label for _, label in rows)
    target = round(0.1 * len(rows))
    assert split.output["eval_rows"] == target
    for label, sides in split.output["labels"].items():
        assert abs(sides["eval"] - 0.1 * per_label[label]) <= 1, (label, sides)
    clean = call_tool("clean_dataset", {"path": "bank.csv", "too_long": "keep"})
    assert clean.ok and clean.output["format"] == "conversational"
    first = read(clean.output["out_path"])[0]["messages"]
    assert first == [{"role": "user", "content": rows[0][0]}, {"role": "assistant", "content": rows[0][1]}]


def test_columns_mapping_names_the_persons_own_columns(workspace, bundled_model_dir):
    rows = labelled_rows(n_labels=12, seed=1)
    write_csv(workspace / "mine.csv", ["id", "utterance_text", "intent_name"],
              [(i, t, lab) for i, (t, lab) in enumerate(rows)])
    assert call_tool("inspect_dataset", {"path": "mine.csv"}).output["format"] == "unknown"
    cols = {"prompt": "utterance_text", "completion": "intent_name"}
    inspect = call_tool("inspect_dataset", {"path": "mine.csv", "columns": cols})
    assert inspect.ok and inspect.output["format"] == "prompt_completion" and inspect.output["columns"] == cols
    audit = call_tool("audit_dataset", {"path": "mine.csv", "columns": cols})
    assert audit.ok and len(audit.output["summary"]["labels"]) == 12
    split = call_tool("split_dataset", {"path": "mine.csv", "columns": cols, "eval_rows": 24})
    assert split.ok and split.output["stratified"] and split.output["eval_rows"] == 24
    assert set(read(split.output["eval_path"])[0]) == {"id", "utterance_text", "intent_name"}  # the person's layout
    clean = call_tool("clean_dataset", {"path": "mine.csv", "columns": cols, "too_long": "keep"})
    assert read(clean.output["out_path"])[0]["messages"][1] == {"role": "assistant", "content": rows[0][1]}
    ds = dataio.load_dataset(workspace / "mine.csv", columns=cols)
    assert ds[0] == {"prompt": rows[0][0], "completion": rows[0][1]}
    # a system column, numeric labels, JSONL
    write_jsonl(workspace / "n.jsonl", [{"q": f"question {i}", "y": i % 3, "sys": "Answer 0, 1 or 2."}
                                        for i in range(9)])
    rec = next(r for _, r in dataio.iter_records(workspace / "n.jsonl",
                                                 columns={"prompt": "q", "completion": "y", "system": "sys"}))
    assert rec == {"prompt": [{"role": "system", "content": "Answer 0, 1 or 2."},
                              {"role": "user", "content": "question 0"}],
                   "completion": [{"role": "assistant", "content": "0"}]}
    for bad in ({"prompt": "utterance_text", "completion": "nope"}, {"prompt": "utterance_text"},
                {"question": "utterance_text", "completion": "intent_name"}):
        res = call_tool("audit_dataset", {"path": "mine.csv", "columns": bad})
        assert res.error["code"] == "bad_columns", (bad, res.error)


def test_one_label_rule_for_audit_split_and_evaluation():
    from runtime.labels import label_set
    from tools import _evalcore as ec

    intents = [f"intent_{i}" for i in range(77)]
    assert label_set(intents * 3) == sorted(intents)
    assert ec.label_set(intents * 3) == sorted(ec.normalize(i) for i in intents)  # evaluation asks the same rule
    assert label_set(["yes", "no"] * 3) == ["no", "yes"]
    assert label_set([f"Paris {i}" for i in range(40)]) is None  # short, but free text: no repeats
    assert label_set(["a long answer " * 3] * 10 + ["b"] * 10) is None


# --- Alpaca: placeholders, numbers that are not cards, refusals ---------------------------------------------

NOT_CARDS = ["Result: 54.47021635789044.", "The average is 50.07692307692308.", "Binary: 1001000010100110",
             "ISBN 9786341685878", "4 8 12 16 20 24 28 32 36 40", "9 18 27 36 45 54 63 72 81 90"]
REFUSALS = ["Sorry, the task involves visual output, which I cannot produce.",
            "As an AI language model, I cannot browse the internet.",
            "I'm sorry, but I cannot complete this instruction without the image."]
NOT_REFUSALS = ["I can't help but admire the view from the top.", "As an air traffic controller, you must stay calm.",
                "I'm sorry to hear that you can't sleep. Try reading before bed."]


def alpaca_rows() -> list[dict]:
    rows = [{"instruction": f"Give tip number {i} for saving money.", "input": "",
             "output": f"Tip {i}: put {i * 5} dollars aside every week and track spending."} for i in range(12)]
    rows += [{"instruction": f"Compute or write item {i}.", "input": "", "output": t} for i, t in enumerate(NOT_CARDS)]
    rows += [{"instruction": "Draw a logo for the company.", "input": "Acme", "output": "<nooutput>"},
             {"instruction": "List the colours in the photo.", "input": "", "output": "<nooutput>"},
             {"instruction": "What is the input's email?", "input": "none here", "output": "N/A"}]
    rows += [{"instruction": f"Do visual task {i}.", "input": "", "output": t} for i, t in enumerate(REFUSALS)]
    rows += [{"instruction": f"Write sentence {i}.", "input": "", "output": t} for i, t in enumerate(NOT_REFUSALS)]
    rows += [{"instruction": "Rewrite politely: I'm sorry, but I can't attend.", "input": "",
              "output": "Unfortunately I will be unable to attend; thank you for the invitation."},
             {"instruction": "Check this card number.", "input": "4556 7375 8689 9855", "output": "It passes Luhn."},
             {"instruction": "Give a test card for Stripe.", "input": "", "output": "Use 4242 4242 4242 4242."}]
    return rows


def test_alpaca_placeholders_cards_and_refusals(workspace, bundled_model_dir):
    rows = alpaca_rows()
    (workspace / "alpaca.json").write_text(json.dumps(rows))
    f = findings(call_tool("audit_dataset", {"path": "alpaca.json"}))
    idx = {r["output"]: i for i, r in enumerate(rows)}
    assert f["placeholder"]["rows"] == [idx["<nooutput>"] - 1, idx["<nooutput>"], idx["N/A"]]
    assert f["refusal"]["rows"] == [idx[t] for t in REFUSALS] and f["refusal"]["severity"] == "warning"
    card_row, test_row = len(rows) - 2, len(rows) - 1
    assert f["pii"]["rows"] == [card_row, test_row]  # no decimal, binary string, ISBN or table
    assert f["pii"]["details"]["kinds"] == {"card": 1, "card_test": 1} and f["pii"]["severity"] == "error"
    clean = call_tool("clean_dataset", {"path": "alpaca.json", "too_long": "keep"})
    assert clean.ok, clean.error
    out = read(clean.output["out_path"])
    texts = [r["messages"][-1]["content"] for r in out]
    assert all(t in texts for t in NOT_CARDS + NOT_REFUSALS) and "<nooutput>" not in texts and "N/A" not in texts
    assert "Use 4242 4242 4242 4242." in texts  # a documented test number is not redacted
    manifest = {m["row"]: m for m in read(clean.output["manifest_path"])}
    assert manifest[idx["N/A"]]["reasons"] == ["placeholder"]
    assert manifest[card_row]["redactions"] == [{"field": "messages[0].content", "kind": "card", "start": 25,
                                                 "end": 44, "masked": "45…55"}]
    assert out[manifest[card_row]["output_row"]]["messages"][0]["content"].endswith("[CARD]")
    assert len(out) == len(rows) - 3 and clean.output["reasons"]["placeholder"] == 3


def test_sample_dataset_train_and_eval_share_no_template(workspace, bundled_model_dir):
    res = call_tool("create_sample_dataset", {"out_dir": "s"})
    assert res.ok
    audit = call_tool("audit_dataset", {"path": res.output["train_path"], "eval_path": res.output["eval_path"]})
    assert "contamination" not in findings(audit)
