"""Token counts after the chat template, and the too_long check built on them."""

from __future__ import annotations

import random

from runtime import dataio
from tools.dataset.checks import Check, Context, Row

CHUNK = 2048  # rows rendered and tokenized per batch


class Tokenizing:
    """Token counts after the chat template, exact where they matter and cheap elsewhere.

    A row whose rendered text has at most ``max_tokens - slack`` UTF-8 bytes cannot exceed ``max_tokens`` (each
    token of a byte-level or byte-fallback tokenizer covers at least one byte) and is not tokenized; all others are,
    with the fast tokenizer's batch encoder. A seeded reservoir of rows gives the length distribution."""

    def __init__(self, model: str, max_tokens: int | None, exact: bool):
        from runtime.models import context_length, load_tokenizer

        self.tok = load_tokenizer(model)
        self.backend = getattr(self.tok, "backend_tokenizer", None)
        self.max_tokens = int(max_tokens or context_length(model))
        self.has_template = bool(getattr(self.tok, "chat_template", None))
        norm = repr(self.backend.normalizer) if self.backend is not None else "slow"
        self.bound_ok = not exact and self.backend is not None and not any(
            k in norm for k in ("NFKC", "NFKD", "Precompiled", "Replace", "slow"))
        self.reservoir: list[str] = []
        self.seen = 0
        self.rng = random.Random(0)
        self.counted: dict[int, int] = {}
        self.pending: list[tuple[int, str]] = []
        self.lower_bound: set[int] = set()
        self._overheads: dict[tuple, int | None] = {}
        # no token is longer than this many bytes: a row with more than max_tokens * this is too long for sure,
        # and is not tokenized (a 50 MB line would take minutes)
        try:
            self.max_piece = max(len(t.encode("utf-8")) for t in self.tok.get_vocab()) or 1
        except Exception:  # noqa: BLE001
            self.max_piece = 1 << 20

    def render(self, convs: list[list[dict]]) -> list[str | Exception]:
        if not self.has_template:
            return ["\n".join(f"{m['role']}: {m['content']}" for m in c) for c in convs]
        try:
            return list(self.tok.apply_chat_template(convs, tokenize=False))
        except Exception:  # noqa: BLE001 - find the rows the template rejects, one by one
            out: list[str | Exception] = []
            for c in convs:
                try:
                    out.append(self.tok.apply_chat_template(c, tokenize=False))
                except Exception as e:  # noqa: BLE001
                    out.append(e)
            return out

    def count(self, texts: list[str]) -> list[int]:
        if self.backend is not None:
            return [len(e.ids) for e in self.backend.encode_batch(texts, add_special_tokens=False)]
        return [len(self.tok(t, add_special_tokens=False)["input_ids"]) for t in texts]

    def _sample(self, item: tuple) -> None:
        self.seen += 1
        if len(self.reservoir) < 2000:
            self.reservoir.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < 2000:
                self.reservoir[j] = item

    def _overhead(self, conv: list[dict]) -> int | None:
        """Bytes the template adds around a conversation with these roles, if it adds content verbatim."""
        sig = tuple(m["role"] for m in conv)
        if sig not in self._overheads:
            try:
                empty = self.tok.apply_chat_template([{"role": r, "content": ""} for r in sig], tokenize=False)
                probe = self.tok.apply_chat_template([{"role": r, "content": "xxxxxxx"} for r in sig], tokenize=False)
                linear = len(probe.encode()) - len(empty.encode()) == 7 * len(sig)
                self._overheads[sig] = len(empty.encode()) if linear else None
            except Exception:  # noqa: BLE001 - the template rejects these roles: render each row to say so
                self._overheads[sig] = None
        return self._overheads[sig]

    def needs_render(self, conv: list[dict], templated: bool) -> bool:
        """False when the row provably fits (it is then only sampled for the length distribution)."""
        if not self.bound_ok:
            return True
        if templated and self.has_template:
            if any(m.get("tool_calls") for m in conv):
                return True
            overhead = self._overhead(conv)
            if overhead is None:
                return True
        else:
            overhead = 16 * len(conv)
        size = overhead + 8 + 2 * len(conv)
        for m in conv:
            c = m["content"]
            size += len(c) if c.isascii() else len(c.encode("utf-8"))
        if size > self.max_tokens:
            return True
        self._sample(("conv", conv) if templated and self.has_template else ("text", "".join(
            m["content"] for m in conv)))
        return False

    def observe(self, row: int, text: str) -> None:
        if len(text) <= 200_000:
            self._sample(("text", text))
        nbytes = len(text.encode("utf-8"))
        if nbytes > self.max_tokens * self.max_piece:
            self.counted[row] = -(-nbytes // self.max_piece)
            self.lower_bound.add(row)
            return
        self.pending.append((row, text))
        if len(self.pending) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            rows, texts = zip(*self.pending)
            self.counted.update(zip(rows, self.count(list(texts))))
            self.pending = []

    def stats(self) -> dict:
        self.flush()
        if not self.bound_ok:
            lengths = sorted(self.counted.values())
        else:
            convs = [x for k, x in self.reservoir if k == "conv"]
            texts = [x for k, x in self.reservoir if k == "text"] + [
                t for t in (self.render(convs) if convs else []) if isinstance(t, str)]
            lengths = sorted(self.count(texts)) if texts else []
        if not lengths:
            return {"max_tokens": self.max_tokens}
        pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
        return {"max_tokens": self.max_tokens, "p50": pick(0.5), "p95": pick(0.95), "max_sampled": lengths[-1],
                "counted": "all rows" if not self.bound_ok else f"a seeded sample of {len(lengths)} rows; "
                "rows that could exceed max_tokens counted exactly",
                "over_limit": sum(1 for v in self.counted.values() if v > self.max_tokens)}


class TooLong(Check):
    """too_long: rows over max_tokens after the chat template (an error when truncation would cut every assistant
    token); rows the model's chat template rejects are schema errors."""

    def __init__(self, ctx: Context, model: str, max_tokens: int | None, exact: bool):
        super().__init__(ctx)
        self.tk = Tokenizing(model, max_tokens, exact)
        self.chunk: list[tuple[int, list[dict]]] = []
        self.over: dict[int, dict] = {}   # row -> {"tokens", "prompt_tokens"}
        self.stats: dict = {}

    def observe(self, row: Row) -> bool:
        if self.tk.needs_render(row.render, self.ctx.templated):
            self.chunk.append((row.index, row.render))
            if len(self.chunk) >= CHUNK:
                self._flush()
        return True

    def _flush(self) -> None:
        if not self.chunk:
            return
        rows, convs = zip(*self.chunk)
        rendered = self.tk.render(list(convs)) if self.ctx.templated else [None] * len(convs)
        for row, conv, text in zip(rows, convs, rendered):
            if text is None:
                text = "".join(m["content"] for m in conv)
            if isinstance(text, Exception):
                self.f["schema"].add(row, f"the model's chat template rejects this row: {text}")
                self.ctx.valid[row] = 0
                continue
            self.tk.observe(row, text)
        self.chunk = []

    def finish(self) -> None:
        self._flush()
        tk, fi = self.tk, self.f["too_long"]
        fi.message = f"records over {tk.max_tokens} tokens after the chat template"
        tk.flush()
        self.stats = tk.stats()
        over = sorted(r for r, c in tk.counted.items() if c > tk.max_tokens)
        if not over:
            return
        prompt_tokens = _prompt_tokens(self.ctx, over, tk)
        lost = 0
        for r in over:
            p = prompt_tokens.get(r)
            self.over[r] = {"tokens": tk.counted[r], "prompt_tokens": p}
            cut = "all assistant tokens" if p is not None and p >= tk.max_tokens else "part of the answer"
            lost += p is not None and p >= tk.max_tokens
            at_least = "at least " if r in tk.lower_bound else ""
            fi.add(r, f"{at_least}{tk.counted[r]} tokens > {tk.max_tokens}; truncation would cut {cut}")
        fi.details = {"max_tokens": tk.max_tokens, "rows_losing_all_assistant_tokens": lost}
        if lost:
            fi.severity = "error"


def _prompt_tokens(ctx: Context, rows: list[int], tk: Tokenizing) -> dict[int, int]:
    """Tokens before the last assistant turn (with the generation prompt) for the given rows."""
    recs = dataio.records_at(ctx.path, rows, ctx.columns)
    texts, keep = [], []
    for r in rows:
        rec = recs.get(r)
        if not isinstance(rec, dict):
            continue
        try:
            conv = dataio.to_conversational(rec, dataio.record_format(rec))
        except Exception:  # noqa: BLE001
            continue
        if "messages" in conv:
            msgs = conv["messages"]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                continue
            prompt = msgs[:last]
        elif "chosen" in conv:
            prompt = conv["prompt"]
        else:
            texts.append("")
            keep.append(r)
            continue
        if ctx.templated and tk.has_template:
            try:
                texts.append(tk.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True))
            except Exception:  # noqa: BLE001
                continue
        else:
            texts.append("".join(m["content"] for m in prompt))
        keep.append(r)
    out = {}
    small = [(r, t) for r, t in zip(keep, texts) if len(t.encode("utf-8")) <= tk.max_tokens * tk.max_piece]
    for r, t in zip(keep, texts):
        if len(t.encode("utf-8")) > tk.max_tokens * tk.max_piece:
            out[r] = -(-len(t.encode("utf-8")) // tk.max_piece)
    if small:
        out.update(zip([r for r, _ in small], tk.count([t for _, t in small])))
    return out
