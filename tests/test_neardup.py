"""runtime.neardup: one MinHash/LSH definition of "near-copy" for the audit (whole files) and synthesis (one text
at a time), and one union-find."""

from __future__ import annotations

import numpy as np

from runtime import neardup
from runtime.neardup import NearDuplicateIndex, clusters, minhash


def test_minhash_and_index_find_near_copies_one_text_at_a_time():
    a = minhash("my router keeps disconnecting from wifi every 10 minutes please help")
    b = minhash("My router keeps disconnecting from WiFi every 10 minutes please help me")
    c = minhash("I was charged twice for my order and want a refund")
    assert a.jaccard(b) > 0.7 and a.jaccard(c) < 0.2
    assert minhash("Hello   WORLD again").jaccard(minhash("hello world again")) == 1.0  # NFKC, case, whitespace
    index = NearDuplicateIndex(0.7)
    index.add("seed0", "my router keeps disconnecting from wifi every 10 minutes please help")
    index.add("seed1", "I was charged twice for my order and want a refund")
    index.add("seed2", "my router keeps disconnecting from wifi every 10 minutes please help!")
    assert index.find("My router keeps disconnecting from WiFi every 10 minutes please help me") == "seed0"
    assert index.find("where is my parcel, it was due on monday") is None
    m = minhash("i was charged twice for my order and want a refund now")
    assert index.find("ignored when the signature is given", m) == "seed1"


def test_one_text_is_signed_as_the_audit_signs_a_row():
    """minhash(text) is the batched signature of that text's words (numbered by a stable word hash)."""
    text = "Reset my password for the billing portal please"
    words = [neardup.word_hash(w) for w in text.lower().split()]
    sig, rows = neardup.signatures(np.asarray(words, np.uint64), np.asarray([0, len(words)]))
    assert rows.tolist() == [0] and (sig[0] == minhash(text).values).all()
    assert neardup.word_hash("billing") == 0x111019462A1CD424  # the same in every process (no hash salt)
    pairs = neardup.similar_pairs(np.stack([sig[0], sig[0], minhash("something else entirely here").values]), 0.9)
    assert pairs == {(0, 1)}


def test_clusters_are_keyed_by_their_smallest_member():
    assert clusters([(3, 1), (5, 3), (8, 7)]) == {1: [1, 3, 5], 7: [7, 8]}
    assert clusters([(3, 1)], items=[0, 1, 2, 3]) == {0: [0], 1: [1, 3], 2: [2]}
    assert clusters([]) == {}


def test_audit_and_synthesis_agree_on_what_is_a_near_copy(workspace):
    """The audit (a whole file, batched) and the synthesis index (one text at a time) share one definition."""
    from runtime.outputs import write_jsonl
    from tools.dataset.analysis import analyze

    texts = ["my router keeps disconnecting from wifi every 10 minutes please help",
             "I was charged twice for my order and want a refund",
             "My router keeps disconnecting from WiFi every 10 minutes please help me",
             "where is my parcel, it was due on monday"]
    path = write_jsonl(workspace / "t.jsonl", ({"text": t} for t in texts))
    audit = analyze(path, check_tokens=False)
    index = NearDuplicateIndex(0.75)
    flagged = []
    for i, t in enumerate(texts):
        if index.find(t) is not None:
            flagged.append(i)
        index.add(str(i), t)
    assert audit.findings["near_duplicate"].rows == flagged == [2]
