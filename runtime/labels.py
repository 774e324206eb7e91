"""When do a data set's answers form a label set? One rule for the audit, the split and evaluation.

Short answers (at most MAX_LABEL_WORDS words and MAX_LABEL_CHARS characters) from a bounded set are labels,
whatever their number: 3 ticket classes, 77 banking intents or a few hundred intents are all classification.
"Bounded" is measured, not fixed: there are at most half as many distinct answers as rows, and answers seen
only once cover at most a tenth of the rows (free-text short answers, such as trivia answers, mostly do not
repeat). An optional `max_classes` ceiling is the person's to set.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from typing import Callable, Iterable, Mapping

MAX_LABEL_WORDS = 5
MAX_LABEL_CHARS = 60


def normalize_label(text: str) -> str:
    """NFKC, case folding, whitespace collapsed (the audit's normalisation)."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def is_short(answer: str) -> bool:
    """Whether a (normalised) answer is short enough to be a label."""
    return bool(answer) and len(answer) <= MAX_LABEL_CHARS and len(answer.split()) <= MAX_LABEL_WORDS


def decide_labels(counts: Mapping[str, int], max_classes: int | None = None) -> list[str] | None:
    """The sorted labels when answers with these counts form a label set, else None (see the module docstring)."""
    total, distinct = sum(counts.values()), len(counts)
    if distinct < 2 or total < 4 or (max_classes is not None and distinct > max_classes):
        return None
    if distinct > total / 2 or not all(is_short(a) for a in counts):
        return None
    singletons = sum(1 for c in counts.values() if c == 1)
    if singletons > 0.1 * total:
        return None
    return sorted(counts)


def label_set(answers: Iterable[str], *, key: Callable[[str], str] = normalize_label,
              max_classes: int | None = None) -> list[str] | None:
    """The labels (normalised by `key`) when these answers form a label set, else None."""
    return decide_labels(Counter(key(a) for a in answers), max_classes)
