"""Where things live, and the rule that tools stay inside the workspace root.

Every path a person gives goes through `resolve_path`: it is checked for what the OS would choke on (NUL bytes,
names too long), resolved against the workspace root and refused outside it. Inputs must be regular files or
folders: a FIFO or a device would block a reader forever.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from runtime.errors import BadInput, NotFound, OutsideWorkspace
from runtime.settings import get_settings

MAX_PATH_CHARS = 4096


def _checked_text(path: str | Path) -> str:
    text = os.fspath(path)
    if "\x00" in text:
        raise BadInput("the path contains a NUL byte", hint="Give a plain file path.", code="bad_path")
    if len(text) > MAX_PATH_CHARS:
        raise BadInput(f"the path is {len(text)} characters long (at most {MAX_PATH_CHARS})",
                       hint="Give a shorter path.", code="bad_path")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadInput("the path is not valid UTF-8 text (lone surrogate)", hint="Give a plain file path.",
                       code="bad_path") from None
    return text


def _is_inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def resolve_path(path: str | Path, *, must_exist: bool = False) -> Path:
    """Resolve a person-given path against the workspace root and refuse paths outside it.

    With `must_exist`, the path must be a regular file or a folder (a FIFO, socket or device is refused)."""
    settings = get_settings()
    root = settings.workspace_root.resolve()
    p = Path(_checked_text(path)).expanduser()
    try:
        p = (p if p.is_absolute() else root / p).resolve()
    except (OSError, RuntimeError) as e:  # symlink loops, names too long for the OS
        raise BadInput(f"cannot resolve {str(path)[:200]}: {e}", hint="Give a plain file path.", code="bad_path") from e
    inside = _is_inside(p, root) or _is_inside(p, settings.data_dir.resolve())
    if not inside and not settings.allow_outside_workspace:
        raise OutsideWorkspace(f"{p} is outside the workspace root {root}",
                               hint="Move the file into the workspace, or set FTPILOT_ALLOW_OUTSIDE_WORKSPACE=1.")
    if must_exist:
        check_readable(p)
    return p


def check_readable(p: Path) -> None:
    """Refuse what is not there, and what is not a regular file or a folder (reading a FIFO blocks forever)."""
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise NotFound(f"{p} does not exist", hint="Check the path; relative paths start at the workspace root.")
    except NotADirectoryError:
        raise NotFound(f"{p} does not exist (a part of it is a file, not a folder)", hint="Check the path.")
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise BadInput("the path is too long for this file system", code="bad_path") from e
        raise BadInput(f"cannot read {p}: {e.strerror or e}", code="unreadable") from e
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise BadInput(f"{p} is {kind}", hint="Give a regular file (or a folder); ftpilot does not read from pipes "
                       "or devices.", code="not_a_regular_file")


def in_data_dir(p: Path) -> bool:
    """Whether `p` lies in ftpilot's data dir (the store, runs, audits, models): no person-named output goes there."""
    return _is_inside(p, get_settings().data_dir.resolve())


def data_subdir(name: str) -> Path:
    d = get_settings().data_dir / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
