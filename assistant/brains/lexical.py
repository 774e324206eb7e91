"""A second opinion for the router: a linear classifier over the request's character and word n-grams.

Trained by `ftpilot brain build` on the same cleaned rows as the adapter (message -> label), in seconds. It reads
words the 135M adapter never saw as spellings close to ones it did ("dedupe" / "deduplicate", "sotp" / "stop"), so
the two err on different requests; `router.combine` lets it overrule the adapter only when it prefers its label by
more than the adapter's own margin. Stored as plain arrays (safetensors) and a vocabulary (JSON), never a pickle;
scikit-learn is imported only when the brain loads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

FILES = ("lexical.json", "lexical.safetensors")
WORDS = r"[a-z][a-z\-]+"
C = 30.0    # inverse regularisation: family-grouped 5-fold CV on the training rows, 0.697 vs 0.695 at 10, 0.686 at 3
TEXT = "placeholders"   # how messages are read before the n-grams (stored with the arrays; a mismatch refuses to load)
NUMBER = re.compile(r"(?<![\w.])\d[\d.e\-]*%?")


def placeholders(message: str) -> str:
    """Paths, run ids and numbers as one word each: their values are drawn at random in the rows and say nothing
    about the tool, but their letters would ("support_chats.json" reads as chat). Family-grouped 5-fold CV on the
    training rows: 0.775 as written, 0.793 with placeholders."""
    from assistant.workflow import JOB_RE, PATH_RE

    return NUMBER.sub(" numx ", JOB_RE.sub(" jobx ", PATH_RE.sub(" pathx ", message)))


def _vectorizers():
    from sklearn.feature_extraction.text import TfidfVectorizer

    return {"char": TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
            "word": TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, token_pattern=WORDS)}


class LexicalRouter:
    def __init__(self, vectorizers: dict, classes: list[str], coef, intercept):
        self.vectorizers, self.classes, self.coef, self.intercept = vectorizers, list(classes), coef, intercept

    @classmethod
    def fit(cls, messages: list[str], labels: list[str]) -> "LexicalRouter":
        import numpy as np
        from scipy.sparse import hstack
        from sklearn.linear_model import LogisticRegression

        vecs = _vectorizers()
        messages = [placeholders(m) for m in messages]
        x = hstack([v.fit_transform(messages) for v in vecs.values()]).tocsr()
        clf = LogisticRegression(C=C, max_iter=3000).fit(x, labels)
        return cls(vecs, [str(c) for c in clf.classes_], clf.coef_.astype(np.float32),
                   clf.intercept_.astype(np.float32))

    def route_proba(self, items: list) -> list[dict[str, float]]:
        """Each request's label distribution as the brain acts on it: `next_step` ("go ahead") counts for the
        project's next tool, as the router resolves it (`router.resolve_label`)."""
        from assistant.brains.router import NEXT_STEP, resolve_label

        out = []
        for item, p in zip(items, self.proba_batch([i.message for i in items])):
            follow = p.pop(NEXT_STEP, 0.0)
            target = resolve_label(NEXT_STEP, item)
            p[target] = p.get(target, 0.0) + follow
            out.append(p)
        return out

    def proba_batch(self, messages: list[str]) -> list[dict[str, float]]:
        import numpy as np
        from scipy.sparse import hstack

        messages = [placeholders(m) for m in messages]
        x = hstack([v.transform(messages) for v in self.vectorizers.values()]).tocsr()
        z = x @ self.coef.T + self.intercept
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return [dict(zip(self.classes, map(float, row))) for row in p]

    # --- files ------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> list[Path]:
        import numpy as np
        from safetensors.numpy import save

        from runtime.outputs import OutputSet

        folder = Path(folder)
        arrays = {"coef": self.coef, "intercept": self.intercept,   # safetensors writes C order: a Fortran-ordered
                  **{f"{k}_idf": v.idf_ for k, v in self.vectorizers.items()}}   # coef_ would come back transposed
        arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}
        spec = {"classes": self.classes, "C": C, "text": TEXT,
                "vectorizers": {k: {"analyzer": v.analyzer, "ngram_range": list(v.ngram_range),
                                    "vocabulary": {t: int(i) for t, i in sorted(v.vocabulary_.items(),
                                                                                key=lambda kv: kv[1])}}
                                for k, v in self.vectorizers.items()}}
        with OutputSet(overwrite=True) as files:
            files.open(folder / FILES[1], "wb").write(save(arrays))
            files.open(folder / FILES[0]).write(json.dumps(spec, ensure_ascii=False))
        return [folder / f for f in FILES]

    @classmethod
    def load(cls, folder: str | Path) -> "LexicalRouter | None":
        """The classifier installed in `folder`, or None where there is none."""
        folder = Path(folder)
        if not all((folder / f).exists() for f in FILES):
            return None
        from safetensors.numpy import load_file

        spec = json.loads((folder / FILES[0]).read_text(encoding="utf-8"))
        if spec.get("text") != TEXT:
            raise ValueError(f"{folder / FILES[0]} reads messages as {spec.get('text', 'written')!r}, this code as "
                             f"{TEXT!r}: rebuild it (ftpilot brain rescore --refit-lexical)")
        arrays = load_file(str(folder / FILES[1]))
        vecs = _vectorizers()
        for k, v in vecs.items():
            s = spec["vectorizers"][k]
            v.set_params(vocabulary=s["vocabulary"])
            v.idf_ = arrays[f"{k}_idf"].astype("float64")   # sets the fitted state sklearn's transform reads
        return cls(vecs, spec["classes"], arrays["coef"], arrays["intercept"])
