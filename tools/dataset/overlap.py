"""Repeated text: exact copies, near-copies (MinHash, runtime.neardup) and overlap with an eval set.

The three checks share one store of each row's words (as integer ids, in file order) and one set of MinHash
signatures, so they are one unit. A copy keeps no words of its own: it is reported once, as a copy.
"""

from __future__ import annotations

import hashlib
from array import array
from pathlib import Path

from runtime import dataio, neardup
from tools.dataset.checks import Check, Context, Row, normalize

MAX_WORDS = 20_000  # near-duplicate and contamination checks read at most this many words of one record


class Overlap(Check):
    """exact_duplicate, near_duplicate, and contamination (with an eval set)."""

    def __init__(self, ctx: Context, eval_path: Path | None):
        super().__init__(ctx)
        self.eval_path = eval_path
        self.vocab: dict[str, int] = {}
        self.word_ids = array("I")
        self.word_offsets = array("q", [0])  # row r's words are word_ids[word_offsets[r]:word_offsets[r + 1]]
        self.first: dict[bytes, int] = {}
        self.dup_of: dict[int, int] = {}     # exact or near copy -> first row of its group
        self.exact: set[int] = set()
        self.near: set[int] = set()
        self.contaminated: set[int] = set()
        self.eval_info: dict = {}

    def observe(self, row: Row) -> bool:
        key = hashlib.blake2b(normalize(row.key).encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first = self.first.setdefault(key, row.index)
        if len(self.word_offsets) <= row.index:
            self._pad(row.index)
        if first != row.index:
            self.exact.add(row.index)
            self.dup_of[row.index] = first
            self.f["exact_duplicate"].add(row.index, f"same as row {first}")
        else:
            vocab = self.vocab  # a local: this line runs once per word of the file
            self.word_ids.extend([vocab.setdefault(w, len(vocab)) for w in
                                  normalize(row.content).split(maxsplit=MAX_WORDS)[:MAX_WORDS]])
        self.word_offsets.append(len(self.word_ids))
        return True

    def _pad(self, row: int) -> None:
        """Rows that were not observed (unusable) have no words."""
        self.word_offsets.extend([len(self.word_ids)] * (row + 1 - len(self.word_offsets)))

    def words(self):
        """(ids, offsets) as numpy arrays over every row of the file."""
        import numpy as np

        return np.frombuffer(self.word_ids, dtype=np.uint32), np.frombuffer(self.word_offsets, dtype=np.int64)

    def finish(self) -> None:
        th = self.ctx.thresholds
        self._pad(len(self.ctx.valid))
        self.f["exact_duplicate"].message = ("copies of an earlier record (after NFKC, case folding, whitespace "
                                             "collapsing)")
        self.f["near_duplicate"].message = (f"near-copies of an earlier record (MinHash Jaccard >= "
                                            f"{th.near_duplicate} on word {neardup.SHINGLE}-grams)")
        self.f["contamination"].message = ("train records that overlap the eval set: evaluation on it would be "
                                           "inflated")
        ev_words = ev_offsets = None
        if self.eval_path is not None:
            ev_words, ev_offsets, self.eval_info = self._eval_words()
        ids, offsets = self.words()
        sig, rows = neardup.signatures(ids, offsets)
        groups = neardup.clusters((int(rows[i]), int(rows[j])) for i, j in neardup.similar_pairs(sig, th.near_duplicate))
        for members in groups.values():
            for r in members[1:]:
                if r not in self.exact:
                    self.near.add(r)
                    self.dup_of[r] = members[0]
        for r in sorted(self.near):
            self.f["near_duplicate"].add(r, f"similar to row {self.dup_of[r]}")
        if self.near:
            self.f["near_duplicate"].details = {"clusters": sum(1 for m in groups.values() if len(m) > 1)}
        if self.eval_path is not None:
            self._contamination(sig, rows, ev_words, ev_offsets)

    def _contamination(self, sig, rows, ev_words, ev_offsets) -> None:
        th, fi = self.ctx.thresholds, self.f["contamination"]
        cross: dict[int, int] = {}
        if ev_words.size:
            ev_sig, ev_rows = neardup.signatures(ev_words, ev_offsets)
            for i, j in sorted(neardup.similar_pairs(sig, th.contamination_similarity, other=ev_sig)):
                cross.setdefault(int(rows[i]), int(ev_rows[j]))
        ids, offsets = self.words()
        ngram_hits = neardup.ngram_overlap(ids, offsets, ev_words, ev_offsets, th.contamination_ngram)
        for r in sorted(set(ngram_hits) | set(cross)):
            self.contaminated.add(r)
            why = f"shares a {th.contamination_ngram}-word sequence with eval row {ngram_hits[r]}" if r in ngram_hits \
                else f"near-duplicate of eval row {cross[r]}"
            fi.add(r, why)
        for r, first in self.dup_of.items():  # exact copies of a contaminated row are contaminated too
            if first in self.contaminated and r not in self.contaminated and r in self.exact:
                self.contaminated.add(r)
                fi.add(r, f"copy of contaminated row {first}")
        fi.rows.sort()
        fi.details = {"eval_path": str(self.eval_path), **self.eval_info}

    def _eval_words(self):
        """The eval set's words, numbered with the train set's vocabulary."""
        import numpy as np

        words, offsets, n, bad = [], [0], 0, 0
        for _, rec in dataio.iter_records(self.eval_path, columns=self.ctx.columns):
            n += 1
            text = ""
            if isinstance(rec, dict):
                try:
                    text = _eval_text(dataio.to_conversational(rec))
                except Exception:  # noqa: BLE001 - an unreadable eval row is counted, not fatal
                    bad += 1
            else:
                bad += 1
            words.extend(self.vocab.setdefault(w, len(self.vocab)) for w in normalize(text).split())
            offsets.append(len(words))
        return (np.asarray(words, dtype=np.uint64), np.asarray(offsets, dtype=np.int64),
                {"eval_rows": n, "eval_unreadable": bad})


def _eval_text(conv: dict) -> str:
    """An eval record's text as a train row's words are taken (system messages left out)."""
    if "messages" in conv:
        return "\n".join(m["content"] for m in conv["messages"] if m["role"] not in ("system", "developer"))
    if "chosen" in conv:
        return "\n".join([m["content"] for m in conv["prompt"] if m["role"] not in ("system", "developer")]
                         + ["".join(m["content"] for m in conv["chosen"]),
                            "".join(m["content"] for m in conv["rejected"])])
    return conv["text"]
