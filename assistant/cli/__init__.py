"""The `ftpilot` command. Sub-command groups live in this package: each module has `register(subparsers)`.

Start-up stays light: no torch or transformers import here; commands import what they need when run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
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
    from runtime.errors import FtpilotError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _start()
        handler = getattr(args, "handler", None) or _default_handler(parser)
        code = handler(args)
    except KeyboardInterrupt:
        code = 130
    except FtpilotError as e:  # a domain error outside a tool call (bad settings, an unreadable store)
        emit({"error": e.to_dict()})
        code = 1
    except Exception as e:  # noqa: BLE001 - never a traceback on the terminal; it goes to the log file
        import logging

        logging.getLogger("ftpilot.cli").exception("command failed")
        from runtime.logs import log_path

        emit({"error": {"code": "internal_error", "message": f"{type(e).__name__}: {e}",
                        "hint": f"This is a bug in ftpilot; the traceback is in {log_path()}."}})
        code = 1
    return int(code or 0)


def _start() -> None:
    # OpenMP threads that spin while they wait lose their core on a shared, loaded machine: measured here at a
    # 1-min load of 7-10 on 2 cores, a 16x70-token forward took 29-39 s spinning and 13-17 s passive, a 16x4
    # decode step 8-16 s and 0.5-0.8 s. Set before torch loads (jobs started from here inherit it).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from pydantic import ValidationError

    from runtime.errors import BadInput
    from runtime.logs import setup_logging
    from runtime.settings import get_settings

    try:
        get_settings()  # sets HF_HUB_OFFLINE before anything can import the hub client
    except ValidationError as e:
        raise BadInput(f"invalid settings: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}",
                       hint="Check the FTPILOT_ environment variables and the config file.",
                       code="bad_settings") from None
    except OSError as e:
        raise BadInput(f"cannot create the data dir: {e}", hint="Set FTPILOT_DATA_DIR to a writable folder.",
                       code="data_dir_unwritable") from None
    setup_logging()


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
