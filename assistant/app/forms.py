"""A form built from a tool's pydantic input model: one widget per field, prefilled, validated on submit.

This is how every plan step runs without the brain: the person fills (or accepts) the form, and the tool
runs with exactly those arguments. The buttons stay on screen whatever the form's length (the fields scroll),
ctrl+s submits (shown in the footer), and tabbing into a field leaves its text unselected, so typing adds to it.
"""

from __future__ import annotations

import json
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static, Switch


def _unwrap(annotation) -> tuple[Any, bool]:
    """(inner type, nullable) for Optional[...] / X | None."""
    args = typing.get_args(annotation)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _choices(annotation) -> list | None:
    inner, _ = _unwrap(annotation)
    if typing.get_origin(inner) is Literal:
        return list(typing.get_args(inner))
    import enum

    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return [m.value for m in inner]
    return None


def field_widgets(model: type[BaseModel], values: dict) -> list[tuple[str, Any, Any]]:
    """(field name, widget, annotation) for each field of the model."""
    out = []
    for name, f in model.model_fields.items():
        value = values.get(name, None if f.is_required() else f.default)
        inner, _nullable = _unwrap(f.annotation)
        choices = _choices(f.annotation)
        wid = f"field-{name}"
        if inner is bool:
            w = Switch(value=bool(value), id=wid)
        elif choices:
            w = Select([(str(c), c) for c in choices], value=value if value in choices else Select.NULL,
                       allow_blank=not f.is_required() or value not in choices, id=wid)
        else:
            text = "" if value is None else (value if isinstance(value, str) else json.dumps(value, default=str))
            w = Input(value=text, placeholder="(default)" if not f.is_required() else "required", id=wid,
                      select_on_focus=False)
        out.append((name, w, f.annotation))
    return out


def read_value(widget, annotation) -> tuple[bool, Any]:
    """(present, value) from a widget; empty means "use the default"."""
    if isinstance(widget, Switch):
        return True, widget.value
    if isinstance(widget, Select):
        return (False, None) if widget.value in (Select.NULL, Select.BLANK) else (True, widget.value)
    raw = widget.value.strip()
    if raw == "":
        return False, None
    inner, _ = _unwrap(annotation)
    if inner is str:
        return True, raw
    try:
        return True, json.loads(raw)
    except json.JSONDecodeError:
        return True, raw


class ToolFormScreen(ModalScreen[dict | None]):
    """Edit a tool's arguments; returns the validated dict, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "submit", "Run", priority=True)]

    def __init__(self, tool_name: str, model: type[BaseModel], values: dict, description: str = "",
                 submit_label: str = "Run (ctrl+s)"):
        super().__init__()
        self.tool_name, self.model, self.values, self.description = tool_name, model, values, description
        self.submit_label = submit_label
        self.fields = field_widgets(model, values)

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"[b]{self.tool_name}[/b]  {self.description}", id="form-title")
            with VerticalScroll():
                for name, widget, _ann in self.fields:
                    f = self.model.model_fields[name]
                    yield Label(name + (" *" if f.is_required() else ""), classes="fname")
                    if f.description:
                        yield Label(f.description, classes="fdesc")
                    yield widget
            yield Static("", id="errors")
            with Horizontal(id="form-buttons"):
                yield Button(self.submit_label, variant="success", id="submit")
                yield Button("Cancel (esc)", id="cancel")
        yield Footer()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_submit() if event.button.id == "submit" else self.action_cancel()

    def collect(self) -> dict:
        args = {}
        for name, widget, ann in self.fields:
            present, value = read_value(widget, ann)
            if present:
                args[name] = value
        return args

    def action_submit(self) -> None:
        args = self.collect()
        try:
            self.model.model_validate(args)
        except ValidationError as e:
            self.query_one("#errors", Static).update(
                "\n".join(f"{'.'.join(map(str, err['loc'])) or '(form)'}: {err['msg']}" for err in e.errors()))
            return
        self.dismiss(args)

    def action_cancel(self) -> None:
        self.dismiss(None)
