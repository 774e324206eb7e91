"""`ftpilot models prepare | list`."""

from __future__ import annotations

import sys

from assistant.cli import emit


def register(sub) -> None:
    p = sub.add_parser("models", help="the bundled model and local model dirs")
    msub = p.add_subparsers(dest="models_command", required=True)
    pr = msub.add_parser("prepare", help="convert the bundled GGUF model to a safetensors dir (once)")
    pr.add_argument("--force", action="store_true")
    pr.set_defaults(handler=_prepare)
    msub.add_parser("list", help="prepared models").set_defaults(handler=_list)


def _prepare(args) -> int:
    from runtime.models import bundled_dir, prepare_bundled_model

    if not (bundled_dir() / "model.safetensors").exists() or args.force:
        print("ftpilot: preparing the bundled SmolLM2-135M-Instruct (once, ~30 s)...", file=sys.stderr)
    path = prepare_bundled_model(force=args.force)
    emit({"name": "default", "path": str(path)})
    return 0


def _list(_args) -> int:
    from runtime.models import ALIASES, is_model_dir
    from runtime.settings import get_settings

    root = get_settings().resolved_models_dir
    found = [{"name": d.name, "path": str(d)} for d in sorted(root.glob("*")) if is_model_dir(d)] if root.exists() else []
    emit({"aliases": ALIASES, "models": found})
    return 0
