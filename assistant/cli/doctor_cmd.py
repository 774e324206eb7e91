"""`ftpilot doctor`: hardware, installed versions, and what is ready."""

from __future__ import annotations

import importlib.metadata as md

from assistant.cli import emit

PACKAGES = ["torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "textual",
            "pydantic", "sqlmodel", "xgrammar", "datasketch", "vllm"]


def register(sub) -> None:
    sub.add_parser("doctor", help="hardware probe, installed versions, readiness").set_defaults(handler=_doctor)


def versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def status() -> dict:
    from runtime.models import bundled_dir
    from runtime.settings import get_settings

    s = get_settings()
    return {"data_dir": str(s.data_dir), "workspace_root": str(s.workspace_root), "database": s.db_url(),
            "bundled_model_ready": (bundled_dir() / "model.safetensors").exists(), "versions": versions()}


def print_status() -> None:
    st = status()
    print("\nftpilot status")
    for key in ("data_dir", "workspace_root", "database", "bundled_model_ready"):
        print(f"  {key:20} {st[key]}")
    print("  installed            " + ", ".join(f"{k} {v}" for k, v in st["versions"].items() if v))


def _doctor(_args) -> int:
    from runtime.hardware import probe

    emit({"hardware": probe().to_dict(), **status()})
    return 0
