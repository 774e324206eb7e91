"""The whole first session in the app at 140x45, with real tools and real jobs (issue 9's "done when"): a
person with a scripted brain (tests only) makes sample data, audits it and reads the findings view, decides,
trains (the approval card focused and visible), watches the runs screen update, evaluates the run against the
base model and a few-shot prompt, exports, quits, restarts into the same conversation, and opens an older one
from History. A tiny random Llama copied into the workspace keeps the jobs fast; the point is the app."""

from __future__ import annotations

import shutil
import time

import pytest

from assistant.app import messages as am
from tests.scripted_brain import ScriptedBrain
from tests.test_app import message_of, say, settle, visible_in_chat

SIZE = (140, 45)


def step(name: str, **args):
    """A scripted turn that calls `name` with what the project knows (the workflow's prefill) plus `args`."""
    return lambda req: (name, {**req.context["prefill"].get(name, {}), **args})


@pytest.mark.real
async def test_first_session_end_to_end(tiny_model_dir, workspace):
    from assistant.agent import Agent
    from assistant.app import create_app
    from assistant.app.screens import AuditScreen, HistoryScreen, Loaded, RunsScreen
    from assistant.app.widgets import ApprovalCard, ChatMessage, ToolCard

    tiny = str(shutil.copytree(tiny_model_dir, workspace / "models" / "tiny"))
    older = Agent(ScriptedBrain(["Hello again."]))
    older.send("an older conversation")

    script = [
        step("create_sample_dataset", out_dir="samples", train_rows=40, eval_rows=12), "Wrote the sample task.",
        step("audit_dataset", model=tiny), "The audit is done; the findings view has the details.",
        step("recommend_strategy", task="Route support tickets to a team.", model=tiny, eval_limit=10,
             few_shot=2), "Decision made.",
        step("train_sft", model=tiny, max_steps=2, method="lora"), "Training started.",
        "The run finished.",
        step("evaluate", limit=6, max_new_tokens=6, bootstrap=100), "Evaluated.",
        step("export_model"), "Exported.",
    ]
    seen: list = []
    started = time.perf_counter()
    app = create_app(brain=ScriptedBrain(script))
    async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
        await settle(pilot, app)
        assert app.conversation_id == older.conversation_id  # a restart resumes the last conversation
        await pilot.press("ctrl+n")
        await settle(pilot, app)
        first = app.conversation_id
        assert first != older.conversation_id

        async def approve(n: int) -> None:
            await message_of(pilot, seen, am.ApprovalNeeded, count=n, timeout=120)
            await pilot.pause()
            card = app.query(ApprovalCard).last()
            assert app.focused is card and visible_in_chat(app, card)
            await pilot.press("y")

        async def finished(n: int) -> dict:
            msg = await message_of(pilot, seen, am.ToolFinished, count=n, timeout=600)
            assert msg.event.ok, msg.event.result
            return msg.event.result["output"]

        await say(pilot, app, "make a sample dataset")
        sample = await finished(1)
        await settle(pilot, app)
        await say(pilot, app, "audit samples/train.jsonl against samples/eval.jsonl")
        await approve(1)
        audit = await finished(2)
        await settle(pilot, app)
        assert app.agent.project.latest_dataset("train") == sample["train_path"]  # not the audit report
        await say(pilot, app, "/audits")
        loaded = await message_of(pilot, seen, Loaded)
        await pilot.pause()
        assert isinstance(app.screen, AuditScreen)
        if audit["findings"]:
            assert loaded.rows[0]["severity"] and "Rows (0-based)" in loaded.details[0]
        await pilot.press("escape")

        await say(pilot, app, "should I fine-tune for this?")
        await approve(2)
        decision = await finished(3)
        await settle(pilot, app)
        assert decision["recommendation"]

        await say(pilot, app, "train a lora on it for 2 steps")
        await approve(3)
        train = await finished(4)
        job_id = train["job_id"]
        await pilot.pause()
        title = str(app.query(ToolCard).last().query_one(".title").render())
        assert f"job {job_id}" in title and "✓" not in title  # the job runs: not "done"
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        ended = await message_of(pilot, seen, am.JobEnded, timeout=600)
        assert (ended.event.job_id, ended.event.status) == (job_id, "succeeded")
        await pilot.pause(1.0)
        runs = app.screen
        assert "succeeded" in str(runs.query_one("#jobs").get_row(job_id)) and runs.tails[job_id].losses
        await pilot.press("escape")
        await settle(pilot, app)

        await say(pilot, app, "evaluate the run against the base model and a few-shot prompt")
        await approve(4)
        evaluation = await message_of(pilot, seen, am.ToolFinished, count=6, timeout=600)  # 5th: run_status
        assert evaluation.event.name == "evaluate" and evaluation.event.ok, evaluation.event.result
        names = [r["name"] for r in evaluation.event.result["output"]["results"]]
        assert names == ["base", "base 3-shot", "tuned"]
        await settle(pilot, app)

        await say(pilot, app, "export it")
        await approve(5)
        exported = await message_of(pilot, seen, am.ToolFinished, count=7, timeout=600)
        assert exported.event.name == "export_model" and exported.event.ok, exported.event.result
        await settle(pilot, app)
        t = time.perf_counter()
        await pilot.press("ctrl+q")
    assert time.perf_counter() - t < 3.0
    session_s = time.perf_counter() - started

    again = create_app(brain=ScriptedBrain([]))
    async with again.run_test(size=SIZE) as pilot:
        await settle(pilot, again)
        assert again.conversation_id == first
        texts = [m.content for m in again.query(ChatMessage)]
        assert "export it" in texts and "Exported." in texts
        assert again.agent.project.done.keys() >= {"audit", "decide", "train", "evaluate", "export"}
        await pilot.press("ctrl+o")
        await settle(pilot, again)
        assert isinstance(again.screen, HistoryScreen)
        ids = [again.screen.query_one("#convs").get_option_at_index(i).id for i in range(2)]
        again.screen.query_one("#convs").highlighted = ids.index(older.conversation_id)
        await pilot.press("enter")
        await settle(pilot, again)
        assert again.conversation_id == older.conversation_id
        assert [m.content for m in again.query(ChatMessage)] == ["an older conversation", "Hello again."]
    print(f"first session in the app: {session_s:.0f} s")
