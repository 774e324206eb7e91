"""FtpilotApp: chat on the left, the plan on the right, brain status always visible.

Start-up renders the first frame with Textual alone; a worker then opens the store and the tools, and
another loads the brain (the embedded model takes seconds), showing its state in the status line.
The agent loop runs in a thread worker; its events come back with `call_from_thread`. Costly tool calls
block that worker on an inline approval card, never the UI.
"""

from __future__ import annotations

import threading
import time
from functools import partial

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Header, Input, Markdown, Static

from assistant.app.widgets import ApprovalCard, ChatMessage, PlanPanel, ToolCard


WELCOME = """**Welcome to ftpilot.** Tell me about your task and your data, or drive each step yourself:
the plan on the right (ctrl+l, Enter), a slash command (`/audit`, `/train`, `/eval`, … `/help`) or the palette
(ctrl+p) opens the step's form. No data yet? Ask for *a sample dataset*."""


class FtpilotCommands(Provider):
    """Command palette: every plan step, every view, new conversation."""

    def _commands(self):
        from assistant.workflow import STEPS

        app = self.app
        for s in STEPS:
            yield f"Step: {s.title} ({s.slash})", partial(app.start_step, s.key), f"opens the {s.tool} form"
        yield "View: runs", app.action_runs, "jobs, live loss, log"
        yield "View: audit", app.action_audit, "latest audit findings"
        yield "View: evaluation", app.action_evaluation, "latest evaluation metrics"
        yield "View: playground", app.action_playground, "a run's model beside its base"
        yield "Conversation: new", app.action_new_conversation, "start a fresh project"
        yield "Conversation: history", app.action_history, "resume an earlier one"
        yield "Help", app.action_help, "keys and commands"

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, cb, help_ in self._commands():
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), cb, help=help_)

    async def discover(self) -> Hits:
        for name, cb, help_ in self._commands():
            yield Hit(1.0, name, cb, help=help_)


class FtpilotApp(App):
    TITLE = "ftpilot"
    CSS = """
    #main { height: 1fr; }
    #chat-pane { width: 1fr; }
    #chat { height: 1fr; padding: 0 1; }
    #status { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    #status.loading { color: $warning; }
    #status.error { color: $error; }
    #prompt { margin: 0; }
    """
    COMMANDS = App.COMMANDS | {FtpilotCommands}
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+r", "runs", "Runs"),
        Binding("ctrl+l", "focus_plan", "Plan"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+g", "playground", "Playground", show=False),
        Binding("escape", "stop", "Stop turn", show=False),
        Binding("ctrl+q", "quit", "Quit"),
    ]
    JOB_POLL_S = 2.0

    def __init__(self, conversation_id: str | None = None, brain_kind: str | None = None, brain=None):
        super().__init__()
        self.conversation_id = conversation_id
        self.brain_kind = brain_kind
        self.brain = brain
        self.agent = None
        self.available: set[str] = set()
        self.brain_state = "starting"
        self.brain_error: str | None = None
        self.busy = False
        self.current: ChatMessage | None = None
        self.cards: dict[str, ToolCard] = {}
        self.first_frame_s: float | None = None
        self._t0 = time.perf_counter()
        self.ready_event = threading.Event()
        self.first_frame_hooks: list = []

    # --- layout -----------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="chat-pane"):
                yield VerticalScroll(id="chat")
                yield Static("brain: starting…", id="status", classes="loading")
                yield Input(placeholder="Message, or a /command (/help). Enter sends.", id="prompt")
            yield PlanPanel(id="plan")
        yield Footer()

    def on_mount(self) -> None:
        # The main screen's widgets, kept: agent events arrive while other screens are on top.
        self.chat_view = self.query_one("#chat", VerticalScroll)
        self.prompt_input = self.query_one("#prompt", Input)
        self.plan_panel = self.query_one(PlanPanel)
        self.status_bar = self.query_one("#status", Static)
        self.prompt_input.focus()
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        """The first frame is on screen: now open the store and load the brain (in a worker)."""
        self.first_frame_s = time.perf_counter() - self._t0
        for hook in self.first_frame_hooks:
            hook(self)
        self.boot()

    # --- start-up workers -------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="boot")
    def boot(self) -> None:
        """Open the store and tools, build the agent, then load the brain (slow) with a visible state."""
        from assistant.agent import Agent
        from assistant.brains import BrainUnavailable, make_brain
        from tools.registry import all_tools

        try:
            self.available = set(all_tools())
            if self.brain is None:
                kind = None if self.brain_kind in (None, "auto") else self.brain_kind
                self.brain = make_brain(kind)
            self.agent = Agent(self.brain, conversation_id=self.conversation_id, approver=self._approve,
                               emit=self._emit_from_thread)
        except Exception as e:  # noqa: BLE001 - shown, never a traceback
            self.call_from_thread(self._set_status, f"start-up failed: {e}", "error")
            self.call_from_thread(self.notify, f"Start-up failed: {e}", severity="error", timeout=15)
            return
        self.conversation_id = self.agent.conversation_id
        self.call_from_thread(self._restore_prefs)
        self.call_from_thread(self._show_conversation)
        self.call_from_thread(self.set_interval, self.JOB_POLL_S, self._poll_jobs)
        state, error = "ready", None
        if not getattr(self.brain, "ready", False):
            self.call_from_thread(self._set_brain_state, "loading")
            t = time.perf_counter()
            try:
                self.brain.load()
                self.call_from_thread(self.notify, f"Brain ready in {time.perf_counter() - t:.1f}s: "
                                                   f"{self.brain.describe()}")
            except BrainUnavailable as e:
                state, error = "unavailable", str(e)
                self.call_from_thread(self.notify, f"Brain unavailable: {e}. The plan panel and slash "
                                                   "commands still work.", severity="error", timeout=15)
            except Exception as e:  # noqa: BLE001
                state, error = "unavailable", f"{type(e).__name__}: {e}"
                self.call_from_thread(self.notify, f"Brain failed to load: {e}", severity="error", timeout=15)
        self.call_from_thread(self._set_brain_state, state, error)
        self.ready_event.set()

    # --- preferences (the theme) live in <data_dir>/app.json ------------------------------------------------
    def _prefs_path(self):
        from runtime.settings import get_settings

        return get_settings().data_dir / "app.json"

    def _restore_prefs(self) -> None:
        import json

        try:
            theme = json.loads(self._prefs_path().read_text()).get("theme")
            if theme and theme in self.available_themes:
                self.theme = theme
        except (OSError, ValueError):
            pass
        self._prefs_loaded = True

    def watch_theme(self, theme: str) -> None:
        import json

        if getattr(self, "_prefs_loaded", False):
            try:
                self._prefs_path().write_text(json.dumps({"theme": theme}))
            except OSError:
                pass

    def _set_brain_state(self, state: str, error: str | None = None) -> None:
        self.brain_state, self.brain_error = state, error
        if state == "loading":
            self._set_status(f"brain: loading {self.brain.kind} ({getattr(self.brain, 'model', '')})… "
                             "the plan and /commands work meanwhile", "loading")
        else:
            self._refresh_status()

    def _set_status(self, text: str, cls: str = "") -> None:
        st = self.status_bar
        st.set_classes(cls)
        st.update(Text(text))

    def _refresh_status(self) -> None:
        if self.brain_state == "ready":
            jobs = len(self.agent.watched_jobs) if self.agent else 0
            text = f"brain: {self.brain.describe()}" + (f" · {jobs} job(s) running" if jobs else "")
            text += " · thinking…" if self.busy else ""
            self._set_status(text)
        elif self.brain_state == "unavailable":
            self._set_status(f"brain: unavailable ({self.brain_error}) · use the plan panel or /commands", "error")
        self.sub_title = self.brain.describe() if self.brain is not None and self.brain_state == "ready" else ""

    def _show_conversation(self) -> None:
        """Render the stored history (resume) and the plan."""
        chat = self.chat_view
        chat.remove_children()
        self.cards.clear()
        pending_calls: dict[str, dict] = {}
        for m in self.agent.messages:
            if m["role"] in ("user", "assistant") and m.get("content"):
                chat.mount(ChatMessage(m["role"], m["content"]))
            for c in m.get("tool_calls") or []:
                pending_calls[c["id"]] = c
            if m["role"] == "tool":
                import json

                call = pending_calls.get(m.get("tool_call_id"), {})
                fn = call.get("function", {})
                try:
                    args, body = json.loads(fn.get("arguments") or "{}"), json.loads(m.get("content") or "{}")
                except ValueError:
                    args, body = {}, {}
                card = ToolCard(m.get("tool_call_id") or "", fn.get("name", "tool"), args)
                chat.mount(card)
                self.call_after_refresh(card.finish, "error" not in body, body, 0.0)
        if not self.agent.messages:
            chat.mount(Markdown(WELCOME, id="welcome"))
        chat.scroll_end(animate=False)
        self.refresh_plan()

    def refresh_plan(self) -> None:
        if self.agent is not None:
            self.plan_panel.show(self.agent.project, self.available)

    # --- agent events (from the worker thread) -----------------------------------------------------------
    def _emit_from_thread(self, ev) -> None:
        self.call_from_thread(self.on_agent_event, ev)

    async def on_agent_event(self, ev) -> None:
        from assistant.agent import (AssistantDelta, AssistantMessage, JobEnded, Notice, ToolFinished,
                                     ToolStarted, TurnDone)

        chat = self.chat_view
        if isinstance(ev, AssistantDelta):
            if self.current is None:
                self.current = ChatMessage("assistant")
                await chat.mount(self.current)
            await self.current.append(ev.text)
            chat.scroll_end(animate=False)
        elif isinstance(ev, AssistantMessage):
            if self.current is None and ev.content:
                self.current = ChatMessage("assistant", ev.content)
                await chat.mount(self.current)
            if self.current is not None:
                speed = f" · {ev.tokens / ev.seconds:.1f} tok/s" if ev.tokens and ev.seconds else ""
                self.current.set_meta(f"{ev.brain} · {ev.seconds:.1f}s{speed}" + (f" · {ev.note}" if ev.note else ""))
            self.current = None
            self._refresh_status()
        elif isinstance(ev, ToolStarted):
            self.current = None
            card = ToolCard(ev.call_id, ev.name, ev.arguments, ev.cost)
            self.cards[ev.call_id] = card
            await chat.mount(card)
            chat.scroll_end(animate=False)
        elif isinstance(ev, ToolFinished):
            self.current = None
            card = self.cards.get(ev.call_id)
            if card is None:
                card = ToolCard(ev.call_id, ev.name, ev.arguments)
                self.cards[ev.call_id] = card
                await chat.mount(card)
            card.finish(ev.ok, ev.result, ev.duration_s, ev.approved)
            chat.scroll_end(animate=False)
            self.refresh_plan()
            if not ev.ok and (ev.result.get("error") or {}).get("code") not in ("validation_error", "invalid_json",
                                                                                  "repeated_call"):
                self.notify(f"{ev.name}: {(ev.result.get('error') or {}).get('message', 'failed')}",
                            severity="error")
        elif isinstance(ev, Notice):
            self.notify(ev.text, severity=ev.level, timeout=8)
        elif isinstance(ev, JobEnded):
            self.notify(f"Job {ev.job_id} {ev.status}", severity="information" if ev.status == "succeeded"
                        else "warning")
            self.refresh_plan()
        elif isinstance(ev, TurnDone):
            self.current = None
            self.refresh_plan()

    # --- approval (called in the agent's worker thread; blocks it, never the UI) ---------------------------
    def _approve(self, pending):
        from assistant.agent import Decision

        card = ApprovalCard(pending)
        self.call_from_thread(self._mount_approval, card)
        while not card.event.wait(0.25):
            if not self.is_running:  # the app is closing: never leave the agent's thread waiting
                return Decision("reject", reason="the app closed before the person decided")
        return card.decision

    async def _mount_approval(self, card: ApprovalCard) -> None:
        chat = self.chat_view
        self.current = None
        await chat.mount(card)
        chat.scroll_end(animate=False)
        card.focus()
        self.bell()

    @on(ApprovalCard.Decided)
    def _decided(self, msg: ApprovalCard.Decided) -> None:
        from assistant.agent import Decision

        card = msg.card
        if msg.action != "edit":
            card.resolve(Decision(msg.action, reason=None if msg.action == "approve" else "the person rejected it"))
            self.prompt_input.focus()
            return
        from assistant.app.forms import ToolFormScreen
        from tools.registry import get_tool

        tool = get_tool(card.pending.name)

        def edited(args: dict | None) -> None:
            if args is not None:
                card.resolve(Decision("edit", args))
                self.prompt_input.focus()
            else:
                card.focus()

        self.push_screen(ToolFormScreen(tool.name, tool.input_model, card.pending.arguments, tool.description,
                                        submit_label="Approve with these (ctrl+s)"), edited)

    # --- input ------------------------------------------------------------------------------------------
    @on(Input.Submitted, "#prompt")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        from assistant.workflow import SLASH_TOOLS, SLASH_VIEWS

        cmd, _, rest = text.partition(" ")
        if cmd in SLASH_VIEWS or cmd == "/new":
            event.input.value = ""
            {"runs": self.action_runs, "help": self.action_help, "history": self.action_history,
             "audit": self.action_audit, "evaluation": self.action_evaluation,
             "playground": self.action_playground}.get(
                SLASH_VIEWS.get(cmd, ""), self.action_new_conversation)()
            return
        if cmd.startswith("/") and cmd not in SLASH_TOOLS:
            self.notify(f"Unknown command {cmd}; /help lists them", severity="warning")
            return
        if cmd in SLASH_TOOLS and not rest.strip():
            event.input.value = ""
            self.start_tool(SLASH_TOOLS[cmd])
            return
        if self.agent is None:
            self.notify("Still starting up; one moment.", severity="warning")
            return
        if self.busy:
            self.notify("The agent is busy with the last message (Esc stops it).", severity="warning")
            return
        if self.brain_state != "ready":
            self.notify("The brain is not ready (see the status line). Use the plan or a /command meanwhile.",
                        severity="warning")
            return
        event.input.value = ""
        self.chat_view.mount(ChatMessage("user", text))
        self.run_agent(lambda: self.agent.send(text))

    @work(thread=True, exclusive=True, group="agent")
    def run_agent(self, fn) -> None:
        self.busy = True
        self.call_from_thread(self._refresh_status)
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a notification, and the prompt stays usable
            self.call_from_thread(self.notify, f"Agent error: {type(e).__name__}: {e}", severity="error",
                                  timeout=12)
        finally:
            self.busy = False
            self.call_from_thread(self._refresh_status)

    # --- plan steps and forms -----------------------------------------------------------------------------
    def start_step(self, key: str) -> None:
        from assistant.workflow import STEP_BY_KEY

        self.start_tool(STEP_BY_KEY[key].tool)

    def start_tool(self, name: str) -> None:
        if self.agent is None:
            self.notify("Still starting up; one moment.", severity="warning")
            return
        if name not in self.available:
            self.notify(f"The tool {name} is not available in this install yet.", severity="warning")
            return
        if self.busy:
            self.notify("The agent is busy (Esc stops it).", severity="warning")
            return
        from assistant.app.forms import ToolFormScreen
        from tools.registry import get_tool

        tool = get_tool(name)
        values = self.agent.project.prefill(tool.input_model)

        def submitted(args: dict | None) -> None:
            if args is None:
                return
            summarize = self.brain_state == "ready"
            self.chat_view.mount(ChatMessage("user", f"`{name}` from the form"))
            self.run_agent(lambda: self.agent.run_tool_directly(name, args, summarize=summarize))

        self.push_screen(ToolFormScreen(name, tool.input_model, values, tool.description), submitted)

    @on(PlanPanel.StartStep)
    def _plan_step(self, msg: PlanPanel.StartStep) -> None:
        self.start_step(msg.step_key)

    # --- jobs ---------------------------------------------------------------------------------------------
    def _poll_jobs(self) -> None:
        if self.agent is None or not self.agent.watched_jobs or self.busy:
            return
        self.check_jobs()

    @work(thread=True, exclusive=True, group="agent")
    def check_jobs(self) -> None:
        self.busy = True
        try:
            self.agent.check_jobs(summarize=self.brain_state == "ready")
        except Exception as e:  # noqa: BLE001
            self.call_from_thread(self.notify, f"Job check failed: {e}", severity="error")
        finally:
            self.busy = False
            self.call_from_thread(self._refresh_status)

    # --- actions ------------------------------------------------------------------------------------------
    def action_help(self) -> None:
        from assistant.app.screens import HelpScreen

        self.push_screen(HelpScreen())

    def action_runs(self) -> None:
        from assistant.app.screens import RunsScreen

        run = self.agent.project.latest_run() if self.agent else None
        self.push_screen(RunsScreen(run.get("job_id") if run else None))

    def action_audit(self) -> None:
        from assistant.app.screens import AuditScreen

        self.push_screen(AuditScreen())

    def action_evaluation(self) -> None:
        from assistant.app.screens import EvaluationScreen

        self.push_screen(EvaluationScreen())

    def action_playground(self) -> None:
        from assistant.app.playground import PlaygroundScreen

        run = self.agent.project.latest_run() if self.agent else None
        job = run.get("job_id") if run and run.get("status") == "succeeded" else None
        self.push_screen(PlaygroundScreen(job))

    def action_focus_plan(self) -> None:
        from textual.widgets import OptionList

        self.plan_panel.query_one("#plan-steps", OptionList).focus()

    def action_stop(self) -> None:
        if self.busy and self.agent is not None:
            self.agent.cancel()
            self.notify("Stopping after the current step…")
        self.prompt_input.focus()

    def action_history(self) -> None:
        from assistant.app.screens import HistoryScreen

        def chosen(conv_id: str | None) -> None:
            if conv_id:
                self.switch_conversation(conv_id)

        self.push_screen(HistoryScreen(), chosen)

    def action_new_conversation(self) -> None:
        self.switch_conversation(None)

    def switch_conversation(self, conv_id: str | None) -> None:
        if self.busy:
            self.notify("Wait for the current turn (Esc stops it).", severity="warning")
            return
        if self.brain is None:
            return
        from assistant.agent import Agent

        self.agent = Agent(self.brain, conversation_id=conv_id, approver=self._approve,
                           emit=self._emit_from_thread)
        self.conversation_id = self.agent.conversation_id
        self._show_conversation()
        self.notify(f"Conversation {self.conversation_id}")
