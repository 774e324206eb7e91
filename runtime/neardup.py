"""Texts that repeat each other: MinHash near-duplicates (rensa) and shared long word sequences.

One definition of "similar" for the audit (whole files at once) and for synthesis (one text at a time): words are
NFKC, case-folded and whitespace-split (`runtime.labels.normalize_label`), shingled in word 3-grams (a text
shorter than three words is one shingle), hashed into NUM_PERM MinHash values by rensa, bucketed by LSH in
NUM_BANDS bands, and every candidate pair is confirmed by its estimated Jaccard similarity (the share of equal
MinHash values). Words enter as integers: the audit numbers them in file order (it keeps those ids for its
n-gram check); `minhash(text)` uses a stable hash of each word, so its signatures do not depend on other texts.

The banding is ours, not `rensa.RMinHashLSH`: rensa's index returns candidate keys only for `RMinHash` objects
built from string tokens, and verifying all the pairs it proposes took 12x longer than comparing each row with
the first row of every bucket it shares (bench/audit.py prints both on the same rows).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

from runtime.labels import normalize_label

NUM_PERM, NUM_BANDS, SHINGLE, SEED = 128, 32, 3, 7
_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93)


def shingle_hashes(ids, offsets, k: int = SHINGLE):
    """uint64 hashes of word k-grams per row (rows shorter than k give one hash of all their words).

    ``ids`` are the rows' words as integers, row i being ids[offsets[i]:offsets[i+1]]. Returns (hashes,
    row_of_hash). Rows with no words give nothing."""
    import numpy as np

    ids = np.asarray(ids, dtype=np.uint64)
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    if ids.size == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    # pad each row with k-1 sentinels so short rows still make one k-gram
    pad = k - 1
    padded_len = lengths + pad
    new_offsets = np.concatenate([[0], np.cumsum(padded_len)])
    padded = np.full(int(new_offsets[-1]), np.uint64(0xFFFFFFFF), dtype=np.uint64)
    pos = np.repeat(new_offsets[:-1] - offsets[:-1], lengths) + np.arange(ids.size)
    padded[pos] = ids
    n_windows = np.where(lengths > 0, np.maximum(lengths - k + 1, 1), 0)
    starts = np.repeat(new_offsets[:-1], n_windows) + (np.arange(int(n_windows.sum())) - np.repeat(
        np.cumsum(n_windows) - n_windows, n_windows))
    h = np.full(starts.size, np.uint64(k), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            v = padded[starts + j] + np.uint64(1)
            h = (h ^ (v * np.uint64(_MIX[j % 4]))) * np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
    return h, np.repeat(np.arange(lengths.size), n_windows)


def signatures(ids, offsets, step: int = 8192):
    """MinHash signatures (rensa, NUM_PERM uint32 each) of word 3-gram shingles for every row that has words.

    Returns (sig, rows): sig[i] belongs to row rows[i]. Rows are processed in slices so memory holds the
    signatures plus one slice's shingles, never all shingles at once."""
    import numpy as np
    import rensa

    ids = np.asarray(ids)
    offsets = np.asarray(offsets, dtype=np.int64)
    rows = np.flatnonzero(np.diff(offsets) > 0)
    sig = np.empty((rows.size, NUM_PERM), dtype=np.uint32)
    for i in range(0, rows.size, step):
        chunk = rows[i:i + step]
        lo, hi = int(offsets[chunk[0]]), int(offsets[chunk[-1] + 1])
        # the rows between chunk[0] and chunk[-1] that have no words contribute no shingles
        local = offsets[chunk[0]:chunk[-1] + 2] - lo
        hashes, rows_of = shingle_hashes(ids[lo:hi].astype(np.uint64), local, SHINGLE)
        counts = np.bincount(rows_of, minlength=local.size - 1)[chunk - chunk[0]]
        offs = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
        m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offs, NUM_PERM, SEED)
        sig[i:i + chunk.size] = np.asarray(m.to_rows(), dtype=np.uint32)
    return sig, rows


def band_keys(sig, b: int):
    """One uint64 LSH bucket key per signature for band ``b`` (NUM_PERM/NUM_BANDS consecutive values)."""
    import numpy as np

    r = NUM_PERM // NUM_BANDS
    key = np.zeros(sig.shape[0], dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(r):
            key = (key ^ (sig[:, b * r + j].astype(np.uint64) * np.uint64(_MIX[j]))) * np.uint64(0x100000001B3)
    return key


def similar_pairs(sig, threshold: float, other=None) -> set[tuple[int, int]]:
    """Verified similar pairs via LSH banding (NUM_BANDS bands of NUM_PERM/NUM_BANDS rows).

    Without ``other``: pairs (i, j), i < j, within ``sig`` (each row compared with the first row of every bucket it
    shares). With ``other``: pairs (i, j) with i a row of ``sig`` and j a row of ``other``."""
    import numpy as np

    pairs: set[tuple[int, int]] = set()
    n = sig.shape[0]
    m = 0 if other is None else other.shape[0]
    if n + m < 2 or (other is not None and (n == 0 or m == 0)):
        return pairs
    for b in range(NUM_BANDS):
        key = band_keys(sig, b) if other is None else np.concatenate([band_keys(sig, b), band_keys(other, b)])
        order = np.argsort(key, kind="stable")
        ks = key[order]
        new_group = np.concatenate([[True], ks[1:] != ks[:-1]])
        gid = np.cumsum(new_group) - 1
        multi = np.bincount(gid)[gid] > 1
        if not multi.any():
            continue
        members, g = order[multi], gid[multi]
        rep = np.full(int(gid[-1]) + 1, -1)
        if other is None:
            first_pos = np.flatnonzero(new_group)
            rep[gid[first_pos]] = order[first_pos]  # stable sort: the smallest index of each bucket
            r_ = rep[g]
            cand = members != r_
        else:
            is_other = members >= n
            rep[g[is_other][::-1]] = members[is_other][::-1]
            r_ = rep[g]
            cand = (~is_other) & (r_ >= 0)
        a, c = members[cand], r_[cand]
        for s0 in range(0, a.size, 16384):
            aa, cc = a[s0:s0 + 16384], c[s0:s0 + 16384]
            right = sig[cc] if other is None else other[cc - n]
            ok = (sig[aa] == right).mean(axis=1) >= threshold
            for x, y in zip(aa[ok].tolist(), cc[ok].tolist()):
                pairs.add((min(x, y), max(x, y)) if other is None else (x, y - n))
    return pairs


def clusters(pairs: Iterable[tuple[int, int]], items: Iterable[int] = ()) -> dict[int, list[int]]:
    """Groups of items linked by pairs (union-find), keyed by their smallest member, members sorted. ``items`` adds
    items that may be linked to nothing (each its own group)."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    seen = set(items)
    for x, y in pairs:
        seen.update((x, y))
        rx, ry = root(x), root(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    groups: dict[int, list[int]] = defaultdict(list)
    for x in sorted(seen):
        groups[root(x)].append(x)
    return dict(groups)


# --- shared long word sequences (the contamination check's other test) --------------------------------

def long_ngrams(ids, offsets, n: int):
    """Hashes of every word n-gram that lies inside one row (rows shorter than n give none)."""
    import numpy as np

    lengths = np.diff(offsets)
    n_windows = np.maximum(lengths - n + 1, 0)
    total = int(n_windows.sum())
    if total == 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    starts = np.repeat(offsets[:-1], n_windows) + (np.arange(total) - np.repeat(np.cumsum(n_windows) - n_windows,
                                                                                 n_windows))
    h = np.zeros(total, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h * np.uint64(0x100000001B3)) ^ ((ids[starts + j] + np.uint64(1)) * np.uint64(_MIX[j % 4]))
    return h, np.repeat(np.arange(lengths.size), n_windows)


def ngram_overlap(ids, offsets, other_ids, other_offsets, n: int) -> dict[int, int]:
    """Rows sharing a word n-gram with a row of the other set -> that other row."""
    import numpy as np

    if other_ids is None or other_ids.size == 0:
        return {}
    ev_h, ev_rows = long_ngrams(other_ids, other_offsets, n)
    if ev_h.size == 0:
        return {}
    tr_h, tr_rows = long_ngrams(np.asarray(ids).astype(np.uint64), offsets, n)
    hit = np.isin(tr_h, ev_h)
    out: dict[int, int] = {}
    if hit.any():
        order = np.argsort(ev_h)
        sorted_h = ev_h[order]
        for h, r in zip(tr_h[hit].tolist(), tr_rows[hit].tolist()):
            if r not in out:
                out[r] = int(ev_rows[order[np.searchsorted(sorted_h, h)]])
    return out


def repeated_ngrams(ids, offsets, n: int) -> list[tuple[int, int]]:
    """(row, first row) for rows sharing a word n-gram with an earlier row."""
    import numpy as np

    h, rows = long_ngrams(np.asarray(ids).astype(np.uint64), offsets, n)
    if h.size == 0:
        return []
    order = np.argsort(h, kind="stable")
    hs, rs = h[order], rows[order]
    new = np.concatenate([[True], hs[1:] != hs[:-1]])
    first = rs[np.flatnonzero(new)][np.cumsum(new) - 1]
    keep = rs != first
    pairs = np.unique(np.stack([rs[keep], first[keep]], axis=1), axis=0) if keep.any() else np.zeros((0, 2), int)
    return [(int(x), int(y)) for x, y in pairs]


# --- one text at a time (generate_synthetic) ------------------------------------------------------------

def word_hash(word: str) -> int:
    """A stable 64-bit number for a word (the same in every process)."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


class Signature:
    """The MinHash signature of one text."""

    __slots__ = ("values",)

    def __init__(self, values):
        self.values = values

    def jaccard(self, other: Signature) -> float:
        """Estimated Jaccard similarity of the two texts' shingle sets."""
        return float((self.values == other.values).mean())


def minhash(text: str) -> Signature:
    """The signature of one text, computed as the audit computes a row's."""
    import numpy as np

    words = [word_hash(w) for w in normalize_label(text).split()]
    sig, _ = signatures(np.asarray(words, dtype=np.uint64), np.asarray([0, len(words)], dtype=np.int64))
    # no words: rensa's signature of an empty set, so two empty texts match as they would in the audit
    return Signature(sig[0] if len(sig) else np.full(NUM_PERM, 0xFFFFFFFF, dtype=np.uint32))


class NearDuplicateIndex:
    """Texts added under a key; `find(text)` returns the key of a stored text at least `threshold` similar (the
    earliest added, when several are)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._buckets: list[dict[int, list[int]]] = [defaultdict(list) for _ in range(NUM_BANDS)]
        self._sigs: list[Signature] = []
        self._keys: list[str] = []

    @staticmethod
    def _bands(m: Signature) -> list[int]:
        return [int(band_keys(m.values[None, :], b)[0]) for b in range(NUM_BANDS)]

    def find(self, text: str, m: Signature | None = None) -> str | None:
        m = minhash(text) if m is None else m
        candidates = {i for b, key in enumerate(self._bands(m)) for i in self._buckets[b].get(key, ())}
        for i in sorted(candidates):
            if m.jaccard(self._sigs[i]) >= self.threshold:
                return self._keys[i]
        return None

    def add(self, key: str, text: str, m: Signature | None = None) -> None:
        m = minhash(text) if m is None else m
        for b, band in enumerate(self._bands(m)):
            self._buckets[b][band].append(len(self._sigs))
        self._sigs.append(m)
        self._keys.append(key)
