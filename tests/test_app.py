"""Textual pilot tests of the app with a scripted brain (tests only), Harlequin's way: run the app with a
`message_hook`, wait for its workers, and assert on the typed messages and on what is on screen.

Covers the first session's failures (issue 9): the chat follows new content unless the person scrolled up,
approval cards take focus and are visible, the chat scrolls by keyboard, Enter never opens a card's JSON,
History opens every conversation, a restart resumes the last one, messages typed during a turn are queued,
ctrl+q quits at once, the train card shows the job's real state, the audit view explains each finding, the
log pane hides library noise, forms keep Submit on screen and do not select a field's text on Tab.
Snapshot tests (SVG, pytest-textual-snapshot) are in test_app_snapshots.py; the whole first session with real
tools is in test_first_session.py.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from pydantic import BaseModel, Field

from assistant.app import messages as am
from tests.scripted_brain import HeldReply, ScriptedBrain
from tools.registry import ToolInput, extra_tools, tool

SIZE = (140, 45)


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch):
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda _self: None)


def make_app(script=(), delay: float = 0.0, **kw):
    from assistant.app import create_app

    return create_app(brain=ScriptedBrain(script, delay=delay), **kw)


async def settle(pilot, app, timeout: float = 60.0) -> None:
    """Wait until no worker runs (including the ones their messages start) and the messages are handled."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        await pilot.pause()
        running = [w for w in app.workers if not w.is_finished]
        if not running:
            return
        assert loop.time() < end, f"workers still running: {running}"
        await asyncio.wait_for(app.workers.wait_for_complete(running), max(0.1, end - loop.time()))


async def message_of(pilot, seen: list, cls, count: int = 1, timeout: float = 60.0):
    """The `count`-th message of type `cls` the app handled (waits for it)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = [m for m in seen if isinstance(m, cls)]
        if len(found) >= count:
            return found[count - 1]
        agent_messages = [m for m in seen if isinstance(m, am.AgentMessage)]
        assert loop.time() < end, f"no {cls.__name__} #{count}; saw {agent_messages}"
        await pilot.pause(0.02)


async def say(pilot, app, text: str) -> None:
    app.query_one("#prompt").value = text
    await pilot.press("enter")


async def decide(pilot, seen: list, key: str, count: int = 1, timeout: float = 60.0):
    """Wait for the `count`-th approval card, then press y, e or n on it."""
    request = await message_of(pilot, seen, am.ApprovalNeeded, count=count, timeout=timeout)
    await pilot.pause()
    await pilot.press(key)
    return request


async def open_view(pilot, app, seen: list, command: str, loaded_cls):
    """Type a view's slash command and wait until its worker delivered `loaded_cls`."""
    await settle(pilot, app)
    await say(pilot, app, command)
    loaded = await message_of(pilot, seen, loaded_cls)
    await pilot.pause()
    return loaded


def notified(seen: list, text: str) -> bool:
    """Whether the app showed a notification containing `text` (Textual posts each as a Notify message)."""
    from textual.notifications import Notify

    return any(isinstance(m, Notify) and text in m.notification.message for m in seen)


def visible_in_chat(app, widget) -> bool:
    region = widget.region
    return bool(region.area) and app.query_one("#chat").region.contains_region(region)


class JobInput(ToolInput):
    steps: int = Field(3, ge=1, le=100, description="steps to fake")


class JobOutput(BaseModel):
    job_id: str
    status: str
    metrics_path: str


@pytest.fixture
def fake_train():
    """A cpu_job tool that writes a real Job row, a metrics file and a log the runs screen can tail."""

    @tool("test_fake_train", "Start a fake training job (test only).", cost="cpu_job")
    def fake(args: JobInput) -> JobOutput:
        from runtime import store
        from runtime.settings import get_settings

        run = get_settings().data_dir / "runs" / "fake"
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 2.5}) + "\n")
        (run / "train.log").write_text(
            "step 1 loss 2.5\n/x/site-packages/trl/trainer.py:12: UserWarning: padding_free is deprecated\n"
            "  warnings.warn(\n[ftpilot] job started\n")
        job = store.add(store.Job(kind="train_sft", method="lora", status="running", total_steps=args.steps,
                                  model="default", dataset="train.jsonl", run_dir=str(run),
                                  metrics_path=str(run / "metrics.jsonl"), log_path=str(run / "train.log")))
        return JobOutput(job_id=job.id, status="running", metrics_path=str(run / "metrics.jsonl"))

    with extra_tools(fake):
        yield "test_fake_train"


def set_job(job_id: str, **fields) -> None:
    from runtime import store

    with store.session() as s:
        job = s.get(store.Job, job_id)
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(job)


LONG = " ".join(f"line{i}\n\n" for i in range(60))  # a reply taller than the chat


# --- chat, streaming, approval ---------------------------------------------------------------------------

async def test_reply_streams_as_coalescing_messages_and_brain_shows():
    from assistant.app.widgets import ChatMessage

    seen: list = []
    reply = "Hello! I can help you fine-tune. " * 5
    app = make_app([reply.strip()])
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        assert "scripted" in str(app.query_one("#status").render())
        await pilot.click("#prompt")
        await pilot.press(*"hi there", "enter")
        await settle(pilot, app)
        replied = await message_of(pilot, seen, am.Replied)
        assert replied.event.content == reply.strip()
        streamed = [m for m in seen if isinstance(m, am.Streamed)]
        assert streamed and streamed[-1].text == reply.strip()  # each carries the whole text so far
        assert am.Streamed("a").can_replace(am.Streamed("ab")) and not am.Streamed("a").can_replace(replied)
        msgs = app.query(ChatMessage)
        assert [m.role for m in msgs] == ["user", "assistant"] and msgs[1].content == reply.strip()
        assert app.query_one("#prompt").value == ""


async def test_costly_call_waits_on_a_focused_visible_card_and_the_train_card_tells_the_truth(fake_train):
    from assistant.app.widgets import ApprovalCard, ToolCard

    seen: list = []
    app = make_app([LONG, (fake_train, {"steps": 4}), "Started the run.", "Your run finished: loss 2.5."])
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "tell me a long story")
        await settle(pilot, app)
        await say(pilot, app, "train it")
        request = await message_of(pilot, seen, am.ApprovalNeeded)
        await pilot.pause()
        card = app.query_one(ApprovalCard)
        assert request.pending.name == fake_train and request.pending.arguments == {"steps": 4}
        assert app.focused is card and visible_in_chat(app, card)  # below a long reply, still in view
        assert not notified(seen, "New messages below")  # it followed
        await pilot.press("y")
        finished = await message_of(pilot, seen, am.ToolFinished)
        await settle(pilot, app)
        job_id = finished.event.result["output"]["job_id"]
        tc = app.query_one(ToolCard)
        title = str(tc.query_one(".title").render())
        assert f"job {job_id} running" in title and "✓" not in title  # not "done" while it runs
        assert app.agent.watched_jobs == {job_id}
        set_job(job_id, status="succeeded", step=4)
        ended = await message_of(pilot, seen, am.JobEnded)
        assert (ended.event.job_id, ended.event.status) == (job_id, "succeeded")
        summary = await message_of(pilot, seen, am.Replied, count=3)
        assert summary.event.content == "Your run finished: loss 2.5."
        await settle(pilot, app)
        assert f"job {job_id} succeeded" in str(tc.query_one(".title").render())
        assert app.agent.project.runs[0]["status"] == "succeeded"


async def test_reject_leaves_prompt_usable(fake_train):
    seen: list = []
    app = make_app([(fake_train, {"steps": 2}), "ok"])
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "train")
        await decide(pilot, seen, "n")
        finished = await message_of(pilot, seen, am.ToolFinished)
        await settle(pilot, app)
        assert finished.event.result["error"]["code"] == "rejected_by_person"
        assert app.focused is app.query_one("#prompt")


async def test_unrequested_call_after_tool_output_waits_and_says_why(workspace):
    """The person asked about hardware; the brain then proposes writing files: a card says why it waits."""
    from assistant.app.widgets import ApprovalCard

    seen: list = []
    app = make_app([("probe_hardware", {}), ("create_sample_dataset", {"out_dir": "injected"}), "ok"])
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "what hardware does this machine have?")
        request = await message_of(pilot, seen, am.ApprovalNeeded)
        await pilot.pause()
        assert request.pending.name == "create_sample_dataset" and not request.pending.requested
        assert "did not ask" in str(app.query_one(ApprovalCard).query_one(".why").render())
        await pilot.press("n")
        await settle(pilot, app)
        assert not (workspace / "injected").exists()


async def test_chat_follows_new_content_unless_scrolled_up_and_scrolls_by_keyboard():
    seen: list = []
    second = HeldReply(LONG)
    app = make_app([LONG, second], delay=0.02)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        chat = app.query_one("#chat")
        await say(pilot, app, "first")
        await settle(pilot, app)
        await pilot.pause(0.2)
        assert chat.max_scroll_y > 0 and chat.scroll_y == chat.max_scroll_y  # followed the reply
        await say(pilot, app, "second")
        await message_of(pilot, seen, am.Streamed, count=2)
        assert app.screen.active_bindings["pageup"].binding.show  # the footer says PgUp/PgDn scroll the chat
        await pilot.press("pageup", "pageup")  # the prompt has focus: PgUp scrolls the chat
        await pilot.pause(0.2)
        held = chat.scroll_y
        assert held < chat.max_scroll_y
        second.release.set()  # the rest of the reply arrives while the person reads further up
        await settle(pilot, app)
        await pilot.pause(0.2)
        assert chat.scroll_y == held < chat.max_scroll_y  # new content did not pull the person down
        assert notified(seen, "New messages below")  # but they are told
        await pilot.press("pagedown", "pagedown", "pagedown", "pagedown", "pagedown")
        await pilot.pause(0.2)
        assert chat.scroll_y == chat.max_scroll_y


async def test_enter_never_opens_a_cards_json():
    from textual.widgets import Collapsible

    app = make_app([("probe_hardware", {}), "You have a CPU."])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "what hardware do I have")
        await settle(pilot, app)
        assert app.query("CollapsibleTitle") and not any(t.can_focus for t in app.query("CollapsibleTitle"))
        for _ in range(4):
            await pilot.press("tab")
            assert type(app.focused).__name__ != "CollapsibleTitle"
            await pilot.press("enter")
        assert all(c.collapsed for c in app.query(Collapsible))


async def test_messages_typed_during_a_turn_are_queued():
    from assistant.app.widgets import ChatMessage

    first_answer = " ".join(f"w{i}" for i in range(60))  # 3 s at 0.05 s a word
    app = make_app([first_answer, "second answer"], delay=0.05)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "first")
        await pilot.pause(0.1)
        assert app.busy
        await say(pilot, app, "second")
        assert app.query_one("#prompt").value == ""  # taken, not left in the box
        assert "1 message(s) queued" in str(app.query_one("#status").render())
        await settle(pilot, app)
        assert [(m.role, m.content) for m in app.query(ChatMessage)] == [
            ("user", "first"), ("assistant", first_answer),
            ("user", "second"), ("assistant", "second answer")]


async def test_ctrl_q_quits_at_once_and_says_jobs_keep_running(fake_train):
    seen: list = []
    app = make_app([(fake_train, {"steps": 3}), "Started.", "word " * 400], delay=0.05)
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "train")
        await decide(pilot, seen, "y")
        await message_of(pilot, seen, am.Replied)
        await settle(pilot, app)
        await say(pilot, app, "tell me everything")  # a slow turn is streaming
        await message_of(pilot, seen, am.Streamed, count=3)
        t = time.perf_counter()
        await pilot.press("ctrl+q")
    assert time.perf_counter() - t < 3.0
    (job_id,) = app.agent.watched_jobs
    assert job_id in app.exit_note and "keep running" in app.exit_note


# --- conversations ----------------------------------------------------------------------------------------

async def test_history_opens_every_conversation():
    """Empty and full conversations, one after another (the welcome text once crashed with DuplicateIds)."""
    from assistant.agent import Agent
    from assistant.app.screens import HistoryScreen
    from assistant.app.widgets import ChatMessage

    Agent(ScriptedBrain([]))  # an empty one
    full = Agent(ScriptedBrain(["answer A"]))
    full.send("question A")
    Agent(ScriptedBrain([]))
    app = make_app(resume_last=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        for _ in range(4):
            await pilot.press("ctrl+o")
            await pilot.pause()
            assert isinstance(app.screen, HistoryScreen)
            await settle(pilot, app)
            options = app.screen.query_one("#convs")
            assert options.option_count == 4
            for conv_index in range(options.option_count):
                if conv_index:
                    await pilot.press("ctrl+o")
                    await settle(pilot, app)
                app.screen.query_one("#convs").highlighted = conv_index
                await pilot.press("enter")
                await settle(pilot, app)
                assert not isinstance(app.screen, HistoryScreen)
                texts = [m.content for m in app.query(ChatMessage)]
                if app.conversation_id == full.conversation_id:
                    assert texts == ["question A", "answer A"]
                else:
                    assert texts == [] and app.query(".welcome")
            break


async def test_restart_resumes_the_last_conversation(workspace):
    from assistant.app.widgets import ChatMessage

    app = make_app(["first answer"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "remember this conversation")
        await settle(pilot, app)
        conv = app.conversation_id
    again = make_app([])
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot, again)
        assert again.conversation_id == conv
        assert [m.content for m in again.query(ChatMessage)] == ["remember this conversation", "first answer"]
        await pilot.press("ctrl+n")
        await settle(pilot, again)
        assert again.conversation_id != conv and not again.query(ChatMessage)


# --- forms ------------------------------------------------------------------------------------------------

async def test_plan_step_form_runs_the_tool(workspace):
    """The product works without the brain: a form opens, validates, and the tool runs as submitted."""
    from assistant.app.forms import ToolFormScreen
    from assistant.app.widgets import ToolCard

    app = make_app(["Wrote the sample data."])
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        app.start_tool("create_sample_dataset")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, ToolFormScreen)
        form.query_one("#field-out_dir").value = "mydata"
        form.query_one("#field-train_rows").value = "0"  # invalid: errors shown, form stays
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ToolFormScreen) and "train_rows" in str(form.query_one("#errors").render())
        form.query_one("#field-train_rows").value = "12"
        await pilot.press("ctrl+s")
        await settle(pilot, app)
        assert app.query_one(ToolCard).result["output"]["rows"]["train"] == 12
        assert (workspace / "mydata" / "train.jsonl").exists()
        assert app.agent.project.latest_dataset("train").endswith("mydata/train.jsonl")
        assert "audit" in str(app.query_one("#next").render()).lower()


@pytest.mark.parametrize("size", [(140, 45), (100, 30)])
async def test_form_keeps_submit_visible_shows_ctrl_s_and_tab_does_not_select(size):
    from textual.widgets import Button, Footer, Input

    app = make_app()
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        app.start_tool("train_sft")  # the longest form
        await pilot.pause()
        form = app.screen
        submit = form.query_one("#submit", Button)
        assert submit.region.area and app.screen.region.contains_region(submit.region)
        assert form.query(Footer) and form.active_bindings["ctrl+s"].binding.show  # the footer shows ^s Run
        form.query_one("#field-lora_r", Input).focus()  # epochs and max_length are empty now (sized from the data)
        await pilot.pause()
        await pilot.press("tab")
        await pilot.pause()
        focused = app.focused
        assert focused.id == "field-lora_alpha" and focused.value == "32" and focused.selection.is_empty
        before = focused.value
        await pilot.press("9")
        assert focused.value != "9" and focused.value.startswith(before[:1])  # typing adds, never replaces


# --- runs, audit, evaluation views -------------------------------------------------------------------------

async def test_runs_screen_follows_loss_with_eta_and_hides_library_noise(fake_train):
    from runtime import store
    from tools import call_tool

    from assistant.app.screens import JobsRead, MetricsRead, RunsScreen

    res = call_tool(fake_train, {"steps": 5})
    job_id = res.output["job_id"]
    seen: list = []
    app = make_app()
    async with app.run_test(size=(100, 30), message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await pilot.press("ctrl+r")
        await message_of(pilot, seen, JobsRead)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        with open(res.output["metrics_path"], "a") as f:
            for i in range(2, 5):
                f.write(json.dumps({"step": i, "loss": 2.5 / i, "s_per_step": 1.0}) + "\n")
        set_job(job_id, step=4)
        n = len([m for m in seen if isinstance(m, MetricsRead)])
        await message_of(pilot, seen, MetricsRead, count=n + 2)
        await pilot.pause(0.6)
        row = screen.query_one("#jobs").get_row(job_id)
        assert "0.6250" in str(row) and "0m01s" in str(row)  # loss and ETA (1 step left at 1 s/step)
        table = screen.query_one("#jobs")
        assert [c.label.plain for c in table.columns.values()][:5] == ["job", "status", "step", "loss", "ETA"]
        assert all(table.columns[k].content_width >= len(v) for k, v in (("eta", "0m01s"), ("loss", "0.6250")))
        log = screen.query_one("#log")
        text = "\n".join(line.text for line in log.lines)
        assert "step 1 loss" in text and "[ftpilot] job started" in text
        assert "UserWarning" not in text and "warnings.warn" not in text and "hidden" in log.border_title
        await pilot.press("l")
        await pilot.pause()
        assert "UserWarning" in "\n".join(line.text for line in log.lines)
        assert screen.renders >= 1
        with store.session() as s:
            job = s.get(store.Job, job_id)
            job.status = "succeeded"
            s.add(job)
        await pilot.pause(1.0)
        assert "succeeded" in str(screen.query_one("#jobs").get_row(job_id))
        await pilot.press("escape")
        assert not isinstance(app.screen, RunsScreen)


async def test_audit_view_explains_each_finding(workspace):
    """A real audit of data with duplicates and eval overlap: severity, rows, examples and the explanation."""
    from tools import call_tool

    from assistant.app.screens import AuditScreen, Loaded

    sample = call_tool("create_sample_dataset", {"out_dir": "s", "train_rows": 40, "eval_rows": 10})
    train = workspace / "s" / "train.jsonl"
    rows = train.read_text().splitlines()
    train.write_text("\n".join(rows + rows[:3] + sample_eval_rows(workspace)[:2]) + "\n")
    audited = call_tool("audit_dataset", {"path": "s/train.jsonl", "eval_path": "s/eval.jsonl"})
    assert audited.ok, audited.error
    seen: list = []
    app = make_app()
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        loaded = await open_view(pilot, app, seen, "/audits", Loaded)
        screen = app.screen
        assert isinstance(screen, AuditScreen)
        checks = [r["check"] for r in loaded.rows]
        assert "exact_duplicate" in checks and "contamination" in checks
        i = checks.index("exact_duplicate")
        assert loaded.rows[i]["severity"] in ("warning", "error") and loaded.rows[i]["rows"] == 3
        detail = loaded.details[i]
        assert "Rows (0-based): " in detail and "Examples:" in detail and "- row 4" in detail
        assert "Recommendations" in detail and "drop_duplicates" in detail
        assert "(43 rows)" in str(screen.query_one("#heading").render()) or "rows)" in str(
            screen.query_one("#heading").render())
        assert sample.ok


def sample_eval_rows(workspace) -> list[str]:
    return (workspace / "s" / "eval.jsonl").read_text().splitlines()


async def test_evaluation_view_reads_the_typed_results():
    from runtime import store

    from assistant.app.screens import EvaluationScreen, Loaded

    store.add(store.Evaluation(job_id="abc", eval_path="eval.jsonl", results={"kind": "evaluation", "results": [
        {"name": "base", "metrics": {"accuracy": {"value": 0.45, "ci95": [0.33, 0.58], "n": 60}}, "tokens_per_s": 11.0},
        {"name": "tuned", "metrics": {"accuracy": {"value": 0.9, "ci95": [0.82, 0.97], "n": 60}}}],
        "comparisons": [{"candidate": "tuned", "baseline": "base",
                         "metrics": {"accuracy": {"delta": 0.45, "ci95": [0.3, 0.6], "n": 60, "excludes_zero": True}}}],
        "notes": ["a note"]}))
    seen: list = []
    app = make_app()
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        loaded = await open_view(pilot, app, seen, "/evals", Loaded)
        assert isinstance(app.screen, EvaluationScreen)
        table = app.screen.query_one("#table")
        assert table.row_count == 3
        rows = [str(table.get_row(str(i))) for i in range(3)]
        assert "0.9" in rows[1] and "[0.82, 0.97]" in rows[1]
        assert "tuned vs base" in rows[2] and "Δ accuracy" in rows[2] and "[0.3, 0.6]" in rows[2]
        assert "excludes 0" in loaded.details[2] and "note: a note" in loaded.heading


# --- tool progress, brain state, theme, failures, help -------------------------------------------------------

class SlowInput(ToolInput):
    steps: int = Field(3, ge=1, le=10)


class SlowOutput(BaseModel):
    done: int


@pytest.fixture
def chatty_tool():
    @tool("test_chatty", "A slow tool that reports progress on stderr (test only).", cost="instant")
    def chatty(args: SlowInput) -> SlowOutput:
        import sys

        for i in range(1, args.steps + 1):
            print(f"evaluating base: {i}/{args.steps}", file=sys.stderr, flush=True)
            time.sleep(0.15)
        print("lib.py:3: UserWarning: some library is deprecated", file=sys.stderr, flush=True)
        time.sleep(0.15)
        return SlowOutput(done=args.steps)

    with extra_tools(chatty):
        yield "test_chatty"


async def test_a_running_tools_progress_shows_on_its_card(chatty_tool):
    seen: list = []
    app = make_app([(chatty_tool, {"steps": 3}), "done"])
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "go")
        await settle(pilot, app)
        lines = [m.line for m in seen if isinstance(m, am.ToolProgress)]
        assert lines and lines[-1] == "evaluating base: 3/3"
        assert not any("deprecated" in ln for ln in lines)


async def test_status_line_shows_the_brains_own_state():
    class Starting(ScriptedBrain):
        state = "starting vLLM (the embedded model answers meanwhile)"

    from assistant.app import create_app

    brain = Starting([])
    app = create_app(brain=brain)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.pause(1.2)
        assert "starting vLLM" in str(app.query_one("#status").render())
        brain.state = "ready"
        await pilot.pause(1.2)
        assert "starting vLLM" not in str(app.query_one("#status").render())


async def test_theme_is_a_setting_that_persists():
    from runtime.settings import config_file, get_settings

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        app.theme = "nord"
        await pilot.pause()
    assert 'theme = "nord"' in config_file().read_text() and get_settings().theme == "nord"
    again = make_app()
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot, again)
        assert again.theme == "nord"


async def test_brain_failure_is_a_notification_and_plan_still_works():
    class Broken(ScriptedBrain):
        def load(self):
            from assistant.brains import BrainUnavailable

            raise BrainUnavailable("no server at http://nowhere")

    from assistant.app import create_app

    brain = Broken([])
    brain.ready = False
    app = create_app(brain=brain)
    seen: list = []
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        assert "unavailable" in str(app.query_one("#status").render())
        await say(pilot, app, "hello")
        await pilot.pause()
        assert app.query_one("#prompt").value == "hello"  # nothing lost
        assert notified(seen, "not ready")


async def test_help_lists_every_key():
    from assistant.app.screens import HELP, HelpScreen

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        for key in ("ctrl+s", "pgup", "ctrl+q", "ctrl+o", "y / e / n"):
            assert key in HELP
        await pilot.press("escape")


async def test_playground_answers_side_by_side(tiny_model_dir, tmp_path):
    """A run's adapter and its base answer the same prompt (tiny model, real PEFT adapter, real engine)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from assistant.app.playground import Answers, PlaygroundScreen, RunFound
    from runtime import store

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    job = store.add(store.Job(kind="train_sft", method="lora", status="succeeded", model=str(tiny_model_dir),
                              result={"adapter_path": str(adapter)}))
    seen: list = []
    app = make_app()
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        await say(pilot, app, "/playground")
        found = await message_of(pilot, seen, RunFound)
        assert found.run.job_id == job.id
        screen = app.screen
        assert isinstance(screen, PlaygroundScreen)
        screen.max_new_tokens = 8
        screen.query_one("#pg-prompt").value = "Hello"
        await pilot.press("enter")
        answers = await message_of(pilot, seen, Answers, timeout=120)
        assert answers.base and answers.tuned
        assert answers.base != answers.tuned  # the adapter changes the answer (random LoRA on a random model)


@pytest.mark.real
async def test_app_with_embedded_brain_audits_by_chat(bundled_model_dir, workspace):
    """The default product path: the embedded brain loads in a worker (visible state), a plain request
    becomes a valid audit_dataset call, approved inline, run on the project's data."""
    from assistant.app import create_app
    from tools import call_tool

    res = call_tool("create_sample_dataset", {"out_dir": "samples"})
    assert res.ok
    seen: list = []
    app = create_app(brain_kind="embedded")
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app, timeout=240)
        assert app.brain_state == "ready" and "embedded" in str(app.query_one("#status").render())
        await say(pilot, app, f"audit {res.output['train_path']}")
        request = await message_of(pilot, seen, am.ApprovalNeeded, timeout=120)
        assert request.pending.name == "audit_dataset" and request.pending.arguments["path"] == res.output[
            "train_path"]
        await pilot.pause()
        await pilot.press("y")
        finished = await message_of(pilot, seen, am.ToolFinished, timeout=180)
        await settle(pilot, app, timeout=120)
        assert finished.event.result["output"]["rows"] == 240
        assert app.agent.project.done.get("audit")


QUIT_DURING_A_TOOL = r"""
import sys, time
from tests.scripted_brain import ScriptedBrain
from tests.test_app import make_app
from tools.registry import ToolInput, BaseModel, extra_tools, tool
from assistant.cli.chat_cmd import run_app

class In(ToolInput):
    pass

class Out(BaseModel):
    ok: bool

@tool("test_endless", "A tool that runs long in the app's thread (test only).", cost="instant")
def endless(args: In) -> Out:
    time.sleep(120)
    return Out(ok=True)

async def pilot(p):
    app = p.app
    while app.agent is None:
        await p.pause(0.05)
    app.query_one("#prompt").value = "go"
    await p.press("enter")
    while app.running_card is None:
        await p.pause(0.05)
    print("tool running", flush=True)
    await p.press("ctrl+q")

with extra_tools(endless):
    app = make_app([("test_endless", {})])
    t = time.perf_counter()
    run_app(app, headless=True, size=(100, 30), auto_pilot=pilot)
    print(app.exit_note, flush=True)
"""


def test_quitting_while_a_tool_runs_in_the_app_does_not_wait_for_it(workspace, tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "quit.py"
    script.write_text(QUIT_DURING_A_TOOL)
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    t = time.perf_counter()
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100, cwd=root,
                         env={**os.environ, "PYTHONPATH": root})
    took = time.perf_counter() - t
    assert "tool running" in out.stdout, out.stderr[-2000:]
    assert "test_endless was stopped" in out.stderr  # Textual prints the exit message
    assert took < 60, took  # the tool sleeps 120 s; the process left without it
