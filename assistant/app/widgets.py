"""Chat widgets: messages with streamed Markdown, tool-call cards, inline approval, the plan panel.
Styles live in ftpilot.tcss."""

from __future__ import annotations

import json

from rich.syntax import Syntax
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Collapsible, Label, Markdown, OptionList, Static
from textual.widgets.option_list import Option

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def pretty_json(obj) -> Syntax:
    return Syntax(json.dumps(obj, indent=2, default=str), "json", word_wrap=True, theme="ansi_dark")


class ChatMessage(Vertical):
    """One message. Assistant prose streams into its Markdown with `show` (the whole text so far)."""

    def __init__(self, role: str, content: str = "", **kw):
        super().__init__(classes=role, **kw)
        self.role = role
        self.content = content

    def compose(self) -> ComposeResult:
        yield Markdown(self.content)

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    async def show(self, text: str) -> None:
        """Render `text`, appending when it extends what is shown (cheap while streaming)."""
        if text.startswith(self.content):
            new, self.content = text[len(self.content):], text
            if new:
                await self.markdown.append(new)
        else:
            self.content = text
            await self.markdown.update(text)

    def set_meta(self, text: str) -> None:
        self.mount(Label(text, classes="meta"))


class ToolCard(Vertical):
    """A tool call: name, cost and arguments; then its state, the numbers that matter, every reason and
    recommendation in full, and the result JSON (click to open; never focused, so Enter stays with the prompt).
    A call that started a job shows the job's id and its real state until the job ends."""

    def __init__(self, call_id: str, name: str, arguments: dict, cost: str = "", **kw):
        super().__init__(classes="running", **kw)
        self.call_id, self.tool_name, self.arguments, self.cost = call_id, name, arguments, cost
        self.result: dict | None = None
        self.job_id: str | None = None
        self.job_state: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._title("running…"), classes="title")
        yield Static(Text(args_line(self.arguments)), classes="summary", id="args")
        yield Static("", id="progress")
        yield Static("", id="result-line")
        with Collapsible(title="result JSON", collapsed=True):
            yield Static("", id="result-json")

    def on_mount(self) -> None:
        for title in self.query("CollapsibleTitle"):
            title.can_focus = False

    def _title(self, state: str) -> Text:
        t = Text()
        t.append(f"⚙ {self.tool_name}", style="bold")
        if self.cost:
            t.append(f"  [{self.cost}]", style="dim")
        t.append(f"  {state}")
        return t

    def progress(self, line: str) -> None:
        self.query_one("#progress", Static).update(Text(line))

    def finish(self, ok: bool, result: dict, duration_s: float, approved: str | None = None) -> None:
        self.result = result
        out = result.get("output") or {}
        self.query_one("#progress", Static).update("")
        self.query_one("#result-line", Static).update(result_text(result))
        self.query_one("#result-json", Static).update(pretty_json(result))
        self.remove_class("running")
        took = f"{duration_s:.2f}s" + (f" · {approved}" if approved else "")
        if ok and isinstance(out, dict) and out.get("job_id") and out.get("status") in JOB_STATES:
            self.job_id = out["job_id"]
            self.set_job_state(out["status"], took)
            return
        self.add_class("ok" if ok else "failed")
        self.query_one(".title", Static).update(self._title(("✓ " if ok else "✗ ") + took))

    def set_job_state(self, status: str, detail: str = "") -> None:
        """The job this call started: its id and state, never "done" while it runs."""
        self.job_state = status
        self.set_class(status in ("queued", "running"), "running")
        self.set_class(status == "succeeded", "ok")
        self.set_class(status in ("failed", "cancelled"), "failed")
        mark = {"succeeded": "✓", "failed": "✗", "cancelled": "✗"}.get(status, "…")
        self.query_one(".title", Static).update(
            self._title(f"{mark} job {self.job_id} {status}" + (f" · {detail}" if detail else "")))


def args_line(arguments: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in arguments.items()) or "(no arguments)"


# Result fields shown as full bullet lists (the reasons behind a decision, an audit's advice...).
LIST_FIELDS = ("reasons", "recommendations", "findings", "missing_data", "notes", "comparisons")


def result_text(result: dict) -> Text:
    """The result in a few wrapped lines: an error with its hint, else scalars, then every list item in full."""
    if "error" in result:
        err = result["error"] or {}
        t = Text(f"error {err.get('code', '')}: {err.get('message', '')}", style="bold red")
        for f in err.get("fields", [])[:5]:
            t.append(f"\n  {f.get('loc')}: {f.get('msg')}")
        if err.get("hint"):
            t.append(f"\n{err['hint']}")
        return t
    out = result.get("output") or {}
    if not isinstance(out, dict):
        return Text(str(out))
    t = Text(_scalars(out) or "ok")
    for key, value in out.items():  # one level down: run_status's job, a decision's baseline...
        if isinstance(value, dict) and (inner := _scalars(value)):
            t.append(f"\n{key}: ", style="bold")
            t.append(inner)
    for key in LIST_FIELDS:
        items = out.get(key)
        if not isinstance(items, list) or not items:
            continue
        t.append(f"\n{key}:", style="bold")
        for item in items[:8]:
            t.append("\n  • " + _item_text(item))
        if len(items) > 8:
            t.append(f"\n  … {len(items) - 8} more (result JSON)")
    return t


def _scalars(d: dict, most: int = 10) -> str:
    return ", ".join(f"{k}={v}" for k, v in list((k, v) for k, v in d.items()
                                                  if isinstance(v, (str, int, float, bool)))[:most])


def _item_text(item) -> str:
    if not isinstance(item, dict):
        return str(item)
    if "check" in item:  # an audit finding
        return f"{item.get('severity', '')} {item['check']} ×{item.get('count', '?')}: {item.get('message', '')}"
    if "rule" in item:  # a decision's reason
        return f"{item['rule']} ({item.get('favours', '')}): {item.get('detail', '')}"
    if "candidate" in item:  # an evaluation comparison
        deltas = "; ".join(f"Δ{m} {d.get('delta')} {d.get('ci95')}" for m, d in (item.get("metrics") or {}).items()
                           if isinstance(d, dict))
        return f"{item['candidate']} vs {item.get('baseline')}: {deltas}"
    return json.dumps(item, default=str)


class ApprovalCard(Vertical):
    """Inline approval for a costly or unrequested call: approve (y), edit the arguments (e), reject (n).
    It takes focus when it appears, so the keys act on it at once."""

    BINDINGS = [Binding("y", "decide('approve')", "Approve"), Binding("e", "decide('edit')", "Edit"),
                Binding("n", "decide('reject')", "Reject")]
    can_focus = True

    class Decided(Message):
        def __init__(self, card: "ApprovalCard", action: str):
            super().__init__()
            self.card, self.action = card, action

    def __init__(self, request, **kw):
        """`request`: the ApprovalNeeded message (its `pending` call and the `answer` the agent waits on)."""
        super().__init__(**kw)
        self.request = request
        self.pending = request.pending
        self.decision = None

    def compose(self) -> ComposeResult:
        p = self.pending
        yield Static(Text.assemble(("Approve ", "bold"), (p.name, "bold yellow"), f"  [{p.cost}]  ",
                                   (p.description, "dim")))
        if p.why:
            yield Static(Text(f"Waits for you: {p.why}"), classes="why")
        yield Static(Text("\n".join(f"{k}: {json.dumps(v, default=str, ensure_ascii=False)}"
                                    for k, v in p.arguments.items()) or "(no arguments)"))
        with Horizontal():
            yield Button("Approve (y)", variant="success", id="approve")
            yield Button("Edit (e)", variant="primary", id="edit")
            yield Button("Reject (n)", variant="error", id="reject")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_decide(event.button.id)

    def action_decide(self, action: str) -> None:
        if self.decision is None:
            self.post_message(self.Decided(self, action))

    def resolve(self, decision) -> None:
        """Record the person's decision (or why it was decided for them) and release the agent."""
        if self.decision is not None:
            return
        self.decision = decision
        self.request.answer(decision)
        for b in self.query(Button):
            b.disabled = True
            b.can_focus = False
        self.can_focus = False
        note = f"→ {decision.action}" + (" (edited)" if decision.arguments else "")
        if decision.reason and decision.action == "reject":
            note += f": {decision.reason}"
        self.mount(Label(note, classes="meta"))


class PlanPanel(Vertical):
    """The project's plan: each step with its state; Enter starts one (a form from the tool's input model)."""

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
