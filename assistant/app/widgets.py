"""Chat widgets: messages with streamed Markdown, tool-call cards, inline approval, the plan panel."""

from __future__ import annotations

import json
import threading

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Collapsible, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option


def pretty_json(obj) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, default=str), "json", word_wrap=True, theme="ansi_dark")


class ChatMessage(Vertical):
    """One message. Assistant prose streams into its Markdown with `append`."""

    DEFAULT_CSS = """
    ChatMessage { height: auto; margin: 0 0 1 0; padding: 0 1; }
    ChatMessage.user { border-left: thick $accent; background: $boost; }
    ChatMessage.assistant { border-left: thick $success; }
    ChatMessage .meta { color: $text-muted; text-style: italic; }
    ChatMessage Markdown { margin: 0; padding: 0; }
    """

    def __init__(self, role: str, content: str = "", **kw):
        super().__init__(classes=role, **kw)
        self.role = role
        self.content = content

    def compose(self) -> ComposeResult:
        yield Markdown(self.content)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def append(self, text: str) -> None:
        self.content += text
        await self.markdown.append(text)

    def set_meta(self, text: str) -> None:
        self.mount(Label(text, classes="meta"))


class ToolCard(Vertical):
    """A tool call: name, cost, arguments, then status, duration, a one-line summary and the JSON result."""

    DEFAULT_CSS = """
    ToolCard { height: auto; margin: 0 0 1 2; padding: 0 1; border: round $primary-darken-1; }
    ToolCard.ok { border: round $success; }
    ToolCard.failed { border: round $error; }
    ToolCard .title { text-style: bold; }
    ToolCard .summary { color: $text-muted; }
    ToolCard Collapsible { padding: 0; margin: 0; border: none; }
    """

    def __init__(self, call_id: str, name: str, arguments: dict, cost: str = "", **kw):
        super().__init__(**kw)
        self.call_id, self.tool_name, self.arguments, self.cost = call_id, name, arguments, cost
        self.result: dict | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._title("running…"), classes="title")
        yield Static(Text(json.dumps(self.arguments, default=str)[:300]), classes="summary", id="args")
        yield Static("", classes="summary", id="result-line")
        with Collapsible(title="result JSON", collapsed=True):
            yield Static("", id="result-json")

    def _title(self, state: str) -> Text:
        t = Text()
        t.append(f"⚙ {self.tool_name}", style="bold")
        if self.cost:
            t.append(f"  [{self.cost}]", style="dim")
        t.append(f"  {state}")
        return t

    def finish(self, ok: bool, result: dict, duration_s: float, approved: str | None = None) -> None:
        self.result = result
        self.add_class("ok" if ok else "failed")
        state = ("✓ " if ok else "✗ ") + f"{duration_s:.2f}s" + (f" · {approved}" if approved else "")
        self.query_one(".title", Static).update(self._title(state))
        self.query_one("#result-line", Static).update(Text(result_line(result)))
        self.query_one("#result-json", Static).update(pretty_json(result))


def result_line(result: dict) -> str:
    if "error" in result:
        err = result["error"] or {}
        fields = "; ".join(f"{f.get('loc')}: {f.get('msg')}" for f in err.get("fields", [])[:3])
        return f"error {err.get('code', '')}: {err.get('message', '')}" + (f" ({fields})" if fields else "") + (
            f" — {err['hint']}" if err.get("hint") else "")
    out = result.get("output") or {}
    parts = [f"{k}={v}" for k, v in out.items() if isinstance(v, (str, int, float, bool))][:6]
    return ", ".join(parts)[:300] or "ok"


class ApprovalCard(Vertical):
    """Inline approval for a costly call: approve (y), edit the arguments (e), reject (n)."""

    DEFAULT_CSS = """
    ApprovalCard { height: auto; margin: 0 0 1 2; padding: 0 1; border: heavy $warning; }
    ApprovalCard Horizontal { height: auto; }
    ApprovalCard Button { margin-right: 1; min-width: 12; }
    """
    BINDINGS = [Binding("y", "decide('approve')", "Approve"), Binding("e", "decide('edit')", "Edit"),
                Binding("n", "decide('reject')", "Reject")]
    can_focus = True

    class Decided(Message):
        def __init__(self, card: "ApprovalCard", action: str):
            super().__init__()
            self.card, self.action = card, action

    def __init__(self, pending, **kw):
        super().__init__(**kw)
        self.pending = pending
        self.event = threading.Event()
        self.decision = None

    def compose(self) -> ComposeResult:
        p = self.pending
        yield Static(Text.assemble(("Approve ", "bold"), (p.name, "bold yellow"), f"  [{p.cost}]  ",
                                   (p.description, "dim")))
        yield Static(pretty_json(p.arguments))
        with Horizontal():
            yield Button("Approve (y)", variant="success", id="approve")
            yield Button("Edit (e)", variant="primary", id="edit")
            yield Button("Reject (n)", variant="error", id="reject")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_decide(event.button.id)

    def action_decide(self, action: str) -> None:
        if self.event.is_set():
            return
        self.post_message(self.Decided(self, action))

    def resolve(self, decision) -> None:
        from assistant.agent import Decision

        self.decision = decision if isinstance(decision, Decision) else Decision(decision)
        for b in self.query(Button):
            b.disabled = True
        self.mount(Label(f"→ {self.decision.action}" + (" (edited)" if self.decision.arguments else ""),
                         classes="meta"))
        self.event.set()


class PlanPanel(Vertical):
    """The project's plan: each step with its state; Enter starts one (a form from the tool's input model)."""

    DEFAULT_CSS = """
    PlanPanel { width: 38; height: 1fr; border: round $primary; padding: 0; }
    PlanPanel OptionList { height: auto; max-height: 14; border: none; }
    PlanPanel #project { color: $text-muted; padding: 0 1; height: auto; }
    PlanPanel #next { padding: 0 1; text-style: bold; color: $success; height: auto; }
    """

    class StartStep(Message):
        def __init__(self, step_key: str):
            super().__init__()
            self.step_key = step_key

    def compose(self) -> ComposeResult:
        self.border_title = "Plan"
        yield OptionList(id="plan-steps")
        yield Static("", id="next")
        yield Static("loading…", id="project")

    def show(self, project, available: set[str] | None = None) -> None:
        from assistant.workflow import STEPS

        nxt = project.next_step()
        opts = self.query_one(OptionList)
        highlighted = opts.highlighted
        opts.clear_options()
        for s in STEPS:
            state = project.step_status(s.key)
            mark = {"done": "✓", "running": "…", "todo": "▶" if s.key == nxt.key else "·"}[state]
            missing = available is not None and s.tool not in available
            label = Text.assemble(f"{mark} ", (s.title, "dim" if missing or s.optional else ""),
                                  (f"  {s.slash}", "dim"))
            opts.add_option(Option(label, id=s.key))
        if highlighted is not None:
            opts.highlighted = highlighted
        self.query_one("#next", Static).update(f"Next: {nxt.title} ({nxt.slash})")
        self.query_one("#project", Static).update(Text("\n".join(project.summary_lines()[:-1])))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.StartStep(event.option.id))
