"""`ftpilot tool list | schema NAME | call NAME --args JSON | --args-file F`: JSON on stdout, non-zero on error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from assistant.cli import emit

EXIT_ERROR, EXIT_INVALID = 1, 2


def register(sub) -> None:
    p = sub.add_parser("tool", help="list, describe and call the typed tools")
    tsub = p.add_subparsers(dest="tool_command", required=True)
    tsub.add_parser("list", help="every tool with its cost class").set_defaults(handler=_list)
    s = tsub.add_parser("schema", help="a tool's strict OpenAI schema")
    s.add_argument("name")
    s.set_defaults(handler=_schema)
    c = tsub.add_parser("call", help="call a tool; prints its output JSON")
    c.add_argument("name")
    group = c.add_mutually_exclusive_group()
    group.add_argument("--args", default=None, help="arguments as a JSON object")
    group.add_argument("--args-file", type=Path, default=None, help="a file holding the JSON arguments")
    c.set_defaults(handler=_call)


def _list(_args) -> int:
    from tools import all_tools

    emit([{"name": t.name, "cost": t.cost, "module": t.module, "description": t.description}
          for t in all_tools().values()])
    return 0


def _schema(args) -> int:
    from tools.registry import get_tool
    from runtime.errors import FtpilotError

    try:
        t = get_tool(args.name)
    except FtpilotError as e:
        emit({"error": e.to_dict()})
        return EXIT_ERROR
    schema = t.openai_schema()
    schema["cost"] = t.cost
    schema["module"] = t.module
    schema["output_schema"] = t.output_model.model_json_schema()
    emit(schema)
    return 0


def _call(args) -> int:
    from tools import call_tool

    try:
        raw = args.args_file.read_text() if args.args_file else (args.args or "{}")
        arguments = json.loads(raw)
    except (OSError, ValueError) as e:  # ValueError: bad JSON, bad UTF-8
        emit({"error": {"code": "validation_error", "message": f"arguments are not readable JSON: {e}"}})
        return EXIT_INVALID
    except RecursionError:
        emit({"error": {"code": "validation_error", "message": "arguments are nested too deeply to read"}})
        return EXIT_INVALID
    result = call_tool(args.name, arguments)
    if result.ok:
        emit(result.output)
        return 0
    emit({"error": result.error})
    print(f"ftpilot: {args.name}: {result.error.get('message')}", file=sys.stderr)
    return EXIT_INVALID if result.error.get("code") == "validation_error" else EXIT_ERROR
