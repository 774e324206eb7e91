"""FtpilotApp: chat on the left, the plan on the right, the brain's state always visible.

Start-up renders the first frame with Textual alone; a worker then opens the store and the tools (resuming the
last conversation), and another loads the brain, its state shown in the status line. The agent runs in a thread
worker; its events arrive as Textual messages (messages.py) handled with `@on`, so UI state changes only on the
UI thread. A costly or unrequested tool call blocks that worker on an inline approval card, never the UI.
Messages typed during a turn wait in a queue; ctrl+q quits at once (the turn is cancelled; jobs keep running,
and the app says so on the way out).
"""

from __future__ import annotations

from collections import deque
from contextlib import contextmanager
from functools import partial

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Input, Markdown, Static
from textual.worker import Worker

from assistant.app import messages as am
from assistant.app.widgets import ApprovalCard, ChatMessage, PlanPanel, ToolCard

WELCOME = """**Welcome to ftpilot.** Tell me about your task and your data, or drive each step yourself:
the plan on the right (ctrl+l, Enter), a slash command (`/audit`, `/train`, `/eval`, … `/help`) or the palette
(ctrl+p) opens the step's form. No data yet? Ask for *a sample dataset*."""
FINISHED = ("succeeded", "failed", "cancelled")


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


class PromptInput(Input):
    """The message box. PgUp/PgDn scroll the chat from here (and the footer says so)."""

    BINDINGS = [Binding("pageup", "app.scroll_chat(-1)", "Scroll chat", key_display="PgUp/PgDn"),
                Binding("pagedown", "app.scroll_chat(1)", "Scroll chat", show=False)]


class ConversationReady(Message):
    """The store and tools are open and the agent holds a conversation (at start-up, new, or from History)."""

    def __init__(self, agent, available: set[str], resumed: bool = False, theme: str | None = None,
                 startup: bool = False):
        super().__init__()
        self.agent, self.available, self.resumed, self.theme = agent, available, resumed, theme
        self.startup = startup


class BrainState(Message):
    def __init__(self, state: str, error: str | None = None, seconds: float | None = None):
        super().__init__()
        self.state, self.error, self.seconds = state, error, seconds


class StartupFailed(Message):
    def __init__(self, error: str):
        super().__init__()
        self.error = error


class FtpilotApp(App):
    TITLE = "ftpilot"
    CSS_PATH = "ftpilot.tcss"
    COMMANDS = App.COMMANDS | {FtpilotCommands}
    BINDINGS = [
        Binding("f1", "help", "Help"),
        Binding("ctrl+r", "runs", "Runs"),
        Binding("ctrl+l", "focus_plan", "Plan"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+n", "new_conversation", "New"),
        Binding("ctrl+g", "playground", "Playground", show=False),
        Binding("escape", "stop", "Stop turn", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]
    JOB_POLL_S = 2.0

    def __init__(self, conversation_id: str | None = None, brain_kind: str | None = None, brain=None,
                 resume_last: bool = True):
        super().__init__()
        self.conversation_id = conversation_id
        self.resume_last = resume_last
        self.brain_kind = brain_kind
        self.brain = brain
        self.agent = None
        self.available: set[str] = set()
        self.brain_state = "starting"
        self.brain_error: str | None = None
        self.current: ChatMessage | None = None       # the assistant message being streamed
        self.cards: dict[str, ToolCard] = {}          # call id -> card
        self.job_cards: dict[str, ToolCard] = {}      # job id -> the card of the call that started it
        self.running_card: ToolCard | None = None     # the tool running now (its progress lines go here)
        self.queued: deque[str] = deque()             # messages typed during a turn
        self.agent_worker: Worker | None = None
        self.threads_at_work: set[str] = set()        # workers inside their function now (see `_at_work`)
        self.closing = False
        self._told_below = False                      # "new messages below" said once per scroll-up
        self.exit_note: str | None = None  # printed after the app exits (jobs that keep running)
        self.first_frame_s: float | None = None
        self.first_frame_hooks: list = []
        self._theme_loaded = False
        import time

        self._t0 = time.perf_counter()

    # --- layout -----------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            with Vertical(id="chat-pane"):
                yield VerticalScroll(id="chat")
                yield Static("brain: starting…", id="status", classes="loading")
                yield PromptInput(placeholder="Message, or a /command (/help). Enter sends.", id="prompt")
            yield PlanPanel(id="plan")
        yield Footer()

    def on_mount(self) -> None:
        # The main screen's widgets, kept: agent messages arrive while other screens are on top.
        self.chat_view = self.query_one("#chat", VerticalScroll)
        self.prompt_input = self.query_one("#prompt", Input)
        self.plan_panel = self.query_one(PlanPanel)
        self.status_bar = self.query_one("#status", Static)
        self.prompt_input.focus()
        self.begin_capture_print(self, stdout=False, stderr=True)  # a running tool's progress lines
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        """The first frame is on screen: now open the store and load the brain (in workers)."""
        import time

        self.first_frame_s = time.perf_counter() - self._t0
        for hook in self.first_frame_hooks:
            hook(self)
        self.open_conversation(self.conversation_id, resume=self.resume_last, startup=True)

    @contextmanager
    def _at_work(self, name: str):
        """Mark a thread worker busy, so that quitting knows work is left in a thread (`ftpilot chat` then
        exits without waiting for it)."""
        self.threads_at_work.add(name)
        try:
            yield
        finally:
            self.threads_at_work.discard(name)

    @property
    def busy(self) -> bool:
        """A turn (or a job summary) is running in the agent's worker."""
        return self.agent_worker is not None and not self.agent_worker.is_finished

    # --- start-up and conversations (workers) -------------------------------------------------------------
    @work(thread=True, exclusive=True, group="open", exit_on_error=False)
    def open_conversation(self, conv_id: str | None, resume: bool = False, startup: bool = False) -> None:
        """Open the store and tools and build an agent on `conv_id` (else the last conversation when `resume`,
        else a new one). At start-up, also build the brain."""
        from assistant.agent import Agent
        from assistant.brains import make_brain
        from runtime import queries
        from runtime.settings import get_settings
        from tools.registry import all_tools

        try:
            available = set(all_tools())
            resumed = False
            if conv_id is None and resume:
                conv_id = queries.last_conversation_id()
                resumed = conv_id is not None
            if self.brain is None:
                self.brain = make_brain(None if self.brain_kind in (None, "auto") else self.brain_kind)
            bridge = am.AgentBridge(self.post_message, self._why_stop_waiting)
            agent = Agent(self.brain, conversation_id=conv_id, approver=bridge.approve, emit=bridge.emit)
            theme = get_settings().theme if startup else None
        except Exception as e:  # noqa: BLE001 - shown, never a traceback
            self.post_message(StartupFailed(f"{type(e).__name__}: {e}" if not str(e) else str(e)))
            return
        self.post_message(ConversationReady(agent, available, resumed, theme, startup))

    @work(thread=True, exclusive=True, group="brain", exit_on_error=False)
    def load_brain(self) -> None:
        import time

        from assistant.brains import BrainUnavailable

        if getattr(self.brain, "ready", False):
            self.post_message(BrainState("ready"))
            return
        self.post_message(BrainState("loading"))
        t = time.perf_counter()
        try:
            with self._at_work("brain"):
                self.brain.load()
        except BrainUnavailable as e:
            self.post_message(BrainState("unavailable", str(e)))
            return
        except Exception as e:  # noqa: BLE001 - the plan and /commands still work
            self.post_message(BrainState("unavailable", f"{type(e).__name__}: {e}"))
            return
        self.post_message(BrainState("ready", seconds=time.perf_counter() - t))

    @on(StartupFailed)
    def _startup_failed(self, msg: StartupFailed) -> None:
        self._set_status(f"start-up failed: {msg.error}", "error")
        self.notify(f"Start-up failed: {msg.error}", severity="error", timeout=15)

    @on(ConversationReady)
    async def _conversation_ready(self, msg: ConversationReady) -> None:
        self.agent, self.available = msg.agent, msg.available
        self.conversation_id = msg.agent.conversation_id
        if msg.startup:
            if msg.theme in self.available_themes:
                self.theme = msg.theme
            self._theme_loaded = True
            self.load_brain()
            self.set_interval(self.JOB_POLL_S, self._poll_jobs)
            self.set_interval(1.0, self._refresh_status)  # the brain's own state ("starting vLLM" ...)
        await self._show_conversation()
        if msg.resumed:
            self.notify(f"Resumed your last conversation ({self.conversation_id}); ctrl+n starts a new one, "
                        "ctrl+o lists them all.", timeout=8)
        elif not msg.startup:
            self.notify(f"Conversation {self.conversation_id}")
        self._refresh_status()

    @on(BrainState)
    def _brain_state(self, msg: BrainState) -> None:
        self.brain_state, self.brain_error = msg.state, msg.error
        if msg.state == "loading":
            self._set_status(f"brain: loading {self.brain.kind} ({getattr(self.brain, 'model', '')})… "
                             "the plan and /commands work meanwhile; messages wait in a queue", "loading")
            return
        if msg.state == "ready" and msg.seconds is not None:
            self.notify(f"Brain ready in {msg.seconds:.1f}s: {self.brain.describe()}")
        if msg.state == "unavailable":
            self.notify(f"Brain unavailable: {msg.error}. The plan panel and slash commands still work.",
                        severity="error", timeout=15)
            self.queued.clear()
        self._refresh_status()
        self._next_queued()

    def watch_theme(self, theme: str) -> None:
        """The theme the person picks (palette: Change theme) is saved as the `theme` setting."""
        if self._theme_loaded:
            from runtime.settings import save_setting

            try:
                save_setting("theme", theme)
            except OSError as e:
                self.notify(f"Could not save the theme: {e}", severity="warning")

    # --- status line --------------------------------------------------------------------------------------
    def _set_status(self, text: str, cls: str = "") -> None:
        self.status_bar.set_classes(cls)
        self.status_bar.update(Text(text))

    def _refresh_status(self) -> None:
        if self.brain_state in ("starting", "loading"):
            return
        if self.brain_state == "unavailable":
            self._set_status(f"brain: unavailable ({self.brain_error}) · use the plan panel or /commands", "error")
            return
        parts = [f"brain: {self.brain.describe()}"]
        state = getattr(self.brain, "state", None)  # e.g. "starting vLLM" while a managed server starts
        if isinstance(state, str) and state and state != "ready":
            parts.append(state)
        if self.agent is not None and (jobs := self._active_jobs()):
            parts.append(f"{len(jobs)} job(s) running")
        if any(card.decision is None for card in self.chat_view.query(ApprovalCard)):
            parts.append("waiting for your decision (y approve · e edit · n reject)")
        elif self.running_card is not None:
            parts.append(f"running {self.running_card.tool_name}… (Esc stops the turn after it)")
        elif self.busy:
            parts.append("thinking… (Esc stops)")
        if self.queued:
            parts.append(f"{len(self.queued)} message(s) queued, sent when this turn ends")
        self._set_status(" · ".join(parts), "loading" if self.busy else "")
        self.sub_title = self.brain.describe()

    def _active_jobs(self) -> list[str]:
        try:
            return sorted(frozenset(self.agent.watched_jobs))
        except RuntimeError:  # the agent's thread changed the set meanwhile; next tick shows it
            return []

    # --- showing a conversation ---------------------------------------------------------------------------
    async def _show_conversation(self) -> None:
        """Render the stored history (resume) and the plan."""
        import json

        chat = self.chat_view
        await chat.remove_children()
        self.cards.clear()
        self.job_cards.clear()
        self.current = self.running_card = None
        runs = {r.get("job_id"): r for r in self.agent.project.runs}
        widgets, results, calls = [], [], {}
        for m in self.agent.messages:
            if m["role"] in ("user", "assistant") and m.get("content"):
                widgets.append(ChatMessage(m["role"], m["content"]))
            for c in m.get("tool_calls") or []:
                calls[c["id"]] = c
            if m["role"] == "tool":
                fn = calls.get(m.get("tool_call_id"), {}).get("function", {})
                try:
                    args, body = json.loads(fn.get("arguments") or "{}"), json.loads(m.get("content") or "{}")
                except ValueError:
                    args, body = {}, {}
                card = ToolCard(m.get("tool_call_id") or "", fn.get("name", "tool"), args)
                widgets.append(card)
                results.append((card, {k: body[k] for k in ("output", "error") if k in body}))
        if not widgets:
            widgets.append(Markdown(WELCOME, classes="welcome"))
        await chat.mount_all(widgets)
        for card, body in results:
            card.finish("error" not in body, body, 0.0)
            if card.job_id:
                self.job_cards[card.job_id] = card
                if (status := runs.get(card.job_id, {}).get("status")) and status != card.job_state:
                    card.set_job_state(status)
        chat.anchor()  # follow new content until the person scrolls up
        self.refresh_plan()

    def refresh_plan(self) -> None:
        if self.agent is not None and self.is_running:  # not while the app closes (its widgets go first)
            self.plan_panel.show(self.agent.project, self.available)

    async def _mount_in_chat(self, widget) -> None:
        self._tell_if_scrolled_up()
        await self.chat_view.mount(widget)

    def _tell_if_scrolled_up(self) -> None:
        """New content while the person reads further up: the chat stays put, and says so once."""
        chat = self.chat_view
        if chat.max_scroll_y > 0 and chat.scroll_y < chat.max_scroll_y:
            if not self._told_below:
                self._told_below = True
                self.notify("New messages below: PgDn (or End in the chat) follows them again.", timeout=6)
        else:
            self._told_below = False

    # --- agent messages (posted from the agent's worker) ---------------------------------------------------
    @on(am.Streamed)
    async def _streamed(self, msg: am.Streamed) -> None:
        if self.current is None:
            self.current = ChatMessage("assistant")
            await self._mount_in_chat(self.current)
        else:
            self._tell_if_scrolled_up()
        await self.current.show(msg.text)

    @on(am.Replied)
    async def _replied(self, msg: am.Replied) -> None:
        ev = msg.event
        if self.current is None and ev.content:
            self.current = ChatMessage("assistant", ev.content)
            await self._mount_in_chat(self.current)
        elif self.current is not None and ev.content:
            await self.current.show(ev.content)
        if self.current is not None:
            speed = f" · {ev.tokens / ev.seconds:.1f} tok/s" if ev.tokens and ev.seconds else ""
            self.current.set_meta(f"{ev.brain} · {ev.seconds:.1f}s{speed}" + (f" · {ev.note}" if ev.note else ""))
        self.current = None
        self._refresh_status()

    @on(am.ToolStarted)
    async def _tool_started(self, msg: am.ToolStarted) -> None:
        ev = msg.event
        self.current = None
        card = ToolCard(ev.call_id, ev.name, ev.arguments, ev.cost)
        self.cards[ev.call_id] = self.running_card = card
        await self._mount_in_chat(card)
        self._refresh_status()

    @on(am.ToolFinished)
    async def _tool_finished(self, msg: am.ToolFinished) -> None:
        ev = msg.event
        self.current = None
        card = self.cards.get(ev.call_id)
        if card is None:
            card = self.cards[ev.call_id] = ToolCard(ev.call_id, ev.name, ev.arguments)
            await self._mount_in_chat(card)
        if card is self.running_card:
            self.running_card = None
        card.finish(ev.ok, ev.result, ev.duration_s, ev.approved)
        if card.job_id:
            self.job_cards[card.job_id] = card
        self.refresh_plan()
        code = (ev.result.get("error") or {}).get("code")
        if not ev.ok and code not in ("validation_error", "invalid_json", "repeated_call", "rejected_by_person"):
            self.notify(f"{ev.name}: {(ev.result.get('error') or {}).get('message', 'failed')}", severity="error")

    @on(am.Notice)
    def _notice(self, msg: am.Notice) -> None:
        self.notify(msg.event.text, severity=msg.event.level, timeout=8)

    @on(am.JobEnded)
    def _job_ended(self, msg: am.JobEnded) -> None:
        ev = msg.event
        if (card := self.job_cards.get(ev.job_id)) is not None:
            card.set_job_state(ev.status)
        self.notify(f"Job {ev.job_id} {ev.status}", severity="information" if ev.status == "succeeded"
                    else "warning")
        self.refresh_plan()

    @on(am.TurnFinished)
    def _turn_finished(self, _msg: am.TurnFinished) -> None:
        self.current = self.running_card = None
        self.refresh_plan()

    def on_print(self, event: events.Print) -> None:
        """A running tool's progress (it writes progress lines on stderr): its last line, on its card."""
        from assistant.app.screens import is_noise

        if self.running_card is None:
            return
        lines = [ln.strip() for ln in event.text.replace("\r", "\n").splitlines()]
        lines = [ln for ln in lines if ln and not is_noise(ln)]
        if lines:
            self.post_message(am.ToolProgress(lines[-1]))

    @on(am.ToolProgress)
    def _tool_progress(self, msg: am.ToolProgress) -> None:
        if self.running_card is not None:
            self.running_card.progress(msg.line)

    # --- approval -------------------------------------------------------------------------------------------
    def _why_stop_waiting(self) -> str | None:
        """Called in the agent's thread while a card waits: the app closing or a stop ends the wait."""
        if self.closing or not self.is_running:
            return "the app closed before the person decided"
        if self.agent is not None and self.agent.cancelled:
            return "the person stopped the turn"
        return None

    @on(am.ApprovalNeeded)
    async def _approval_needed(self, msg: am.ApprovalNeeded) -> None:
        self.current = None
        card = ApprovalCard(msg)
        self.chat_view.anchor()  # a decision is needed: show it even if the person had scrolled up
        await self._mount_in_chat(card)
        card.focus(scroll_visible=False)  # y/e/n act on it at once; the anchor keeps it in view
        self.bell()
        self._refresh_status()

    @on(ApprovalCard.Decided)
    def _decided(self, msg: ApprovalCard.Decided) -> None:
        from assistant.agent import Decision

        card = msg.card
        if msg.action != "edit":
            card.resolve(Decision(msg.action, reason=None if msg.action == "approve" else "the person rejected it"))
            self.prompt_input.focus()
            self._refresh_status()
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
        from assistant.workflow import SLASH_TOOLS, SLASH_VIEWS

        text = event.value.strip()
        if not text:
            return
        cmd, _, rest = text.partition(" ")
        if cmd in SLASH_VIEWS or cmd == "/new":
            event.input.value = ""
            {"runs": self.action_runs, "help": self.action_help, "history": self.action_history,
             "audit": self.action_audit, "evaluation": self.action_evaluation,
             "playground": self.action_playground}.get(SLASH_VIEWS.get(cmd, ""), self.action_new_conversation)()
            return
        if cmd.startswith("/") and cmd not in SLASH_TOOLS:
            self.notify(f"Unknown command {cmd}; /help lists them", severity="warning")
            return
        if cmd in SLASH_TOOLS and not rest.strip():
            event.input.value = ""
            self.start_tool(SLASH_TOOLS[cmd])
            return
        if self.brain_state == "unavailable":
            self.notify("The brain is not ready (see the status line). Use the plan or a /command meanwhile.",
                        severity="warning")
            return
        event.input.value = ""
        if self.agent is None or self.brain_state != "ready" or self.busy or self.queued:
            self.queued.append(text)
            why = "the brain is loading" if self.brain_state != "ready" or self.agent is None else "a turn is running"
            self.notify(f"Queued ({why}); it is sent when that is done. Esc stops the current turn.")
            self._refresh_status()
            return
        self.send_message(text)

    def send_message(self, text: str) -> None:
        self.chat_view.mount(ChatMessage("user", text))
        self.chat_view.anchor()  # the person's own message: follow the reply
        self._run_in_agent(partial(self.agent.send, text))

    def _next_queued(self) -> None:
        if self.queued and not self.busy and self.agent is not None and self.brain_state == "ready":
            self.send_message(self.queued.popleft())

    def _run_in_agent(self, fn) -> None:
        self.agent_worker = self.run_agent(fn)
        self._refresh_status()

    @work(thread=True, group="agent", exit_on_error=False)
    def run_agent(self, fn) -> None:
        from assistant.agent import Notice

        with self._at_work("agent"):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - a notification, and the prompt stays usable
                self.post_message(am.Notice(Notice(f"Agent error: {type(e).__name__}: {e}", "error")))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self.agent_worker and event.worker.is_finished:
            for card in self.chat_view.query(ApprovalCard):  # decided for the person (a stop): say so on the card
                if card.decision is None and card.request.answered.is_set():
                    card.resolve(card.request.decision)
            self.current = self.running_card = None
            self._refresh_status()
            self._next_queued()

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
            self.chat_view.anchor()
            self._run_in_agent(partial(self.agent.run_tool_directly, name, args, summarize=summarize))

        self.push_screen(ToolFormScreen(name, tool.input_model, values, tool.description), submitted)

    @on(PlanPanel.StartStep)
    def _plan_step(self, msg: PlanPanel.StartStep) -> None:
        self.start_step(msg.step_key)

    # --- jobs ---------------------------------------------------------------------------------------------
    def _poll_jobs(self) -> None:
        if self.agent is not None and (ids := self._active_jobs()):
            self.read_jobs(ids)

    @work(thread=True, exclusive=True, group="jobs", exit_on_error=False)
    def read_jobs(self, ids: list[str]) -> None:
        from runtime import queries

        for job in queries.jobs_by_id(ids):
            self.post_message(am.JobUpdate(job))

    @on(am.JobUpdate)
    def _job_update(self, msg: am.JobUpdate) -> None:
        job = msg.job
        if (card := self.job_cards.get(job.id)) is not None and job.status not in FINISHED:
            card.set_job_state(job.status, f"step {job.step or 0}/{job.total_steps or '?'}"
                               if job.status == "running" else "")
        if job.status in FINISHED and not self.busy:
            self._run_in_agent(partial(self.agent.check_jobs, summarize=self.brain_state == "ready"))

    # --- actions ------------------------------------------------------------------------------------------
    def action_scroll_chat(self, direction: int) -> None:
        self.chat_view.scroll_page_down() if direction > 0 else self.chat_view.scroll_page_up()

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
            self.notify("Stopping after the current step…" + (" Then your queued message is sent."
                                                              if self.queued else ""))
        self.prompt_input.focus()

    async def action_quit(self) -> None:
        """Quit at once: the turn is cancelled (a pending approval is rejected); jobs keep running."""
        self.closing = True
        if self.agent is not None:
            self.agent.cancel()
        jobs = self._active_jobs() if self.agent is not None else []
        notes = []
        if self.running_card is not None:
            notes.append(f"ftpilot: {self.running_card.tool_name} was stopped (it ran inside the app); run it "
                         "again when you come back.")
        if jobs:
            notes.append(f"ftpilot: {len(jobs)} job(s) keep running in the background ({', '.join(jobs)}); "
                         "`ftpilot runs list` follows them, and the app shows them when you come back.")
        self.exit_note = "\n".join(notes) or None
        self.exit(message=self.exit_note)

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
        if self.agent is None:
            return
        self.queued.clear()
        self.open_conversation(conv_id)
