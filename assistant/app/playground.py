"""Playground: one prompt sent to a run's model and to its base model, answers side by side.

Generation goes through the engines layer (`runtime.engines`): transformers in-process on the CPU with the
run's LoRA adapter switched per request, or the managed vLLM server (`ftpilot serve start`) with the adapter
loaded into it, when it is ready and serves the run's base model. There is no tool for free generation,
so this screen is the one place the app calls the engines directly (in a worker, never on the UI thread).
"""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Markdown, Static


def engine_spec(model_path: str) -> str:
    """The managed vLLM server when it is ready and serves this model (adapters are loaded into it per request);
    transformers in-process otherwise, so that one prompt never waits a minute for a server to start."""
    import os

    from runtime import serving

    st = serving.status()
    if st.state == "ready" and st.model_path and os.path.realpath(st.model_path) == os.path.realpath(model_path):
        return f"vllm:{model_path}"
    return f"transformers:{model_path}"


class RunFound(Message):
    def __init__(self, run):
        super().__init__()
        self.run = run


class Answers(Message):
    def __init__(self, base: str, tuned: str, took: float):
        super().__init__()
        self.base, self.tuned, self.took = base, tuned, took


class PlaygroundScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, job_id: str | None = None, max_new_tokens: int = 96):
        super().__init__()
        self.job_id = job_id
        self.run = None  # runtime.queries.AdapterRun
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

    @work(thread=True, exit_on_error=False)
    def find_run(self) -> None:
        from runtime import queries

        self.post_message(RunFound(queries.adapter_run(self.job_id)))

    @on(RunFound)
    def _show_run(self, msg: RunFound) -> None:
        self.run = run = msg.run
        info = self.query_one("#info", Static)
        if run is None:
            info.update("No finished run with an adapter yet: train one (/train), then come back.")
            return
        info.update(f"run {run.job_id} · base {run.model} · "
                    f"{'adapter ' + run.adapter if run.adapter else 'weights ' + str(run.model_dir)}")
        self.query_one("#tuned-pane").border_title = f"fine-tuned ({run.job_id})"

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

    @work(thread=True, exclusive=True, exit_on_error=False)
    def generate(self, prompt: str) -> None:
        try:
            from runtime.engines import ChatRequest, Sampling, get_engine
            from runtime.models import resolve_model

            msgs = [{"role": "user", "content": prompt}]
            base_path = resolve_model(self.run.model).path
            t = time.perf_counter()
            if self.run.adapter:
                eng = get_engine(engine_spec(base_path))
                outs = eng.generate([ChatRequest(msgs), ChatRequest(msgs, adapter=self.run.adapter)],
                                    Sampling(max_new_tokens=self.max_new_tokens))
            else:
                base = get_engine(engine_spec(base_path)).generate([ChatRequest(msgs)],
                                                                  Sampling(max_new_tokens=self.max_new_tokens))
                tuned = get_engine(engine_spec(self.run.model_dir)).generate(
                    [ChatRequest(msgs)], Sampling(max_new_tokens=self.max_new_tokens))
                outs = base + tuned
            self.post_message(Answers(outs[0].text, outs[1].text, time.perf_counter() - t))
        except Exception as e:  # noqa: BLE001 - a notification, the screen stays usable
            self.app.call_from_thread(self.notify, f"Playground failed: {e}", severity="error")
            self.post_message(Answers("", "", 0.0))

    @on(Answers)
    def _show(self, msg: Answers) -> None:
        self.busy = False
        self.query_one("#base", Markdown).update(msg.base)
        self.query_one("#tuned", Markdown).update(msg.tuned)
        if msg.took:
            self.notify(f"Both answers in {msg.took:.1f}s")
