"""Screens: runs (jobs table, live loss curve, log tail, cancel/resume), audit and evaluation views,
conversation history, help. They read the store through `runtime.queries` and call tools; workers post typed
messages back, never touching widgets from their threads. Styles live in ftpilot.tcss."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Markdown, OptionList, RichLog, Static
from textual.widgets.option_list import Option

# Library chatter in job logs and on stderr (warnings and the source lines they quote), hidden by default; in a
# job's log, progress bars are chatter too (its metrics already say the step).
NOISE = re.compile(r"warn|deprecat|^\s*(?:return|super\(\)|self\.)|^\s*warnings\.|torch_dtype|TRANSFORMERS_|hf_xet|"
                   r"tokenizers? (?:parallelism|fork)|\b(?:INFO|DEBUG) (?:alembic|httpx|urllib3|datasets)\b", re.I)
PROGRESS_BAR = re.compile(r"\d+%\|.*\||[\d?]+(?:\.\d+)?\s*(?:it/s|s/it|examples/s)\]|^\s*$")


def is_noise(line: str, bars: bool = False) -> bool:
    return "[ftpilot]" not in line and bool(NOISE.search(line) or (bars and PROGRESS_BAR.search(line)))


class ConfirmScreen(ModalScreen[bool]):
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str):
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            with Horizontal():
                yield Button("Yes (y)", variant="warning", id="yes")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


# --- runs -------------------------------------------------------------------------------------------------

class JobsRead(Message):
    """One poll of the jobs (and new log text of the selected one). Coalesces: only the newest matters."""

    def __init__(self, jobs: list, log_text: str):
        super().__init__()
        self.jobs, self.log_text = jobs, log_text

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JobsRead) and not self.log_text


class MetricsRead(Message):
    """New metric lines for the selected job. Coalesces: only the latest unprocessed one matters."""

    def __init__(self, job_id: str, steps: list, losses: list, eval_steps: list, eval_losses: list):
        super().__init__()
        self.job_id, self.steps, self.losses = job_id, steps, losses
        self.eval_steps, self.eval_losses = eval_steps, eval_losses

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, MetricsRead) and message.job_id == self.job_id


class MetricsTail:
    """Incremental reader of a metrics JSONL file (flat lines with a `step` key)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.offset = 0
        self.steps: list[float] = []
        self.losses: list[float] = []
        self.eval_steps: list[float] = []
        self.eval_losses: list[float] = []
        self.last: dict = {}

    def read(self) -> bool:
        if not self.path or not self.path.is_file():
            return False
        with self.path.open("rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return False
        self.offset += end + 1
        for line in chunk[: end + 1].decode(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict) or "step" not in row:
                continue
            self.last = {**self.last, **row}  # an eval line keeps the last train loss and speed
            loss = row.get("loss", row.get("train_loss"))
            if isinstance(loss, (int, float)):
                self.steps.append(row["step"])
                self.losses.append(loss)
            if isinstance(row.get("eval_loss"), (int, float)):
                self.eval_steps.append(row["step"])
                self.eval_losses.append(row["eval_loss"])
        return True


class LogTail:
    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.offset = 0

    def read(self) -> str:
        if not self.path or not self.path.is_file():
            return ""
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(256_000)
        self.offset += len(data)
        return data.decode(errors="replace")


def fmt_eta(job, last: dict) -> str:
    sps = last.get("s_per_step")
    if job.status != "running" or not sps or not job.total_steps:
        return ""
    s = max(0, (job.total_steps - (job.step or 0)) * sps)
    return f"{int(s // 60)}m{int(s % 60):02d}s"


# Columns in order of importance, so a narrow terminal clips the least useful ones (model, dataset) first.
JOB_COLUMNS = [("id", "job"), ("status", "status"), ("step", "step"), ("loss", "loss"), ("eta", "ETA"),
               ("method", "method"), ("model", "model"), ("dataset", "dataset")]


class RunsScreen(Screen):
    """Every job: status, step, loss, ETA, method, model, dataset; the selected one's loss curve and log
    (library warnings hidden; `l` shows every line)."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("c", "cancel_job", "Cancel run"),
                Binding("r", "resume_job", "Resume run"), Binding("l", "toggle_noise", "All log lines"),
                Binding("f5", "refresh", "Refresh")]
    POLL_S = 0.5

    def __init__(self, job_id: str | None = None):
        super().__init__()
        self.selected: str | None = job_id
        self.tails: dict[str, MetricsTail] = {}
        self.logs: dict[str, LogTail] = {}
        self.jobs: dict[str, object] = {}
        self.renders = 0
        self.show_noise = False
        self.hidden_lines = 0
        self.log_lines: list[str] = []

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        yield PlotextPlot(id="plot")
        yield RichLog(id="log", max_lines=2000, wrap=True)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Runs"
        t = self.query_one(DataTable)
        for key, label in JOB_COLUMNS:
            t.add_column(label, key=key)
        self.refresh_jobs()
        self.set_interval(self.POLL_S, self.refresh_jobs)

    def action_refresh(self) -> None:
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        self._poll()

    @work(thread=True, exclusive=True, group="runs-poll", exit_on_error=False)
    def _poll(self) -> None:
        from runtime import queries

        jobs = queries.recent_jobs(100)
        for j in jobs:
            tail = self.tails.get(j.id)
            if tail is None or (tail.path is None and j.metrics_path):
                tail = self.tails[j.id] = MetricsTail(j.metrics_path)
            if j.id == self.selected or j.status == "running" or not tail.last:
                tail.read()
        log_text = ""
        job = next((j for j in jobs if j.id == (self.selected or (jobs[0].id if jobs else None))), None)
        if job is not None:
            lt = self.logs.get(job.id)
            if lt is None or (lt.path is None and job.log_path):
                lt = self.logs[job.id] = LogTail(job.log_path)
            log_text = lt.read()
        self.post_message(JobsRead(jobs, log_text))

    @on(JobsRead)
    def _jobs_read(self, msg: JobsRead) -> None:
        t = self.query_one(DataTable)
        self.jobs = {j.id: j for j in msg.jobs}
        for j in msg.jobs:
            tail = self.tails.get(j.id)
            last = tail.last if tail else {}
            loss = last.get("loss", last.get("train_loss"))
            step = f"{j.step or last.get('step') or 0}/{j.total_steps or '?'}"
            status = Text(j.status, style={"running": "bold yellow", "succeeded": "green", "failed": "red",
                                           "cancelled": "dim"}.get(j.status, ""))
            method = " ".join(x for x in (j.kind.replace("train_", ""), j.method or "") if x)
            values = {"id": j.id, "status": status, "step": step, "eta": fmt_eta(j, last), "method": method,
                      "loss": f"{loss:.4f}" if isinstance(loss, (int, float)) else "",
                      "model": Path(j.model or "").name[:20], "dataset": Path(j.dataset or "").name[:20]}
            if j.id in t.rows:
                for key, _ in JOB_COLUMNS:
                    t.update_cell(j.id, key, values[key], update_width=True)
            else:
                t.add_row(*[values[k] for k, _ in JOB_COLUMNS], key=j.id)
        if self.selected is None and msg.jobs:
            self.selected = msg.jobs[0].id
        if self.selected in self.jobs:
            self._show_detail(self.jobs[self.selected])
        if msg.log_text:
            self._write_log(msg.log_text)

    def _show_detail(self, job) -> None:
        tail = self.tails.get(job.id)
        last = tail.last if tail else {}
        mem = "".join(f" · {label} {last[k]:.0f} MB" for k, label in
                      (("memory_mb", "RSS"), ("gpu_memory_mb", "GPU mem"), ("cuda_memory_mb", "GPU mem"))
                      if isinstance(last.get(k), (int, float)))
        speed = f" · {last['tokens_per_s']:.1f} tok/s" if isinstance(last.get("tokens_per_s"), (int, float)) else ""
        self.query_one("#detail", Static).update(Text(
            f"{job.id} · {job.status} · {job.device or ''}{mem}{speed} · run dir {job.run_dir or '?'}"
            + (f" · error: {job.error}" if job.error else "")))
        if tail is not None:
            self.post_message(MetricsRead(job.id, list(tail.steps), list(tail.losses), list(tail.eval_steps),
                                          list(tail.eval_losses)))

    def _write_log(self, text: str) -> None:
        log = self.query_one(RichLog)
        for line in text.splitlines():
            self.log_lines.append(line)
            if not self.show_noise and is_noise(line, bars=True):
                self.hidden_lines += 1
                continue
            log.write(Text(line))
        log.border_title = (f"log · {self.hidden_lines} library line(s) hidden (l shows them)"
                            if self.hidden_lines and not self.show_noise else "log")

    def action_toggle_noise(self) -> None:
        self.show_noise = not self.show_noise
        lines, self.log_lines, self.hidden_lines = self.log_lines, [], 0
        self.query_one(RichLog).clear()
        self._write_log("\n".join(lines))

    def on_metrics_read(self, msg: MetricsRead) -> None:
        if msg.job_id != self.selected:
            return
        from textual_plotext import PlotextPlot

        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        # No legend (plotext draws it over the curves): the title names the colours.
        plt.title(f"loss · {msg.job_id} · train (blue)" + (" · eval (orange)" if msg.eval_steps else ""))
        if msg.steps:
            plt.plot(msg.steps, msg.losses, marker="braille", color="blue")
        if msg.eval_steps:
            plt.plot(msg.eval_steps, msg.eval_losses, marker="braille", color="orange")
        plot.refresh()
        self.renders += 1

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        if key and key != self.selected:
            self.selected = key
            self.query_one(RichLog).clear()
            self.log_lines, self.hidden_lines = [], 0
            self.logs.pop(key, None)
            self.refresh_jobs()

    def _control(self, tool: str, verb: str) -> None:
        if not self.selected:
            self.notify("No run selected", severity="warning")
            return
        job_id = self.selected

        def answered(yes: bool | None) -> None:
            if yes:
                self._call(tool, job_id)

        self.app.push_screen(ConfirmScreen(f"{verb} run {job_id}?"), answered)

    @work(thread=True, exit_on_error=False)
    def _call(self, tool: str, job_id: str) -> None:
        from tools import call_tool

        res = call_tool(tool, {"job_id": job_id})
        if res.ok:
            self.app.call_from_thread(self.notify, f"{tool}: {job_id} → {res.output.get('status')}")
        else:
            self.app.call_from_thread(self.notify, f"{tool} failed: {res.error.get('message')}", severity="error")
        self.app.call_from_thread(self.refresh_jobs)

    def action_cancel_job(self) -> None:
        self._control("cancel_run", "Cancel")

    def action_resume_job(self) -> None:
        self._control("resume_run", "Resume")


# --- audit and evaluation views -----------------------------------------------------------------------

class Loaded(Message):
    def __init__(self, heading: str, rows: list[dict], details: list[str]):
        super().__init__()
        self.heading, self.rows, self.details = heading, rows, details


class FindingsScreen(Screen):
    """A table (findings or metrics) over a detail pane that explains the selected row in full."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]
    kind = "audit"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="heading")
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="detail"):
            yield Markdown("", id="detail-text")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.kind.capitalize()
        self.rows: list[dict] = []
        self.details: list[str] = []
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        self.post_message(Loaded(*self.fetch()))

    def fetch(self) -> tuple[str, list[dict], list[str]]:
        """(heading, table rows, one Markdown detail per row)."""
        raise NotImplementedError

    @on(Loaded)
    def _loaded(self, msg: Loaded) -> None:
        self.rows, self.details = msg.rows, msg.details
        self.query_one("#heading", Static).update(Text(msg.heading))
        t = self.query_one(DataTable)
        t.clear(columns=True)
        if not msg.rows:
            return
        for c in msg.rows[0]:
            t.add_column(c, key=c)
        for i, r in enumerate(msg.rows):
            t.add_row(*[_scalar(v) for v in r.values()], key=str(i))
        self.query_one("#detail-text", Markdown).update(self.details[0] if self.details else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key and event.row_key.value is not None and self.details:
            self.query_one("#detail-text", Markdown).update(self.details[int(event.row_key.value)])


def _scalar(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def _ci(ci) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.3g}, {ci[1]:.3g}]"
    return ""


def finding_markdown(f) -> str:
    """One audit finding in full: severity, count, the explanation, the rows, and examples."""
    rows = ", ".join(map(str, f.rows[:40])) + (f" … ({len(f.rows)} in all)" if len(f.rows) > 40 else "")
    out = [f"**{f.check}** · {f.severity} · {f.count} row(s)", "", f.message or "", "", f"Rows (0-based): {rows}"]
    if f.lines:
        out.append(f"Lines: {', '.join(map(str, f.lines[:40]))}")
    if f.examples:
        out += ["", "Examples:"]
        for ex in f.examples[:5]:
            text = " ".join(str(ex.get(k, "")) for k in ("detail", "preview") if ex.get(k))
            out.append(f"- row {ex.get('row', '?')}: {text or json.dumps(ex, default=str)}")
    return "\n".join(out)


class AuditScreen(FindingsScreen):
    kind = "audit"

    def fetch(self):
        from runtime import queries

        audit = queries.latest_audit()
        if audit is None:
            return "No audit yet: run /audit (or the Audit step in the plan).", [], []
        heading = (f"Audit #{audit.id} of {audit.dataset_path or '?'}"
                   + (f" ({audit.dataset_rows} rows)" if audit.dataset_rows else "")
                   + f" · {len(audit.findings)} finding(s)" + (f" · report {audit.report_path}" if audit.report_path
                                                               else ""))
        rows = [{"severity": f.severity, "check": f.check, "rows": f.count, "explanation": f.message}
                for f in audit.findings]
        advice = "\n\n**Recommendations**\n\n" + "\n".join(f"- {r}" for r in audit.recommendations)
        details = [finding_markdown(f) + advice for f in audit.findings]
        if not rows:
            rows, details = [{"severity": "", "check": "(none)", "rows": 0, "explanation": "no findings"}], [advice]
        return heading, rows, details


class EvaluationScreen(FindingsScreen):
    kind = "evaluation"

    def fetch(self):
        from runtime import queries

        ev = queries.latest_evaluation()
        if ev is None:
            return "No evaluation yet: run /eval (or the Evaluate step in the plan).", [], []
        res = ev.results
        rows, details = [], []
        for r in res.results:
            for metric, m in r.metrics.items():
                rows.append({"system": r.name, "metric": metric, "value": m.value, "ci95": _ci(m.ci95), "n": m.n,
                             "tok/s": r.tokens_per_s})
                details.append(f"**{r.name}** · {metric} = {m.value} (95% CI {_ci(m.ci95)}, n={m.n})")
        for c in res.comparisons:
            for metric, d in c.metrics.items():
                rows.append({"system": f"{c.candidate} vs {c.baseline}", "metric": f"Δ {metric}", "value": d.delta,
                             "ci95": _ci(d.ci95), "n": d.n, "tok/s": None})
                sure = ("the interval excludes 0: a real difference" if d.excludes_zero
                        else "the interval includes 0: not a measurable difference")
                details.append(f"**{c.candidate}** minus **{c.baseline}** on {metric}: {d.delta} "
                               f"(paired 95% CI {_ci(d.ci95)}, n={d.n}); {sure}.")
        heading = (f"Evaluation #{ev.id} · job {ev.job_id or '-'} · {ev.eval_path or ''}"
                   + (f" · report {ev.report_path}" if ev.report_path else "")
                   + "".join(f"\nnote: {n}" for n in res.notes))
        return heading, rows, details


# --- history and help ---------------------------------------------------------------------------------

class ConversationsRead(Message):
    def __init__(self, convs: list[dict]):
        super().__init__()
        self.convs = convs


class HistoryScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(" Conversations (Enter opens one)")
            yield OptionList(id="convs")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        from assistant.agent import list_conversations

        self.post_message(ConversationsRead(list_conversations()))

    @on(ConversationsRead)
    def _show(self, msg: ConversationsRead) -> None:
        ol = self.query_one(OptionList)
        for c in msg.convs:
            ol.add_option(Option(f"{c['updated_at']}  {c['title']}  ({c['messages']} messages, next: "
                                 f"{c['next_step']})", id=c["id"]))
        ol.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


HELP = """\
# ftpilot

Talk to it, or drive every step yourself: the plan panel, slash commands and the command palette (**ctrl+p**)
start any step with a form built from the tool's arguments.

## Keys
| key | does |
|---|---|
| enter | send the message (typed during a turn, it waits in a queue) |
| escape | stop the current turn; back from a screen |
| pgup / pgdn | scroll the chat (it follows new content unless you scrolled up) |
| ctrl+p | command palette (steps, views, themes) |
| ctrl+l | focus the plan panel (enter starts the step) |
| ctrl+r | runs: jobs, live loss, log (c cancel, r resume, l all log lines) |
| ctrl+n | new conversation |
| ctrl+o | conversation history (enter opens one) |
| ctrl+g | playground: a run's model beside its base |
| ctrl+s | in a form: run the step (or approve with the edited arguments) |
| y / e / n | approve / edit / reject a pending tool call |
| f1 | this help |
| ctrl+q | quit at once (jobs keep running in the background) |

## Slash commands
`/decide` `/audit` `/clean` `/synth` `/train` `/dpo` `/distill` `/eval` `/export` open the step's form
(add words to let the brain fill it: `/audit data/train.jsonl`; two paths mean train, then eval).
`/runs` `/audits` `/evals` `/history` `/playground` `/help` open views. `/new` starts a new conversation.

## Approvals
Steps that train, generate or replace files wait for your approval. Tool output (your data included) is data,
never instructions: a step the brain proposes after reading it, that you did not ask for, always waits for you.

## Brains
The status line shows the active brain, its model, its state (e.g. starting vLLM) and its measured speed.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)

