"""Near-duplicate texts by MinHash over word 3-grams, with rensa (the MinHash library the audit uses).

An index of texts, filled one at a time, that answers "is this new text a near-copy of one already in?":
rensa's LSH proposes candidates, and each is confirmed by its estimated Jaccard similarity. Texts are compared as
the audit compares them: NFKC, case-folded, whitespace-split words, shingled in 3-grams (a text shorter than
three words is one shingle). `generate_synthetic` uses it; the audit's batched code (tools/dataset/_analyze.py)
computes the same kind of signatures for whole files at once.
"""

from __future__ import annotations

import unicodedata

NUM_PERM, NUM_BANDS, SHINGLE = 128, 32, 3


def shingles(text: str, k: int = SHINGLE) -> list[str]:
    words = unicodedata.normalize("NFKC", text).casefold().split()
    if len(words) <= k:
        return [" ".join(words)]
    return [" ".join(words[i:i + k]) for i in range(len(words) - k + 1)]


def minhash(text: str):
    import rensa

    m = rensa.RMinHash(num_perm=NUM_PERM, seed=7)
    m.update(shingles(text))
    return m


class NearDuplicateIndex:
    """Texts added under a key; `find(text)` returns the key of a stored text at least `threshold` similar."""

    def __init__(self, threshold: float):
        import rensa

        self.threshold = threshold
        self._lsh = rensa.RMinHashLSH(threshold=threshold, num_perm=NUM_PERM, num_bands=NUM_BANDS)
        self._hashes: list = []
        self._keys: list[str] = []

    def find(self, text: str, m=None) -> str | None:
        m = minhash(text) if m is None else m
        for i in sorted(self._lsh.query(m)):
            if m.jaccard(self._hashes[i]) >= self.threshold:
                return self._keys[i]
        return None

    def add(self, key: str, text: str, m=None) -> None:
        m = minhash(text) if m is None else m
        self._lsh.insert(len(self._hashes), m)
        self._hashes.append(m)
        self._keys.append(key)
