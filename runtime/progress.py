"""Progress of long in-process work (evaluate, recommend_strategy's baseline): items done, rate, ETA.

A `Tracker` reports each step two ways: a line on stderr (redrawn in place on a terminal, at most every few
seconds otherwise, so logs stay short), and a `Progress` value to every subscriber. The app subscribes to show it:

    unsubscribe = progress.subscribe(lambda p: app.call_from_thread(show, p))

Callbacks run on the reporting thread, so they must be quick (post a message, never block); one that raises is
dropped from that report and does not stop the work.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

Callback = Callable[["Progress"], None]
_subscribers: list[Callback] = []
_lock = threading.Lock()


@dataclass(frozen=True)
class Progress:
    task: str                 # the tool, e.g. "evaluate"
    stage: str                # what runs now, e.g. a candidate's name
    done: int                 # items finished, over the whole call
    total: int
    elapsed_s: float
    rate: float | None        # items per second so far
    eta_s: float | None       # seconds left at that rate
    finished: bool = False

    def line(self) -> str:
        rate = f"{self.rate:.2f}/s" if self.rate else "?/s"
        eta = f"{self.eta_s:.0f}s" if self.eta_s is not None else "?"
        return (f"{self.task}: {self.stage} {self.done}/{self.total} rows, {rate}, "
                f"elapsed {self.elapsed_s:.0f}s, eta {eta}")

    def to_dict(self) -> dict:
        return asdict(self)


def subscribe(callback: Callback) -> Callable[[], None]:
    """Receive every Progress reported in this process; returns the function that unsubscribes."""
    with _lock:
        _subscribers.append(callback)

    def unsubscribe() -> None:
        with _lock:
            if callback in _subscribers:
                _subscribers.remove(callback)
    return unsubscribe


@contextlib.contextmanager
def subscribed(callback: Callback) -> Iterator[None]:
    unsubscribe = subscribe(callback)
    try:
        yield
    finally:
        unsubscribe()


class Tracker:
    """Counts items done towards a total; rate and ETA from the wall time since it started."""

    def __init__(self, task: str, total: int, *, stream=None, min_interval_s: float | None = None):
        self.task, self.total, self.done, self.stage = task, total, 0, ""
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s if min_interval_s is not None else (0.5 if self.tty else 5.0)
        self.t0 = time.perf_counter()
        self._last_print = 0.0

    def advance(self, n: int = 0, stage: str | None = None) -> Progress:
        self.done = min(self.total, self.done + n)
        if stage is not None:
            self.stage = stage
        return self._report(finished=False)

    def finish(self) -> Progress:
        return self._report(finished=True)

    def _report(self, finished: bool) -> Progress:
        elapsed = time.perf_counter() - self.t0
        rate = self.done / elapsed if self.done and elapsed > 0 else None
        eta = (self.total - self.done) / rate if rate else None
        p = Progress(self.task, self.stage, self.done, self.total, round(elapsed, 2),
                     round(rate, 4) if rate else None, round(eta, 1) if eta is not None else None, finished)
        with _lock:
            subscribers = list(_subscribers)
        for cb in subscribers:
            with contextlib.suppress(Exception):  # a broken display never stops the work
                cb(p)
        self._print(p)
        return p

    def _print(self, p: Progress) -> None:
        now = time.perf_counter()
        if not p.finished and p.done and now - self._last_print < self.min_interval_s:
            return
        self._last_print = now
        with contextlib.suppress(Exception):
            if self.tty:
                self.stream.write("\r" + p.line().ljust(100) + ("\n" if p.finished else ""))
            else:
                self.stream.write(p.line() + "\n")
            self.stream.flush()
