"""Writing files a person will own, without ever losing one.

Rules for every tool that writes (the hardening issue): an output never equals an input of the same call, never
lands in ftpilot's data dir (store, runs, audits, models), and never replaces an existing file unless the call
says `overwrite: true` (which makes the call cost `destructive`, so it needs approval). Writes are atomic: each
file is written to a unique temporary name in its own folder, then all files of the call are committed
together (hard link, which fails if the name was taken meanwhile; or rename when overwriting). A failure
leaves no temporary file behind, and of two concurrent writers to one name, one wins and the other gets a
clear error.

    outs = [check_output(p, inputs=[src], overwrite=args.overwrite) for p in (out_path, manifest_path)]
    with OutputSet(overwrite=args.overwrite) as files:
        with files.open(outs[0]) as f: ...
        with files.open(outs[1]) as f: ...
    # committed here; on an exception nothing was written
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path
from typing import IO, Iterable

from runtime.errors import BadInput
from runtime.paths import in_data_dir, resolve_path

OVERWRITE_HINT = "Choose another output path, or pass overwrite: true (it needs approval) to replace it."


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output(path: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                 what: str = "output") -> Path:
    """Resolve a person-named output path and refuse it where writing would lose or corrupt something."""
    p = resolve_path(path)
    _check_place(p, what)
    if p.is_dir():
        raise BadInput(f"the {what} {p} is a folder", hint="Name a file inside it.", code="bad_output_path")
    for src in inputs:
        if src is not None and same_file(p, resolve_path(src)):
            raise BadInput(f"the {what} {p} is also an input of this call", hint="Inputs are never overwritten: "
                           "choose another output path.", code="output_is_input")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise BadInput(f"the {what} {p} already exists", hint=OVERWRITE_HINT, code="output_exists")
    return p


def _check_place(p: Path, what: str, allowed: Path | None = None) -> None:
    """Not in the data dir (unless it is `allowed`, a path the call owns there), and not under a file."""
    if in_data_dir(p) and not (allowed is not None and same_file(p, Path(allowed))):
        raise BadInput(f"the {what} {p} is inside ftpilot's data dir (store, runs, audits, models)",
                       hint="Write it into the workspace instead.", code="output_in_data_dir")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(f"the {what} {p} lies under {parent}, which is a file", code="bad_output_path")
            break


def check_distinct(paths: Iterable[Path]) -> None:
    """Two outputs of one call must not share a name (one would overwrite the other)."""
    seen: list[Path] = []
    for p in paths:
        if any(same_file(p, q) for q in seen):
            raise BadInput(f"two outputs of this call are both {p}", code="bad_output_path")
        seen.append(p)


class OutputSet:
    """The files one call writes, committed together or not at all."""

    def __init__(self, overwrite: bool = False):
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path, IO]] = []   # (final, temporary, handle)

    def open(self, path: Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None) -> IO:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name[:200]}.{uuid.uuid4().hex[:12]}.partial"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        handle = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": encoding, "newline": newline}))
        self._pending.append((path, tmp, handle))
        return _Unclosing(handle)

    def commit(self) -> list[Path]:
        for _, _, handle in self._pending:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        done: list[Path] = []
        try:
            for final, tmp, _ in self._pending:
                _place(tmp, final, self.overwrite)
                done.append(final)
        except BaseException:
            for final in done:  # ours, created a moment ago: the call wrote nothing
                if not self.overwrite:
                    with contextlib.suppress(OSError):
                        final.unlink()
            raise
        finally:
            self._remove_temporaries()
        return done

    def abort(self) -> None:
        for _, _, handle in self._pending:
            with contextlib.suppress(Exception):
                handle.close()
        self._remove_temporaries()

    def _remove_temporaries(self) -> None:
        for _, tmp, _ in self._pending:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self._pending = []

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class _Unclosing:
    """A handle whose `with` block does not close the file: the OutputSet commits (fsync, close) it."""

    def __init__(self, handle: IO):
        self._h = handle

    def __getattr__(self, name):
        return getattr(self._h, name)

    def __iter__(self):
        return iter(self._h)

    def __enter__(self):
        return self._h

    def __exit__(self, *exc) -> None:
        self._h.flush()


def _place(tmp: Path, final: Path, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, final)
        return
    try:
        os.link(tmp, final)  # atomic, and fails if the name exists: never replaces
    except FileExistsError:
        raise BadInput(f"{final} was created by someone else while this call was writing it",
                       hint=OVERWRITE_HINT, code="output_exists") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        # no hard links on this file system: claim the name exclusively, then move the content in
        try:
            os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        except FileExistsError:
            raise BadInput(f"{final} already exists", hint=OVERWRITE_HINT, code="output_exists") from None
        os.replace(tmp, final)


def write_text(path: Path, text: str, *, overwrite: bool = False) -> Path:
    with OutputSet(overwrite=overwrite) as files:
        files.open(path).write(text)
    return path


def json_line(row) -> str:
    """One JSON line; rows holding lone surrogates (valid JSON escapes, not UTF-8) keep them escaped."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line + "\n"


def write_jsonl(path: Path, rows: Iterable[dict], *, overwrite: bool = False) -> Path:
    """Rows as JSON lines (non-ASCII kept as is), written atomically."""
    with OutputSet(overwrite=overwrite) as files:
        f = files.open(path)
        for row in rows:
            f.write(json_line(row))
    return path


def check_output_dir(path: str | Path, *, inputs: Iterable[str | Path | None] = (), overwrite: bool = False,
                     allowed: Path | None = None, what: str = "output folder") -> Path:
    """`check_output`'s rules for a folder a call fills: never inside the data dir (except `allowed`, a path the
    call itself owns there, such as a run's own `merged/`), never on, in or around an input, and never into an
    existing non-empty folder unless `overwrite`. `inputs` are paths the caller has already resolved and checked."""
    p = resolve_path(path)
    _check_place(p, what, allowed)
    if p.exists() and not p.is_dir():
        raise BadInput(f"the {what} {p} is a file", hint="Name a folder.", code="bad_output_path")
    for src in inputs:
        if src is None:
            continue
        s = Path(src).resolve()
        if same_file(p, s) or s.resolve().is_relative_to(p.resolve()) or p.resolve().is_relative_to(s.resolve()):
            raise BadInput(f"the {what} {p} overlaps the input {s}", hint="Inputs are never overwritten: "
                           "choose another folder.", code="output_is_input")
    if p.is_dir() and any(p.iterdir()) and not overwrite:
        raise BadInput(f"the {what} {p} already exists and is not empty", hint=OVERWRITE_HINT, code="output_exists")
    return p


@contextlib.contextmanager
def output_dir(final: Path, *, overwrite: bool = False):
    """Fill a folder atomically: yields a fresh temporary sibling; when the block succeeds it takes `final`'s
    place (an old folder is replaced only with `overwrite`), when it fails it is removed."""
    import shutil

    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name[:200]}.{uuid.uuid4().hex[:12]}.partial"
    tmp.mkdir()
    old = None
    try:
        yield tmp
        if final.is_dir() and any(final.iterdir()):
            if not overwrite:
                raise BadInput(f"{final} was filled by someone else while this call was writing it",
                               hint=OVERWRITE_HINT, code="output_exists")
            old = final.parent / f".{final.name[:200]}.{uuid.uuid4().hex[:12]}.old"
            os.replace(final, old)
        try:
            os.replace(tmp, final)  # rename(2) takes an empty folder's place atomically
        except OSError:
            if old is not None:
                os.replace(old, final)
                old = None
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
