"""`ftpilot config show | path`."""

from __future__ import annotations

from assistant.cli import emit


def register(sub) -> None:
    p = sub.add_parser("config", help="show settings and where they come from")
    csub = p.add_subparsers(dest="config_command", required=True)
    csub.add_parser("show", help="the resolved settings as JSON").set_defaults(handler=_show)
    csub.add_parser("path", help="the config file path").set_defaults(handler=_path)


def _show(_args) -> int:
    from runtime.settings import config_file, get_settings

    s = get_settings()
    emit({**s.model_dump(mode="json"), "config_file": str(config_file()), "database": s.db_url(),
          "models_dir_resolved": str(s.resolved_models_dir)})
    return 0


def _path(_args) -> int:
    from runtime.settings import config_file

    print(config_file())
    return 0
