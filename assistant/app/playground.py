"""Playground: one prompt sent to a run's model and to its base model, answers side by side.

Generation goes through the engines layer (`runtime.engines`): transformers in-process on the CPU with the
run's LoRA adapter switched per request, vLLM with the adapter on a GPU. There is no tool for free generation,
so this screen is the one place the app calls the engines directly (in a worker, never on the UI thread).
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Markdown, Static


def engine_spec(model_path: str) -> str:
    import importlib.util
    import shutil

    if importlib.util.find_spec("vllm") is not None and shutil.which("nvidia-smi"):
        return f"vllm:{model_path}"
    return f"transformers:{model_path}"


def latest_adapter_run(job_id: str | None = None) -> dict | None:
    """The run to try: the given job, else the newest succeeded job with an adapter."""
    from sqlmodel import select

    from runtime import store

    with store.session() as s:
        if job_id:
            jobs = [s.get(store.Job, job_id)]
        else:
            jobs = s.exec(select(store.Job).where(store.Job.status == "succeeded")
                          .order_by(store.Job.created_at.desc()).limit(50)).all()
    for j in jobs:
        if j is None:
            continue
        adapter = (j.result or {}).get("adapter_path")
        model_dir = (j.result or {}).get("model_dir")
        if adapter or model_dir:
            return {"job_id": j.id, "model": j.model or "default", "adapter": adapter, "model_dir": model_dir}
    return None


class PlaygroundScreen(Screen):
    DEFAULT_CSS = """
    PlaygroundScreen #panes { height: 1fr; }
    PlaygroundScreen .pane { width: 1fr; border: round $primary; padding: 0 1; }
    PlaygroundScreen #info { height: auto; color: $text-muted; padding: 0 1; }
    """
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, job_id: str | None = None, max_new_tokens: int = 96):
        super().__init__()
        self.job_id = job_id
        self.run: dict | None = None
        self.max_new_tokens = max_new_tokens
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("finding a run…", id="info")
        with Horizontal(id="panes"):
            with VerticalScroll(classes="pane", id="base-pane"):
                yield Markdown("", id="base")
            with VerticalScroll(classes="pane", id="tuned-pane"):
                yield Markdown("", id="tuned")
        yield Input(placeholder="A prompt for both models; Enter sends", id="pg-prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Playground"
        self.query_one("#base-pane").border_title = "base model"
        self.query_one("#tuned-pane").border_title = "fine-tuned"
        self.query_one(Input).focus()
        self.find_run()

    @work(thread=True)
    def find_run(self) -> None:
        run = latest_adapter_run(self.job_id)
        self.app.call_from_thread(self._show_run, run)

    def _show_run(self, run: dict | None) -> None:
        self.run = run
        info = self.query_one("#info", Static)
        if run is None:
            info.update("No finished run with an adapter yet: train one (/train), then come back.")
            return
        info.update(f"run {run['job_id']} · base {run['model']} · "
                    f"{'adapter ' + run['adapter'] if run['adapter'] else 'weights ' + str(run['model_dir'])}")
        self.query_one("#tuned-pane").border_title = f"fine-tuned ({run['job_id']})"

    @on(Input.Submitted, "#pg-prompt")
    def _send(self, event: Input.Submitted) -> None:
        if self.run is None or self.busy or not event.value.strip():
            if self.run is None:
                self.notify("No run to compare yet.", severity="warning")
            return
        self.busy = True
        for wid in ("#base", "#tuned"):
            self.query_one(wid, Markdown).update("*generating…*")
        self.generate(event.value.strip())

    @work(thread=True, exclusive=True)
    def generate(self, prompt: str) -> None:
        try:
            from runtime.engines import ChatRequest, Sampling, get_engine
            from runtime.models import resolve_model

            msgs = [{"role": "user", "content": prompt}]
            base_path = resolve_model(self.run["model"]).path
            t = time.perf_counter()
            if self.run["adapter"]:
                eng = get_engine(engine_spec(base_path))
                outs = eng.generate([ChatRequest(msgs), ChatRequest(msgs, adapter=self.run["adapter"])],
                                    Sampling(max_new_tokens=self.max_new_tokens))
            else:
                base = get_engine(engine_spec(base_path)).generate([ChatRequest(msgs)],
                                                                  Sampling(max_new_tokens=self.max_new_tokens))
                tuned = get_engine(engine_spec(self.run["model_dir"])).generate(
                    [ChatRequest(msgs)], Sampling(max_new_tokens=self.max_new_tokens))
                outs = base + tuned
            took = time.perf_counter() - t
            self.app.call_from_thread(self._show, outs[0].text, outs[1].text, took)
        except Exception as e:  # noqa: BLE001 - a notification, the screen stays usable
            self.app.call_from_thread(self.notify, f"Playground failed: {e}", severity="error")
            self.app.call_from_thread(self._show, "", "", 0.0)

    def _show(self, base: str, tuned: str, took: float) -> None:
        self.busy = False
        self.query_one("#base", Markdown).update(base)
        self.query_one("#tuned", Markdown).update(tuned)
        if took:
            self.notify(f"Both answers in {took:.1f}s")
