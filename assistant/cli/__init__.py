"""The `ftpilot` command. Sub-command groups live in this package: each module has `register(subparsers)`.

Start-up stays light: no torch or transformers import here; commands import what they need when run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys


def emit(obj) -> None:
    """JSON on stdout (scripts parse it); progress and chatter go to stderr."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftpilot", description="Chat-driven fine-tuning assistant.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    import assistant.cli as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.endswith("_cmd"):
            importlib.import_module(f"assistant.cli.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from runtime.settings import get_settings

    get_settings()  # sets HF_HUB_OFFLINE before anything can import the hub client
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        handler = _default_handler(parser)
    try:
        code = handler(args)
    except KeyboardInterrupt:
        code = 130
    return int(code or 0)


def _default_handler(parser: argparse.ArgumentParser):
    """`ftpilot` alone opens the chat app when it is installed, else prints help and status."""
    try:
        from assistant.cli import chat_cmd  # noqa: F401

        return lambda args: chat_cmd.run_chat(args)
    except ImportError:
        def show(_args) -> int:
            parser.print_help()
            from assistant.cli.doctor_cmd import print_status

            print_status()
            return 0

        return show


if __name__ == "__main__":
    sys.exit(main())
