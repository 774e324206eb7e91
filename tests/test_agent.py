"""The agent loop: validation errors go back to the model, approvals gate costly tools, repeated calls stop,
jobs that end are summarized; and the real brains (transformers serve over HTTP, the embedded model)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from pydantic import BaseModel, Field

from assistant.agent import (Agent, AssistantMessage, Decision, JobEnded, Notice, ToolFinished, ToolStarted,
                             approve_all, reject_all)
from tests.scripted_brain import ScriptedBrain
from tools.registry import ToolInput, extra_tools, tool


class CountInput(ToolInput):
    rows: int = Field(..., ge=1, le=1000, description="how many rows")
    label: str = Field("x", description="a label")


class CountOutput(BaseModel):
    job_id: str
    status: str
    rows: int


RAN: list[dict] = []


@pytest.fixture
def job_tool():
    """A cpu_job test tool that writes a real Job row (so approvals and job watching are exercised)."""

    @tool("test_count_job", "Start a counting job (test only).", cost="cpu_job")
    def count_job(args: CountInput) -> CountOutput:
        from runtime import store

        from runtime.settings import get_settings

        RAN.append(args.model_dump())
        run = get_settings().data_dir / "runs" / f"count-{len(RAN)}"
        run.mkdir(parents=True, exist_ok=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 2.0 / i}) + "\n"
                                                   for i in range(1, args.rows + 1)))
        (run / "log.txt").write_text("counting\n")
        job = store.add(store.Job(kind="test_count", status="running", total_steps=args.rows, run_dir=str(run),
                                  metrics_path=str(run / "metrics.jsonl"), log_path=str(run / "log.txt")))
        return CountOutput(job_id=job.id, status="running", rows=args.rows)

    RAN.clear()
    with extra_tools(count_job):
        yield "test_count_job"


def collect():
    events = []
    return events, events.append


def test_prose_streams_and_persists():
    from sqlmodel import select

    from runtime import store

    events, emit = collect()
    agent = Agent(ScriptedBrain(["Hello there, friend."]), emit=emit)
    done = agent.send("hi")
    assert done.stopped is None and done.rounds == 1
    msgs = [e for e in events if isinstance(e, AssistantMessage)]
    assert msgs[0].content == "Hello there, friend."
    with store.session() as s:
        rows = s.exec(select(store.Message).where(store.Message.conversation_id == agent.conversation_id)).all()
    assert [r.role for r in rows] == ["user", "assistant"]
    # Resuming the conversation restores the history.
    again = Agent(ScriptedBrain(["ok"]), conversation_id=agent.conversation_id)
    assert [m["role"] for m in again.messages] == ["user", "assistant"]


def test_instant_tool_runs_without_approval_and_updates_project(workspace):
    events, emit = collect()
    brain = ScriptedBrain([("create_sample_dataset", {"out_dir": "samples", "train_rows": 20, "eval_rows": 5}),
                           "Wrote the sample."])
    asked = []
    agent = Agent(brain, emit=emit, approver=lambda c: asked.append(c) or Decision("reject"))
    agent.send("make me a sample dataset please")
    assert not asked
    fin = [e for e in events if isinstance(e, ToolFinished)][0]
    assert fin.ok and fin.result["output"]["rows"] == {"train": 20, "eval": 5}
    assert (workspace / "samples" / "train.jsonl").exists()
    assert agent.project.latest_dataset("train").endswith("samples/train.jsonl")
    assert agent.project.latest_dataset("eval").endswith("samples/eval.jsonl")
    # The brain's second request saw the tool result.
    assert brain.requests[1].messages[-1]["role"] == "tool"
    from runtime import store
    from sqlmodel import select

    with store.session() as s:
        recs = s.exec(select(store.ToolCallRecord)).all()
    assert [(r.name, r.ok) for r in recs] == [("create_sample_dataset", True)]


def test_validation_errors_return_to_model_with_bounded_retries(job_tool):
    events, emit = collect()
    brain = ScriptedBrain([(job_tool, {"rows": 0}), (job_tool, {"rows": "many"}), (job_tool, "{not json"),
                           (job_tool, {"rows": 5, "bogus": 1}), "never reached"])
    agent = Agent(brain, emit=emit, approver=approve_all, max_retries=2)
    done = agent.send("count")
    assert done.stopped == "retries_exhausted"
    assert RAN == []  # nothing invalid ever ran
    errors = [e.result["error"] for e in events if isinstance(e, ToolFinished)]
    assert errors[0]["code"] == "validation_error" and errors[0]["fields"][0]["loc"] == "rows"
    assert errors[2]["code"] == "invalid_json"
    # The model saw the error as a tool message before its next try.
    tool_msg = brain.requests[1].messages[-1]
    assert tool_msg["role"] == "tool" and "validation_error" in tool_msg["content"]
    assert any(isinstance(e, Notice) and "invalid" in e.text for e in events)


def test_retry_after_error_succeeds(job_tool):
    brain = ScriptedBrain([(job_tool, {"rows": 0}), (job_tool, {"rows": 3}), "Started."])
    agent = Agent(brain, approver=approve_all)
    done = agent.send("count three")
    assert done.stopped is None and RAN == [{"rows": 3, "label": "x"}]


def test_costly_tool_needs_approval_reject_edit_approve(job_tool):
    seen = []
    # Reject: the tool never runs and the loop stops.
    agent = Agent(ScriptedBrain([(job_tool, {"rows": 3})]), approver=lambda c: seen.append(c) or Decision("reject"))
    assert agent.send("count").stopped == "rejected"
    assert RAN == [] and seen[0].name == job_tool and seen[0].cost == "cpu_job" and seen[0].arguments == {"rows": 3}
    # Edit: the person's arguments run, not the model's.
    events, emit = collect()
    agent = Agent(ScriptedBrain([(job_tool, {"rows": 3}), "ok"]), emit=emit,
                  approver=lambda c: Decision("edit", {"rows": 7, "label": "mine"}))
    agent.send("count")
    assert RAN == [{"rows": 7, "label": "mine"}]
    started = [e for e in events if isinstance(e, ToolStarted)][0]
    assert started.arguments == {"rows": 7, "label": "mine"}
    # Edited arguments are validated too.
    agent = Agent(ScriptedBrain([(job_tool, {"rows": 3}), "ok"]), approver=lambda c: Decision("edit", {"rows": -1}))
    agent.send("count")
    assert len(RAN) == 1
    # Headless without --yes rejects with a clear reason.
    events, emit = collect()
    Agent(ScriptedBrain([(job_tool, {"rows": 2})]), approver=reject_all, emit=emit).send("count")
    err = [e for e in events if isinstance(e, ToolFinished)][0].result["error"]
    assert err["code"] == "rejected_by_person" and "--yes" in err["message"]


def test_repeated_identical_calls_are_refused_and_stop():
    events, emit = collect()
    call = ("probe_hardware", {})
    brain = ScriptedBrain([call, call, call, call, "never"])
    done = Agent(brain, emit=emit).send("what hardware do I have")
    assert done.stopped == "repeated_calls"
    fins = [e for e in events if isinstance(e, ToolFinished)]
    assert fins[0].ok and [f.result["error"]["code"] for f in fins[1:]] == ["repeated_call", "repeated_call"]


def test_slash_command_forces_the_named_tool():
    brain = ScriptedBrain([("probe_hardware", {}), "done"])
    Agent(brain).send("/decide is this worth it")
    choice = brain.requests[0].tool_choice
    assert choice == {"type": "function", "function": {"name": "recommend_strategy"}}
    assert brain.requests[0].messages[-1]["content"] == "is this worth it"
    assert brain.requests[1].tool_choice is None  # only the first call is forced


def test_job_end_is_reported_and_summarized(job_tool):
    from runtime import store

    events, emit = collect()
    brain = ScriptedBrain([(job_tool, {"rows": 2}), "Started it.", "The job finished."])
    agent = Agent(brain, approver=approve_all, emit=emit)
    agent.send("count two")
    (job_id,) = agent.watched_jobs
    assert agent.check_jobs() == []  # still running
    with store.session() as s:
        job = s.get(store.Job, job_id)
        job.status = "succeeded"
        s.add(job)
    ended = agent.check_jobs()
    assert [(e.job_id, e.status) for e in ended] == [(job_id, "succeeded")]
    assert not agent.watched_jobs
    last_req = brain.requests[-1].messages
    assert last_req[-1]["role"] == "tool" and job_id in last_req[-1]["content"]
    assert [e for e in events if isinstance(e, AssistantMessage)][-1].content == "The job finished."


def test_system_prompt_carries_project_state(workspace):
    brain = ScriptedBrain([("create_sample_dataset", {"out_dir": "s"}), "ok", "fine"])
    agent = Agent(brain)
    agent.send("make the sample dataset for tickets")
    agent.send("what next?")
    system = brain.requests[-1].messages[0]["content"]
    assert "train data:" in system and "s/train.jsonl" in system and "next step: audit" in system
    assert brain.requests[-1].context["prefill"]["create_sample_dataset"] == {}


# --- routing and the embedded brain's argument filling (no model needed for the routing) -----------------

def test_router_narrows_tools():
    from assistant.brains.routing import route

    avail = {"audit_dataset", "train_sft", "train_dpo", "evaluate", "cancel_run", "recommend_strategy",
             "clean_dataset", "run_status", "export_model", "probe_hardware"}
    assert route("please audit data/train.jsonl", avail).candidates == ["audit_dataset"]
    assert route("should I fine-tune at all for this?", avail).candidates == ["recommend_strategy"]
    assert route("stop the training now", avail).candidates == ["cancel_run"]
    assert route("train a lora on it", avail).candidates == ["train_sft"]
    assert route("run DPO on my preference pairs", avail).candidates == ["train_dpo"]
    assert route("clean and dedup the data", avail).candidates == ["clean_dataset"]
    assert route("go ahead", avail, {"next_tool": "evaluate"}).candidates == ["evaluate"]
    assert route("tell me a joke", avail) is None


def test_pins_read_paths_numbers_and_enums():
    from assistant.brains.routing import pins_from_text

    schema = {"properties": {"train_path": {"type": "string"}, "eval_path": {"anyOf": [{"type": "string"},
              {"type": "null"}]}, "max_steps": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
              "method": {"enum": ["lora", "qlora", "full"]}, "model": {"type": "string"}}}
    pins = pins_from_text("train qlora on data/a.jsonl and data/b.jsonl for 50 steps", schema, {"model": "default"})
    assert pins == {"train_path": "data/a.jsonl", "eval_path": "data/b.jsonl", "max_steps": 50,
                    "method": "qlora", "model": "default"}


# --- real brains ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.real
def test_agent_against_real_transformers_serve(bundled_model_dir):
    """The openai brain streams a real answer over HTTP from `transformers serve`; the loop ends cleanly."""
    import httpx

    from assistant.brains.openai import OpenAIBrain

    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "transformers")
    proc = subprocess.Popen([exe, "serve", "--device", "cpu", "--dtype", "float32", "--port", str(port),
                             str(bundled_model_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ})
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        brain = OpenAIBrain(f"http://127.0.0.1:{port}", str(bundled_model_dir), max_tokens=40)
        brain.load()
        events, emit = collect()
        agent = Agent(brain, emit=emit)
        done = agent.send("Say hello in five words.")
        assert done.stopped is None
        msg = [e for e in events if isinstance(e, AssistantMessage)][0]
        assert len(msg.content.strip()) > 0 and msg.tokens > 0
        assert brain.last.first_token_s is not None and brain.last.first_token_s < 30
        # (A forced tool_choice, which transformers serve refuses, is covered against a local SSE server.)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.real
def test_embedded_brain_tool_calls_are_valid_for_the_schema(bundled_model_dir, job_tool):
    """Every tool call the embedded brain makes parses and validates against the tool's input model."""
    from assistant.brains.embedded import EmbeddedBrain
    from tools.registry import _drop_nulls_for_defaults, get_tool

    brain = EmbeddedBrain("default")
    brain.load()
    events, emit = collect()
    calls = []
    agent = Agent(brain, emit=emit, approver=lambda c: calls.append(c) or Decision("reject"))
    # The model itself fills a required integer (no number in the message), under the grammar.
    from assistant.brains import TurnRequest

    schemas = {t["function"]["name"]: t for t in agent.tool_schemas()}
    for prompt in ["count some rows for me", "count rows, label them urgent", "please count the rows now"]:
        req = TurnRequest([{"role": "user", "content": prompt}], [schemas[job_tool]],
                          {"type": "function", "function": {"name": job_tool}}, {})
        end = list(brain.stream(req))[-1]
        (call,) = end.tool_calls
        args = json.loads(call.arguments)
        model = get_tool(job_tool).input_model
        model.model_validate(_drop_nulls_for_defaults(model, args))
    # Routed end to end: intent picks the tool, the path is pinned from the message.
    agent.send("what hardware does this machine have?")
    fins = [e for e in events if isinstance(e, ToolFinished)]
    assert fins and fins[0].name == "probe_hardware" and fins[0].ok
    assert brain.last.note == "summary from the result"


@pytest.mark.real
def test_headless_ask_flow_with_embedded_brain(bundled_model_dir, workspace):
    """`ftpilot ask` twice on one conversation: a sample dataset, then an audit of it by plain words; the
    embedded brain picks the tool, fills the path from the project, and --yes approves the cpu_job."""
    def ask(*args):
        out = subprocess.run([sys.executable, "-m", "assistant", "ask", *args, "--json"], capture_output=True,
                             text=True, env=os.environ.copy(), timeout=600, cwd=workspace)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    first = ask("please create a sample dataset for me")
    conv = first["conversation_id"]
    assert "embedded" in first["brain"]
    done = [e for e in first["events"] if e["type"] == "ToolFinished"]
    assert done[0]["name"] == "create_sample_dataset" and done[0]["ok"]
    # Without --yes the audit (a cpu_job) is rejected, and the transcript says why.
    refused = ask("-c", conv, "audit my training data")
    fin = [e for e in refused["events"] if e["type"] == "ToolFinished"][0]
    assert fin["name"] == "audit_dataset" and fin["result"]["error"]["code"] == "rejected_by_person"
    audited = ask("-c", conv, "audit my training data", "--yes")
    fin = [e for e in audited["events"] if e["type"] == "ToolFinished"][0]
    assert fin["name"] == "audit_dataset" and fin["ok"], fin
    assert fin["arguments"]["path"].endswith("samples/train.jsonl")
    assert fin["result"]["output"]["rows"] == 240
    summary = [e for e in audited["events"] if e["type"] == "AssistantMessage"][-1]["content"]
    # the reply states the audit's own findings (check and count) and proposes the next step
    findings = fin["result"]["output"]["findings"]
    assert findings and all(f"{f['check']}: {f['count']}" in summary for f in findings[:8]), summary
    assert "240 rows" in summary and "Next:" in summary, summary


# --- the openai brain against a local SSE server that streams like vLLM (tool-call fragments by index) ------

def _sse_server(chunks_for_request):
    import http.server
    import threading

    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = json.dumps({"data": [{"id": "served-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(req)
            status, chunks = chunks_for_request(req)
            self.send_response(status)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for c in chunks:
                self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
            self.wfile.write(b"data: [DONE]\n\n")

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


def test_openai_brain_buffers_tool_call_fragments_and_streams_prose():
    from assistant.brains.openai import OpenAIBrain

    def delta(**d):
        return {"choices": [{"index": 0, "delta": d}]}

    turns = [
        [delta(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "probe_", "arguments": ""}}]),
         delta(tool_calls=[{"index": 0, "function": {"name": "hardware", "arguments": "{"}}]),
         delta(tool_calls=[{"index": 0, "function": {"arguments": "}"}}])],
        [delta(content="You have "), delta(content="a CPU.")],
    ]
    srv, seen = _sse_server(lambda req: (200, turns.pop(0)))
    try:
        brain = OpenAIBrain(f"http://127.0.0.1:{srv.server_port}")
        brain.load()
        assert brain.model == "served-model"
        events, emit = collect()
        agent = Agent(brain, emit=emit)
        agent.send("what hardware?")
        fin = [e for e in events if isinstance(e, ToolFinished)][0]
        assert fin.name == "probe_hardware" and fin.ok
        assert [e.content for e in events if isinstance(e, AssistantMessage)] == ["You have a CPU."]
        assert seen[0]["tools"] and seen[0]["stream"] is True and seen[0]["model"] == "served-model"
        assert seen[1]["messages"][-1]["role"] == "tool" and seen[1]["messages"][-2]["tool_calls"][0]["id"] == "c1"
    finally:
        srv.shutdown()


def test_openai_brain_retries_without_tool_choice_when_refused():
    from assistant.brains.openai import OpenAIBrain

    def answer(req):
        if "tool_choice" in req:
            return 422, []
        return 200, [{"choices": [{"index": 0, "delta": {"content": "ok"}}]}]

    srv, seen = _sse_server(answer)
    try:
        brain = OpenAIBrain(f"http://127.0.0.1:{srv.server_port}/v1", "m")
        Agent(brain).send("/decide hello")
        assert "tool_choice" in seen[0] and "tool_choice" not in seen[1]
        assert brain.rejects_tool_choice
    finally:
        srv.shutdown()


def test_brain_choice_and_clear_errors(monkeypatch):
    from assistant.brains import BrainUnavailable, choose_kind, make_brain
    from runtime.settings import reset_settings

    assert choose_kind() == "embedded"  # no GPU, no URL here
    monkeypatch.setenv("FTPILOT_BRAIN_URL", "http://127.0.0.1:9/v1")
    reset_settings()
    assert choose_kind() == "openai"
    brain = make_brain()
    with pytest.raises(BrainUnavailable, match="no OpenAI-compatible server"):
        brain.load()
    vb = make_brain("vllm")
    assert vb.kind == "vllm" and not vb.self_started
    monkeypatch.delenv("FTPILOT_BRAIN_URL")
    reset_settings()
    with pytest.raises(BrainUnavailable):
        make_brain("vllm").load()  # no vllm / no GPU here: a clear message, not a traceback


def test_dead_job_process_is_noticed(job_tool):
    """A job whose process died without reporting is marked by the job runtime and reported as ended."""
    from runtime import store

    agent = Agent(ScriptedBrain([(job_tool, {"rows": 2}), "Started.", "It failed."]), approver=approve_all)
    agent.send("count two")
    (job_id,) = agent.watched_jobs
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.session() as s:
        job = s.get(store.Job, job_id)
        job.pid = dead.pid
        s.add(job)
    ended = agent.check_jobs()
    assert [(e.job_id, e.status) for e in ended] == [(job_id, "failed")]
