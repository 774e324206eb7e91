"""The typed tool framework: registry, strict OpenAI schemas, cost classes, errors as values.

A tool is a pydantic input model (extra="forbid", finite numbers only), a pydantic output model, a function,
a one-line description and a cost class. Tool modules are listed in `TOOL_MODULES` and register with `@tool`;
`all_tools()` imports them on first use. Tool modules must not import torch/transformers at module
level: the CLI and the TUI list tools on start-up.

A call whose arguments say `overwrite: true` costs `destructive` whatever the tool's class (`Tool.cost_for`):
replacing a file needs the person's approval. Tests register extra tools with `extra_tools(...)`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from runtime.errors import FtpilotError

Cost = Literal["instant", "cpu_job", "gpu_job", "destructive"]
# Every module that defines tools, in the order `ftpilot tool list` groups them.
TOOL_MODULES = ("tools.dataset", "tools.samples", "tools.generate", "tools.recommend", "tools.training",
                "tools.evaluate", "tools.hardware", "tools.export")


class ToolInput(BaseModel):
    """Base for every tool's input: unknown fields are errors, not silently ignored; NaN and infinity are
    refused (a learning rate of Infinity once "trained" to loss 0.0)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    func: Callable[[Any], BaseModel]
    cost: Cost

    @property
    def module(self) -> str:
        return self.func.__module__

    def cost_for(self, args: dict | BaseModel | None) -> Cost:
        """The cost of one call: replacing existing files (`overwrite: true`) is destructive."""
        value = getattr(args, "overwrite", None) if isinstance(args, BaseModel) else (args or {}).get("overwrite")
        return "destructive" if value is True else self.cost

    def openai_schema(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": strict_schema(self.input_model),
                "strict": True,
            },
        }


class ToolResult(BaseModel):
    """What every call returns: the output, or an error as a value."""

    ok: bool
    tool: str
    output: dict | None = None
    error: dict | None = None
    duration_s: float = 0.0


_REGISTRY: dict[str, Tool] = {}
_discovered = False


def tool(name: str, description: str, cost: Cost) -> Callable:
    """Register a function `f(args: InputModel) -> OutputModel` as a tool; models come from its annotations."""

    def decorate(func: Callable) -> Callable:
        import inspect
        import typing

        hints = typing.get_type_hints(func)
        params = list(inspect.signature(func).parameters)
        if len(params) != 1:
            raise TypeError(f"tool {name}: takes exactly one argument, its input model")
        input_model, output_model = hints[params[0]], hints["return"]
        if input_model.model_config.get("extra") != "forbid":
            raise TypeError(f"tool {name}: input model must forbid extra fields (subclass ToolInput)")
        spec = Tool(name, description, input_model, output_model, func, cost)
        func.tool_name, func.tool_spec = name, spec
        if not func.__module__.startswith("tools."):
            return func  # a test's tool: registered only inside `extra_tools(...)`
        if name in _REGISTRY and _REGISTRY[name].func.__module__ != func.__module__:
            raise ValueError(f"tool {name} registered twice")
        _REGISTRY[name] = spec
        return func

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    for name in TOOL_MODULES:
        importlib.import_module(name)
    _discovered = True


@contextlib.contextmanager
def extra_tools(*funcs: Callable) -> Iterator[None]:
    """Register tools for the length of a `with` block (tests): `with extra_tools(fake_train): ...`.

    Each function must carry `@tool`; it is registered on entry and removed on exit."""
    _discover()
    names = [getattr(f, "tool_name") for f in funcs]
    saved = {n: _REGISTRY.get(n) for n in names}
    for f in funcs:
        _REGISTRY[f.tool_name] = f.tool_spec
    try:
        yield
    finally:
        for n, old in saved.items():
            if old is None:
                _REGISTRY.pop(n, None)
            else:
                _REGISTRY[n] = old


def all_tools() -> dict[str, Tool]:
    _discover()
    return dict(sorted(_REGISTRY.items()))


def get_tool(name: str) -> Tool:
    tools_ = all_tools()
    if name not in tools_:
        raise FtpilotError(f"no tool named {name!r}", hint=f"Known tools: {', '.join(tools_)}", code="unknown_tool")
    return tools_[name]


# --- strict schemas ---------------------------------------------------------------------------------

def strict_schema(model: type[BaseModel]) -> dict:
    """OpenAI strict-mode JSON schema: every property required, optional ones nullable, no extras."""
    schema = copy.deepcopy(model.model_json_schema())
    _strictify(schema)
    for sub in schema.get("$defs", {}).values():
        _strictify(sub)
    return schema


def _strictify(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _strictify(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" and "properties" in node:
        required = set(node.get("required", []))
        for key, prop in node["properties"].items():
            prop.pop("default", None)
            if key not in required and not _allows_null(prop):
                node["properties"][key] = {"anyOf": [prop, {"type": "null"}],
                                           **({"description": prop["description"]} if "description" in prop else {})}
        node["required"] = list(node["properties"])
        node["additionalProperties"] = False
    for key, value in node.items():
        if key not in ("default", "examples", "enum", "const"):
            _strictify(value)


def _allows_null(prop: dict) -> bool:
    return prop.get("type") == "null" or any(o.get("type") == "null" for o in prop.get("anyOf", []))


def _drop_nulls_for_defaults(model: type[BaseModel], args: dict) -> dict:
    """Strict schemas make optional fields nullable; a null there means "use the default"."""
    out = {}
    for key, value in args.items():
        field = model.model_fields.get(key)
        if value is None and field is not None and not field.is_required() and field.default is not None:
            continue
        out[key] = value
    return out


# --- calling ---------------------------------------------------------------------------------------

def validation_error_value(exc: ValidationError) -> dict:
    return {
        "code": "validation_error",
        "message": f"{exc.error_count()} invalid argument(s)",
        "fields": [{"loc": ".".join(str(p) for p in e["loc"]) or "(root)", "msg": e["msg"], "type": e["type"]}
                   for e in exc.errors()],
        "hint": "Fix the listed fields and call again.",
    }


def call_tool(name: str, args: dict | BaseModel | None = None) -> ToolResult:
    """Validate `args`, run the tool, and return a ToolResult; never raises for bad input or domain errors."""
    start = time.perf_counter()

    def done(**kw) -> ToolResult:
        return ToolResult(tool=name, duration_s=round(time.perf_counter() - start, 4), **kw)

    try:
        t = get_tool(name)
    except FtpilotError as e:
        return done(ok=False, error=e.to_dict())
    try:
        if isinstance(args, BaseModel):
            args = args.model_dump()
        if args is not None and not isinstance(args, dict):
            raise FtpilotError("arguments must be a JSON object", code="validation_error")
        parsed = t.input_model.model_validate(_drop_nulls_for_defaults(t.input_model, args or {}))
    except ValidationError as e:
        return done(ok=False, error=validation_error_value(e))
    except FtpilotError as e:
        return done(ok=False, error=e.to_dict())
    try:
        out = t.func(parsed)
    except FtpilotError as e:
        return done(ok=False, error=e.to_dict())
    except ValidationError as e:  # a tool's own output failed its model: a bug, but still a value
        return done(ok=False, error={"code": "internal_error", "message": str(e)})
    except Exception as e:  # noqa: BLE001 - the contract is errors as values, never tracebacks
        logging.getLogger("ftpilot.tools").exception("tool %s failed", name)
        return done(ok=False, error={"code": "internal_error", "message": f"{type(e).__name__}: {e}",
                                     "hint": "This is a bug in ftpilot; the log has the traceback."})
    return done(ok=True, output=out.model_dump(mode="json"))
