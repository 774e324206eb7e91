"""Screens: runs (jobs table, live loss curve, log tail, cancel/resume), audit and evaluation views,
conversation history, help. They read the store and call tools; they never drive runtime internals."""

from __future__ import annotations

import json
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Header, Label, Log, Markdown, OptionList, Static
from textual.widgets.option_list import Option

TERMINAL = {"succeeded", "failed", "cancelled"}


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 60; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    """
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
            self.last = row
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


class RunsScreen(Screen):
    """Every job: status, method, model, dataset, step, loss, ETA; the selected one's loss curve and log."""

    DEFAULT_CSS = """
    RunsScreen #jobs { height: 12; }
    RunsScreen #lower { height: 1fr; }
    RunsScreen #plot { width: 2fr; }
    RunsScreen #log { width: 1fr; border-left: solid $primary; }
    RunsScreen #detail { height: 1; color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back"), Binding("c", "cancel_job", "Cancel run"),
                Binding("r", "resume_job", "Resume run"), Binding("f5", "refresh", "Refresh")]
    POLL_S = 0.5

    def __init__(self, job_id: str | None = None):
        super().__init__()
        self.selected: str | None = job_id
        self.tails: dict[str, MetricsTail] = {}
        self.logs: dict[str, LogTail] = {}
        self.jobs: dict[str, object] = {}
        self.renders = 0

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Header()
        yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        with Horizontal(id="lower"):
            yield PlotextPlot(id="plot")
            yield Log(id="log", max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Runs"
        t = self.query_one(DataTable)
        for key, label in [("id", "job"), ("status", "status"), ("kind", "kind"), ("method", "method"),
                           ("model", "model"), ("dataset", "dataset"), ("step", "step"), ("loss", "loss"),
                           ("eta", "ETA")]:
            t.add_column(label, key=key)
        self.refresh_jobs()
        self.set_interval(self.POLL_S, self.refresh_jobs)

    def action_refresh(self) -> None:
        self.refresh_jobs()

    def refresh_jobs(self) -> None:
        self._poll()

    @work(thread=True, exclusive=True, group="runs-poll")
    def _poll(self) -> None:
        from sqlmodel import select

        from runtime import store

        with store.session() as s:
            jobs = s.exec(select(store.Job).order_by(store.Job.created_at.desc()).limit(100)).all()
        for j in jobs:
            tail = self.tails.setdefault(j.id, MetricsTail(j.metrics_path))
            if tail.path is None and j.metrics_path:
                self.tails[j.id] = tail = MetricsTail(j.metrics_path)
            if j.id == self.selected or j.status == "running" or not tail.last:
                tail.read()
        log_text = ""
        if self.selected:
            job = next((j for j in jobs if j.id == self.selected), None)
            if job is not None:
                lt = self.logs.setdefault(job.id, LogTail(job.log_path))
                if lt.path is None and job.log_path:
                    self.logs[job.id] = lt = LogTail(job.log_path)
                log_text = lt.read()
        self.app.call_from_thread(self._update_table, jobs, log_text)

    def _update_table(self, jobs, log_text: str) -> None:
        t = self.query_one(DataTable)
        self.jobs = {j.id: j for j in jobs}
        for j in jobs:
            tail = self.tails.get(j.id)
            last = tail.last if tail else {}
            loss = last.get("loss", last.get("train_loss"))
            step = f"{j.step or last.get('step') or 0}/{j.total_steps or '?'}"
            status = Text(j.status, style={"running": "bold yellow", "succeeded": "green", "failed": "red",
                                           "cancelled": "dim"}.get(j.status, ""))
            row = [j.id, status, j.kind, j.method or "", Path(j.model or "").name[:24], Path(j.dataset or "").name[:24],
                   step, f"{loss:.4f}" if isinstance(loss, (int, float)) else "", fmt_eta(j, last)]
            if j.id in t.rows:
                for key, value in zip(["id", "status", "kind", "method", "model", "dataset", "step", "loss", "eta"],
                                      row):
                    t.update_cell(j.id, key, value)
            else:
                t.add_row(*row, key=j.id)
        if self.selected is None and jobs:
            self.selected = jobs[0].id
        if self.selected in self.jobs:
            job = self.jobs[self.selected]
            tail = self.tails.get(self.selected)
            last = tail.last if tail else {}
            mem = "".join(f" · {label} {last[k]:.0f} MB" for k, label in
                          (("memory_mb", "RSS"), ("gpu_memory_mb", "GPU mem"), ("cuda_memory_mb", "GPU mem"))
                          if isinstance(last.get(k), (int, float)))
            speed = f" · {last['tokens_per_s']:.1f} tok/s" if isinstance(last.get("tokens_per_s"), (int, float)) else ""
            self.query_one("#detail", Static).update(
                f"{job.id} · {job.status} · {job.device or ''}{mem}{speed} · run dir {job.run_dir or '?'}"
                + (f" · error: {job.error}" if job.error else ""))
            if tail is not None:
                self.post_message(MetricsRead(job.id, list(tail.steps), list(tail.losses), list(tail.eval_steps),
                                              list(tail.eval_losses)))
        if log_text:
            self.query_one(Log).write(log_text)

    def on_metrics_read(self, msg: MetricsRead) -> None:
        if msg.job_id != self.selected:
            return
        from textual_plotext import PlotextPlot

        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.title(f"loss · {msg.job_id}")
        if msg.steps:
            plt.plot(msg.steps, msg.losses, label="train", marker="braille")
        if msg.eval_steps:
            plt.plot(msg.eval_steps, msg.eval_losses, label="eval", marker="braille")
        plot.refresh()
        self.renders += 1

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        key = event.row_key.value if event.row_key else None
        if key and key != self.selected:
            self.selected = key
            self.query_one(Log).clear()
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

    @work(thread=True)
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

def _scalar(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, default=str)[:80]
    return str(v)


def flatten(obj, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list) and obj and all(isinstance(x, (int, float)) for x in obj) and len(obj) <= 4:
        out.append((prefix, obj))
    elif isinstance(obj, list):
        out.append((prefix, f"{len(obj)} item(s)"))
    else:
        out.append((prefix, obj))
    return out


class FindingsScreen(Screen):
    """A table of rows (findings or metrics) with a detail pane showing the selected row's full JSON."""

    DEFAULT_CSS = """
    FindingsScreen #table { height: 2fr; }
    FindingsScreen #detail { height: 1fr; border-top: solid $primary; overflow-y: auto; }
    FindingsScreen #heading { height: auto; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]
    kind = "audit"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="heading")
        yield DataTable(id="table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        self.title = self.kind.capitalize()
        self.rows: list[dict] = []
        self.load()

    @work(thread=True)
    def load(self) -> None:
        heading, rows = self.fetch()
        self.app.call_from_thread(self.show, heading, rows)

    def fetch(self) -> tuple[str, list[dict]]:
        raise NotImplementedError

    def show(self, heading: str, rows: list[dict]) -> None:
        self.rows = rows
        self.query_one("#heading", Static).update(heading)
        t = self.query_one(DataTable)
        t.clear(columns=True)
        if not rows:
            return
        cols: list[str] = []
        for r in rows:
            for k, v in r.items():
                if k not in cols and not isinstance(v, (list, dict)) and len(cols) < 8:
                    cols.append(k)
        for c in cols:
            t.add_column(c, key=c)
        for i, r in enumerate(rows):
            t.add_row(*[_scalar(r.get(c, "")) for c in cols], key=str(i))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        from assistant.app.widgets import pretty_json

        if event.row_key and event.row_key.value is not None and self.rows:
            self.query_one("#detail", Static).update(pretty_json(self.rows[int(event.row_key.value)]))


def _ci(ci) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.3g}, {ci[1]:.3g}]"
    return "" if ci is None else str(ci)


def _extra(r: dict) -> dict:
    return {"tok/s": r.get("tokens_per_s"), "p50 s": (r.get("latency_s") or {}).get("p50")}


class AuditScreen(FindingsScreen):
    kind = "audit"

    def fetch(self):
        from sqlmodel import select

        from runtime import store

        with store.session() as s:
            audit = s.exec(select(store.Audit).order_by(store.Audit.id.desc())).first()
            ds = s.get(store.Dataset, audit.dataset_id) if audit and audit.dataset_id else None
        if audit is None:
            return "No audit yet: run /audit (or the Audit step in the plan).", []
        data = dict(audit.summary or {})
        if audit.json_path and Path(audit.json_path).is_file():
            try:
                data = {**json.loads(Path(audit.json_path).read_text()), **data}
            except (OSError, json.JSONDecodeError):
                pass
        findings = data.get("findings") or data.get("issues") or []
        if isinstance(findings, dict):
            findings = [{"check": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in findings.items()]
        rows = [f if isinstance(f, dict) else {"finding": f} for f in findings]
        if not rows:
            rows = [{"field": k, "value": v} for k, v in flatten({k: v for k, v in data.items() if k != "findings"})]
        heading = (f"Audit #{audit.id} of {ds.path if ds else '?'}" + (f" ({ds.rows} rows)" if ds and ds.rows else "")
                   + (f" · report {audit.report_path}" if audit.report_path else "") + f" · {len(rows)} finding(s)")
        return heading, rows


class EvaluationScreen(FindingsScreen):
    kind = "evaluation"

    def fetch(self):
        from sqlmodel import select

        from runtime import store

        with store.session() as s:
            ev = s.exec(select(store.Evaluation).order_by(store.Evaluation.id.desc())).first()
        if ev is None:
            return "No evaluation yet: run /eval (or the Evaluate step in the plan).", []
        results = ev.results or {}
        rows: list[dict] = []
        if isinstance(results.get("results"), list):  # the evaluate tool: systems, metrics with CIs, deltas
            for r in results["results"]:
                for metric, m in (r.get("metrics") or {}).items():
                    m = m if isinstance(m, dict) else {"value": m}
                    rows.append({"system": r.get("name"), "metric": metric, "value": m.get("value"),
                                 "ci95": _ci(m.get("ci95")), "n": m.get("n"), **_extra(r)})
            for c in results.get("comparisons") or []:
                for metric, d in (c.get("metrics") or {}).items():
                    d = d if isinstance(d, dict) else {"delta": d}
                    rows.append({"system": f"{c.get('candidate')} vs {c.get('baseline')}", "metric": f"Δ {metric}",
                                 "value": d.get("delta"), "ci95": _ci(d.get("ci95")), "n": d.get("n"),
                                 "details": d})
        else:
            metrics = results.get("metrics") or results.get("systems") or results
            if isinstance(metrics, dict) and metrics and all(isinstance(v, dict) for v in metrics.values()):
                for system, vals in metrics.items():
                    rows.append({"system": system, **{k: v for k, v in flatten(vals)}})
            else:
                rows = [{"metric": k, "value": v} for k, v in flatten(results)]
        cmp_ = results.get("comparison")
        heading = (f"Evaluation #{ev.id} · job {ev.job_id or '?'} · {ev.eval_path or ''}"
                   + (f" · report {ev.report_path}" if ev.report_path else "")
                   + (f"\ncomparison: {json.dumps(cmp_, default=str)[:300]}" if cmp_ else ""))
        return heading, rows


# --- history and help ---------------------------------------------------------------------------------

class HistoryScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    HistoryScreen { align: center middle; }
    HistoryScreen > Vertical { width: 90; height: 80%; border: thick $primary; background: $surface; }
    """
    BINDINGS = [Binding("escape", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(" Conversations (Enter resumes)")
            yield OptionList(id="convs")

    def on_mount(self) -> None:
        self.load()

    @work(thread=True)
    def load(self) -> None:
        from assistant.agent import list_conversations

        convs = list_conversations()
        self.app.call_from_thread(self._show, convs)

    def _show(self, convs) -> None:
        ol = self.query_one(OptionList)
        for c in convs:
            ol.add_option(Option(f"{c['updated_at']}  {c['title']}  (next: {c['next_step']})", id=c["id"]))
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
| enter | send the message |
| escape | stop the current turn; back from a screen |
| ctrl+p | command palette (steps, views, themes) |
| ctrl+l | focus the plan panel (enter starts the step) |
| ctrl+r | runs: jobs, live loss, log (c cancel, r resume) |
| ctrl+n | new conversation |
| ctrl+g | playground: a run's model beside its base |
| ctrl+o | conversation history (resume) |
| f1 | this help |
| y / e / n | approve / edit / reject a pending tool call |

## Slash commands
`/decide` `/audit` `/clean` `/synth` `/train` `/dpo` `/distill` `/eval` `/export` open the step's form
(add words to let the brain fill it: `/audit data/train.jsonl`). `/runs` `/audits` `/evals` `/history`
`/playground` `/help` open views. `/new` starts a new conversation.

## Brains
The status line shows the active brain, its model and its measured speed. The embedded brain (the bundled
135M model, CPU) routes tool choice from your words and the plan, and decodes arguments under a JSON-schema
grammar; for open-ended advice, point ftpilot at a bigger model with `FTPILOT_BRAIN_URL` (any
OpenAI-compatible server, e.g. `vllm serve`).
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 100; max-width: 95%; height: 90%; border: thick $primary;
                            background: $surface; overflow-y: auto; }
    """
    BINDINGS = [Binding("escape,f1,q", "dismiss(None)", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Markdown(HELP)
