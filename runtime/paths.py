"""Where things live, and the rule that tools stay inside the workspace root."""

from __future__ import annotations

import hashlib
from pathlib import Path

from runtime.errors import NotFound, OutsideWorkspace
from runtime.settings import get_settings


def resolve_path(path: str | Path, *, must_exist: bool = False) -> Path:
    """Resolve a person-given path against the workspace root and refuse paths outside it."""
    settings = get_settings()
    root = settings.workspace_root.resolve()
    p = Path(path).expanduser()
    p = (p if p.is_absolute() else root / p).resolve()
    inside = p == root or root in p.parents or settings.data_dir.resolve() in p.parents
    if not inside and not settings.allow_outside_workspace:
        raise OutsideWorkspace(f"{p} is outside the workspace root {root}",
                               hint="Move the file into the workspace, or set FTPILOT_ALLOW_OUTSIDE_WORKSPACE=1.")
    if must_exist and not p.exists():
        raise NotFound(f"{p} does not exist", hint="Check the path; relative paths start at the workspace root.")
    return p


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
