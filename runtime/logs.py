"""One log file for the app, the CLI and the tools: `<data_dir>/logs/ftpilot.log`, rotated at 5 MB (3 kept).

Errors reach the person as values with a hint; the traceback behind an internal error goes here.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

_HANDLER: logging.Handler | None = None


def log_path() -> Path:
    from runtime.settings import get_settings

    return get_settings().data_dir / "logs" / "ftpilot.log"


def setup_logging(level: int = logging.INFO) -> Path | None:
    """Attach the rotating file handler to the `ftpilot` logger once; returns the file (None if unwritable)."""
    global _HANDLER
    if _HANDLER is not None:
        return Path(_HANDLER.baseFilename)
    try:
        path = log_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 2**20, backupCount=3, encoding="utf-8")
    except OSError:
        return None  # a read-only data dir must not stop the CLI
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("ftpilot")
    logger.addHandler(handler)
    logger.setLevel(level)
    _HANDLER = handler
    return path
