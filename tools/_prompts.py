"""Prompt files: every prompt lives in prompts/<name>.md; its version is the first 8 hex of its sha256, so
provenance records say exactly which text produced a row or a judgement."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import NotFound

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str
    version: str

    @property
    def ref(self) -> str:
        return f"prompts/{self.name}.md@{self.version}"


def load_prompt(name: str) -> Prompt:
    path = PROMPTS_DIR / f"{name}.md"
    if not path.is_file():
        raise NotFound(f"prompt file {path} is missing", hint="Reinstall ftpilot; prompts ship with the package.")
    text = path.read_text(encoding="utf-8")
    return Prompt(name, text, hashlib.sha256(text.encode()).hexdigest()[:8])
