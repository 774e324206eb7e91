"""Textual pilot tests of the main flows, with a scripted brain (tests only): send a message and see it
stream, approve a costly tool call inline, start a step from the plan form, watch a run's loss update,
open the audit view, resume a conversation."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field

from tests.scripted_brain import ScriptedBrain
from tools.registry import ToolInput, extra_tools, tool

SIZE = (120, 40)


async def wait_until(pilot, cond, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not reached in time")


def make_app(script, **kw):
    from assistant.app import create_app

    return create_app(brain=ScriptedBrain(script), **kw)


class JobInput(ToolInput):
    steps: int = Field(3, ge=1, le=100, description="steps to fake")


class JobOutput(BaseModel):
    job_id: str
    status: str
    metrics_path: str


@pytest.fixture
def fake_train():
    """A cpu_job tool that writes a real Job row and a metrics file the runs screen can tail."""

    @tool("test_fake_train", "Start a fake training job (test only).", cost="cpu_job")
    def fake(args: JobInput) -> JobOutput:
        from runtime import store
        from runtime.settings import get_settings

        run = get_settings().data_dir / "runs" / "fake"
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.5}) + "\n")
        (run / "train.log").write_text("step 1 loss 2.5\n")
        job = store.add(store.Job(kind="train_sft", method="lora", status="running", total_steps=args.steps,
                                  model="default", dataset="train.jsonl", run_dir=str(run),
                                  metrics_path=str(run / "metrics.jsonl"), log_path=str(run / "train.log")))
        return JobOutput(job_id=job.id, status="running", metrics_path=str(run / "metrics.jsonl"))


    with extra_tools(fake):
        yield "test_fake_train"


async def test_send_message_streams_reply_and_shows_brain():
    from assistant.app.widgets import ChatMessage

    app = make_app(["Hello! I can help you fine-tune."])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready")
        assert "scripted" in str(app.query_one("#status").render())
        await pilot.click("#prompt")
        await pilot.press(*"hi there", "enter")
        await wait_until(pilot, lambda: len(app.query(ChatMessage)) == 2 and not app.busy)
        msgs = app.query(ChatMessage)
        assert msgs[0].role == "user" and msgs[0].content == "hi there"
        assert msgs[1].content == "Hello! I can help you fine-tune."
        assert app.query_one("#prompt").value == ""


async def test_tool_call_card_and_inline_approval(fake_train):
    from assistant.app.widgets import ApprovalCard, ChatMessage, ToolCard

    app = make_app([(fake_train, {"steps": 4}), "Started the run.", "Your run finished: loss 2.5."])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready")
        app.query_one("#prompt").value = "train it"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.query(ApprovalCard)) == 1)
        card = app.query_one(ApprovalCard)
        assert card.pending.name == fake_train and card.pending.arguments == {"steps": 4}
        assert app.focused is card
        await pilot.press("y")
        await wait_until(pilot, lambda: len(app.query(ToolCard)) == 1 and app.query_one(ToolCard).result is not None)
        tc = app.query(ToolCard).first()
        assert tc.has_class("ok") and tc.result["output"]["status"] == "running"
        await wait_until(pilot, lambda: not app.busy)
        assert app.agent.watched_jobs  # the job is followed
        job_id = tc.result["output"]["job_id"]
        assert app.agent.project.runs[0]["job_id"] == job_id
        # The job ends: the app notices, the agent reads run_status and the brain summarizes.
        from runtime import store

        with store.session() as s:
            job = s.get(store.Job, job_id)
            job.status = "succeeded"
            s.add(job)
        await wait_until(pilot, lambda: any(m.content == "Your run finished: loss 2.5." for m in app.query(ChatMessage)))
        assert not app.agent.watched_jobs and app.agent.project.runs[0]["status"] == "succeeded"
        assert any(c.tool_name == "run_status" for c in app.query(ToolCard))


async def test_reject_leaves_prompt_usable(fake_train):
    from assistant.app.widgets import ApprovalCard

    app = make_app([(fake_train, {"steps": 2}), "ok"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready")
        app.query_one("#prompt").value = "train"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.query(ApprovalCard)) == 1)
        await pilot.press("n")
        await wait_until(pilot, lambda: not app.busy)
        from runtime import store
        from sqlmodel import select

        with store.session() as s:
            assert s.exec(select(store.Job)).all() == []
        assert app.focused is app.query_one("#prompt")


async def test_plan_step_form_runs_the_tool(workspace):
    """The product works without the brain: a slash command opens the form, the tool runs as submitted."""
    from assistant.app.forms import ToolFormScreen
    from assistant.app.widgets import ToolCard

    app = make_app(["Wrote the sample data."])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready" and app.agent is not None)
        app.available.add("create_sample_dataset")
        app.start_tool("create_sample_dataset")
        await wait_until(pilot, lambda: isinstance(app.screen, ToolFormScreen) and app.screen.query("#field-out_dir"))
        form = app.screen
        form.query_one("#field-out_dir").value = "mydata"
        form.query_one("#field-train_rows").value = "0"  # invalid: errors shown, form stays
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ToolFormScreen) and "train_rows" in str(form.query_one("#errors").render())
        form.query_one("#field-train_rows").value = "12"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: len(app.query(ToolCard)) == 1 and app.query_one(ToolCard).result)
        await wait_until(pilot, lambda: not app.busy)
        assert (workspace / "mydata" / "train.jsonl").exists()
        assert app.agent.project.latest_dataset("train").endswith("mydata/train.jsonl")
        assert "audit" in str(app.query_one("#next").render()).lower()


async def test_runs_screen_follows_loss(fake_train):
    from runtime import store
    from tools import call_tool

    from assistant.app.screens import RunsScreen

    res = call_tool(fake_train, {"steps": 5})
    job_id = res.output["job_id"]
    app = make_app([])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.agent is not None)
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen))
        screen = app.screen
        await wait_until(pilot, lambda: screen.tails.get(job_id) and screen.tails[job_id].losses == [2.5])
        with open(res.output["metrics_path"], "a") as f:
            for i in range(2, 5):
                f.write(json.dumps({"step": i, "loss": 2.5 / i, "s_per_step": 1.0}) + "\n")
        await wait_until(pilot, lambda: screen.tails[job_id].steps == [1, 2, 3, 4])
        await wait_until(pilot, lambda: "0.6250" in str(screen.query_one("#jobs").get_row(job_id)))
        renders = screen.renders
        assert renders >= 1
        assert "step 1 loss" in "\n".join(screen.query_one("#log").lines)
        with store.session() as s:
            job = s.get(store.Job, job_id)
            job.status, job.step = "succeeded", 4
            s.add(job)
        await wait_until(pilot, lambda: "succeeded" in str(screen.query_one("#jobs").get_row(job_id)))
        await pilot.press("escape")
        assert not isinstance(app.screen, RunsScreen)


async def test_audit_view_shows_findings():
    from runtime import store

    from assistant.app.screens import AuditScreen

    ds = store.add(store.Dataset(path="data/train.jsonl", sha256="x", rows=240))
    store.add(store.Audit(dataset_id=ds.id, summary={"rows": 240, "findings": [
        {"check": "exact_duplicates", "severity": "warning", "count": 3, "examples": [{"row": 5}]},
        {"check": "label_imbalance", "severity": "info", "count": 1}]}))
    app = make_app([])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.agent is not None)
        app.query_one("#prompt").value = "/audits"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, AuditScreen) and app.screen.rows)
        table = app.screen.query_one("#table")
        assert table.row_count == 2
        assert "exact_duplicates" in str(table.get_row("0"))
        assert "240 rows" in str(app.screen.query_one("#heading").render())


async def test_history_resume_and_help(workspace):
    from assistant.app.screens import HelpScreen
    from assistant.app.widgets import ChatMessage

    app = make_app(["first answer"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready")
        app.query_one("#prompt").value = "remember this conversation"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.query(ChatMessage)) == 2 and not app.busy)
        conv = app.conversation_id
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
    app2 = make_app([], conversation_id=conv)
    async with app2.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app2.agent is not None and len(app2.query(ChatMessage)) == 2)
        assert app2.query(ChatMessage)[1].content == "first answer"


async def test_brain_failure_is_a_notification_and_plan_still_works():
    class Broken(ScriptedBrain):
        def load(self):
            from assistant.brains import BrainUnavailable

            raise BrainUnavailable("no server at http://nowhere")

    from assistant.app import create_app

    brain = Broken([])
    brain.ready = False
    app = create_app(brain=brain)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "unavailable")
        assert "unavailable" in str(app.query_one("#status").render())
        app.query_one("#prompt").value = "hello"
        await pilot.press("enter")
        await pilot.pause()
        assert app.query_one("#prompt").value == "hello"  # nothing lost
        assert any("not ready" in n.message for n in app._notifications)


# --- text snapshots at fixed terminal sizes (pytest-textual-snapshot pins pytest<9, so plain text files) -----

SNAPSHOTS = __import__("pathlib").Path(__file__).parent / "snapshots"


def screen_text(app) -> str:
    strips = app.screen._compositor.render_strips()
    return "\n".join(s.text.rstrip() for s in strips) + "\n"


async def stable_text(pilot, app) -> str:
    """The screen once it stops changing (Markdown renders in steps)."""
    prev = None
    for _ in range(40):
        await pilot.pause(0.1)
        text = screen_text(app)
        if text == prev:
            return text
        prev = text
    return prev


def check_snapshot(name: str, text: str) -> None:
    """Compare with tests/snapshots/NAME.txt; UPDATE_SNAPSHOTS=1 rewrites it."""
    import os

    path = SNAPSHOTS / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; UPDATE_SNAPSHOTS=1 to accept:\n{text}"


@pytest.mark.parametrize("size", [(100, 30), (140, 40)])
async def test_snapshot_main_screen(size):
    app = make_app([])
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.brain_state == "ready" and app.agent is not None)
        app.query_one("#prompt").cursor_blink = False
        app.available = {"audit_dataset", "train_sft", "evaluate", "export_model", "recommend_strategy"}
        app.refresh_plan()
        await wait_until(pilot, lambda: app.query("#welcome"))
        text = await stable_text(pilot, app)
        assert "Plan" in text and "Audit the data" in text and "scripted · test" in text
        check_snapshot(f"main_{size[0]}x{size[1]}", text)


async def test_snapshot_help_screen():
    app = make_app([])
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.agent is not None)
        await pilot.press("f1")
        text = await stable_text(pilot, app)
        assert "Keys" in text and "command palette" in text
        check_snapshot("help_120x40", text)


async def test_playground_answers_side_by_side(tiny_model_dir, tmp_path):
    """A run's adapter and its base answer the same prompt (tiny model, real PEFT adapter, real engine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.app.playground import PlaygroundScreen
    from runtime import store

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    job = store.add(store.Job(kind="train_sft", method="lora", status="succeeded", model=str(tiny_model_dir),
                              result={"adapter_path": str(adapter)}))
    app = make_app([])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.agent is not None)
        app.query_one("#prompt").value = "/playground"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, PlaygroundScreen) and app.screen.run is not None)
        screen = app.screen
        assert screen.run["job_id"] == job.id
        screen.max_new_tokens = 8
        screen.query_one("#pg-prompt").value = "Hello"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.busy, timeout=120)
        base, tuned = screen.query_one("#base").source, screen.query_one("#tuned").source
        assert base and tuned and base != "*generating…*"
        assert base != tuned  # the adapter changes the answer (random LoRA weights on a random model)


async def test_evaluation_view_metrics_intervals_and_comparison():
    from runtime import store

    from assistant.app.screens import EvaluationScreen

    store.add(store.Evaluation(job_id="abc", eval_path="eval.jsonl", results={"kind": "evaluation", "results": [
        {"name": "base", "metrics": {"accuracy": {"value": 0.45, "ci95": [0.33, 0.58], "n": 60}}, "tokens_per_s": 11.0},
        {"name": "tuned", "metrics": {"accuracy": {"value": 0.9, "ci95": [0.82, 0.97], "n": 60}}}],
        "comparisons": [{"candidate": "tuned", "baseline": "base",
                         "metrics": {"accuracy": {"delta": 0.45, "ci95": [0.3, 0.6], "n": 60}}}]}))
    app = make_app([])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.agent is not None)
        app.query_one("#prompt").value = "/evals"
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, EvaluationScreen) and app.screen.rows)
        table = app.screen.query_one("#table")
        assert table.row_count == 3
        rows = [str(table.get_row(str(i))) for i in range(3)]
        assert "0.9" in rows[1] and "[0.82, 0.97]" in rows[1]
        assert "tuned vs base" in rows[2] and "Δ accuracy" in rows[2] and "[0.3, 0.6]" in rows[2]


@pytest.mark.real
async def test_app_with_embedded_brain_audits_by_chat(bundled_model_dir, workspace):
    """The default product path: the embedded brain loads in a worker (visible state), a plain request
    becomes a valid audit_dataset call, approved inline, run on the project's data."""
    from assistant.app import create_app
    from assistant.app.widgets import ApprovalCard, ToolCard
    from tools import call_tool

    res = call_tool("create_sample_dataset", {"out_dir": "samples"})
    assert res.ok
    app = create_app(brain_kind="embedded")
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.brain_state in ("loading", "ready"), timeout=30)
        await wait_until(pilot, lambda: app.brain_state == "ready", timeout=180)
        assert "embedded" in str(app.query_one("#status").render())
        app.query_one("#prompt").value = f"audit {res.output['train_path']}"
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.query(ApprovalCard)) == 1, timeout=120)
        card = app.query_one(ApprovalCard)
        assert card.pending.name == "audit_dataset" and card.pending.arguments["path"] == res.output["train_path"]
        await pilot.press("y")
        await wait_until(pilot, lambda: app.query(ToolCard) and app.query(ToolCard).first().result, timeout=180)
        await wait_until(pilot, lambda: not app.busy, timeout=120)
        assert app.query(ToolCard).first().result["output"]["rows"] == 240
        assert app.agent.project.done.get("audit")


async def test_theme_choice_persists():
    app = make_app([])
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.agent is not None and getattr(app, "_prefs_loaded", False))
        app.theme = "nord"
        await pilot.pause()
    app2 = make_app([])
    async with app2.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: getattr(app2, "_prefs_loaded", False))
        assert app2.theme == "nord"
