"""SVG snapshots of the app (pytest-textual-snapshot) at the sizes a first session is seen at, 140x45 and
100x30, with a frozen cursor and fixed content (fixed paths, ids and durations), so that nothing important is
cut off: a tool card's reasons and recommendations, an approval card, the runs table's ETA column and log,
the audit view's explanation, a form's Submit button.

`pytest tests/test_app_snapshots.py --snapshot-update` rewrites them after an intended change; look at the
report (snapshot_report.html) before accepting.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.scripted_brain import ScriptedBrain
from tests.test_app import settle

SIZES = [(140, 45), (100, 30)]
ROOT = Path("/tmp/ftpilot-snapshots")  # fixed, so that paths shown on screen are the same on every run


@pytest.fixture(autouse=True)
def fixed_dirs(monkeypatch):
    from textual.widgets import Input

    from runtime.settings import reset_settings
    from runtime.store import reset_engines

    monkeypatch.setattr(Input, "_toggle_cursor", lambda _self: None)
    shutil.rmtree(ROOT, ignore_errors=True)
    (ROOT / "ws" / "samples").mkdir(parents=True)
    monkeypatch.setenv("FTPILOT_DATA_DIR", str(ROOT / "data"))
    monkeypatch.setenv("FTPILOT_WORKSPACE_ROOT", str(ROOT / "ws"))
    reset_settings()
    reset_engines()
    yield
    reset_engines()
    shutil.rmtree(ROOT, ignore_errors=True)


def make_app():
    from assistant.app import create_app

    return create_app(brain=ScriptedBrain([]), resume_last=False)


def size_id(size) -> str:
    return f"{size[0]}x{size[1]}"


AUDIT_OUTPUT = {
    "rows": 246, "format": "jsonl/messages",
    "findings": [
        {"check": "contamination", "severity": "error", "count": 13, "rows": [3, 17, 40, 41, 58],
         "examples": [{"row": 3, "detail": "same prompt as eval row 12",
                       "preview": "My invoice shows a double charge"}],
         "message": "13 train rows also appear in the eval set: the evaluation would overstate quality."},
        {"check": "exact_duplicate", "severity": "warning", "count": 6, "rows": [240, 241, 242, 243, 244, 245],
         "examples": [{"row": 240, "detail": "duplicate of row 0", "preview": "Where is my order?"}],
         "message": "6 rows repeat an earlier row exactly; they weigh those examples twice."}],
    "summary": {"valid_rows": 246, "kind": "messages"},
    "recommendations": [
        "Remove 13 train row(s) that overlap the eval set before training, or the evaluation will overstate "
        "quality: clean_dataset with eval_path and drop_contaminated=true.",
        "Drop 6 exact and 0 near-duplicate(s), keeping the first: clean_dataset with drop_duplicates=\"near\"."],
    "report_path": str(ROOT / "data/audits/audit-00001-train.md"),
    "json_path": str(ROOT / "data/audits/audit-00001-train.json")}


def first_session_so_far(app) -> None:
    """Data, an audit card with its findings and advice, the brain's reply, and a training call waiting."""
    from assistant.agent import AssistantMessage, PendingCall, ToolFinished, ToolStarted
    from assistant.app import messages as am
    from assistant.app.widgets import ChatMessage

    project = app.agent.project
    project.record("create_sample_dataset", {}, {"train_path": "samples/train.jsonl",
                                                 "eval_path": "samples/eval.jsonl"})
    project.record("audit_dataset", {"path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"},
                   AUDIT_OUTPUT)
    app.refresh_plan()
    for w in app.query(".welcome"):
        w.remove()
    app.chat_view.mount(ChatMessage("user", "audit samples/train.jsonl against samples/eval.jsonl"))
    args = {"path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"}
    app.post_message(am.ToolStarted(ToolStarted("c1", "audit_dataset", args, "cpu_job")))
    app.post_message(am.ToolFinished(ToolFinished("c1", "audit_dataset", args, True, {"output": AUDIT_OUTPUT},
                                                  1.84, "approve")))
    app.post_message(am.Replied(AssistantMessage(
        "The audit found 13 rows that also appear in the eval set and 6 exact duplicates. Next: clean the "
        "data, then train.", "scripted · test", 22, 0.5, "summary from the result")))
    app.chat_view.mount(ChatMessage("user", "train a lora on it for 10 steps"))
    pending = PendingCall("c2", "train_sft", {"train_path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl",
                                              "max_steps": 10, "method": "lora"}, "cpu_job",
                          "Fine-tune with LoRA/QLoRA/full SFT as a background job; returns the job id at once.")
    app.post_message(am.ApprovalNeeded(pending))


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_snapshot_first_session_chat(snap_compare, size):
    app = make_app()

    async def run_before(pilot):
        from assistant.app.widgets import ApprovalCard, ToolCard

        await settle(pilot, app)
        first_session_so_far(app)
        for _ in range(200):  # every posted message handled: the card waits, focused, the audit card done
            await pilot.pause(0.05)
            cards = app.query(ApprovalCard)
            if cards and app.focused is cards.last() and app.query(ToolCard) and app.query(ToolCard).last().result:
                break
        await settle_scroll(pilot, app.chat_view)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


async def settle_scroll(pilot, view) -> None:
    """Wait until the anchored chat has laid out its last card and sits at the end, the same for two looks in a
    row: the scrollbar's thumb is in the snapshot, and a layout pass still pending moved it on a loaded machine."""
    last = None
    for _ in range(100):
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.05)
        now = (view.virtual_size.height, view.scroll_y, view.max_scroll_y)
        if now == last and view.scroll_y == view.max_scroll_y:
            view.vertical_scrollbar.refresh()  # its thumb is drawn from the final position, not a stale frame
            await pilot.pause(0.05)
            return
        last = now


def fixed_jobs() -> str:
    from runtime import store

    run = ROOT / "data" / "runs" / "job-snapshot1"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": round(5.16 / (1 + 0.4 * s), 3), "s_per_step": 12.5}) + "\n"
        for s in range(1, 5)) + json.dumps({"step": 4, "eval_loss": 1.9}) + "\n")
    (run / "job.log").write_text(
        "[ftpilot] job snapshot1 running on cpu (fp32)\n"
        "/venv/site-packages/trl/trainer/sft_trainer.py:88: UserWarning: padding_free is deprecated\n"
        "  warnings.warn(\n"
        "{'loss': 2.687, 'grad_norm': 1.93, 'learning_rate': 0.0002, 'epoch': 0.17}\n"
        " 40%|████      | 4/10 [00:50<01:15, 12.50s/it]\n"
        "[ftpilot] checkpoint saved at step 4\n")
    t0 = datetime(2026, 11, 26, 9, 0, 0, tzinfo=timezone.utc)
    store.add(store.Job(id="oldjob000001", kind="train_sft", method="qlora", status="succeeded", model="default",
                        dataset="samples/train.jsonl", step=30, total_steps=30, created_at=t0))
    store.add(store.Job(id="snapshot1", kind="train_sft", method="lora", status="running", model="default",
                        dataset="samples/train.jsonl", device="cpu", step=4, total_steps=10, run_dir=str(run),
                        metrics_path=str(run / "metrics.jsonl"), log_path=str(run / "job.log"),
                        created_at=t0 + timedelta(hours=1)))
    return "snapshot1"


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_snapshot_runs_screen(snap_compare, size):
    from assistant.app.screens import RunsScreen

    job_id = fixed_jobs()
    app = make_app()

    async def run_before(pilot):
        await settle(pilot, app)
        app.push_screen(RunsScreen(job_id))
        for _ in range(100):
            await pilot.pause(0.1)
            if app.screen.renders and "hidden" in (app.screen.query_one("#log").border_title or ""):
                break
        await pilot.pause(0.6)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_snapshot_audit_view(snap_compare, size):
    from runtime import store

    from assistant.app.screens import AuditScreen

    report = Path(AUDIT_OUTPUT["json_path"])
    report.parent.mkdir(parents=True)
    report.write_text(json.dumps(AUDIT_OUTPUT))
    ds = store.add(store.Dataset(path="samples/train.jsonl", sha256="x", rows=246))
    store.add(store.Audit(dataset_id=ds.id, json_path=str(report), report_path=AUDIT_OUTPUT["report_path"],
                          summary={"findings": {"contamination": 13, "exact_duplicate": 6}}))
    app = make_app()

    async def run_before(pilot):
        await settle(pilot, app)
        app.push_screen(AuditScreen())
        await settle(pilot, app)
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_snapshot_train_form(snap_compare, size):
    app = make_app()

    async def run_before(pilot):
        await settle(pilot, app)
        app.agent.project.record("create_sample_dataset", {}, {"train_path": "samples/train.jsonl",
                                                               "eval_path": "samples/eval.jsonl"})
        app.start_tool("train_sft")
        await pilot.pause(0.5)

    assert snap_compare(app, terminal_size=size, run_before=run_before)
