"""Agent-loop behaviour the app relies on: a turn stopped mid-stream keeps what the person saw, and a
conversation closed during a tool call resumes with a valid history."""

from __future__ import annotations

import json

from assistant.agent import Agent, AssistantDelta
from tests.scripted_brain import ScriptedBrain


def test_a_stopped_turn_keeps_the_streamed_text():
    agent = Agent(ScriptedBrain([" ".join(f"w{i}" for i in range(50))], delay=0.01))
    seen = []

    def emit(ev):
        seen.append(ev)
        if isinstance(ev, AssistantDelta) and len(seen) == 5:
            agent.cancel()

    agent.emit = emit
    agent.send("talk")
    assert agent.messages[-1] == {"role": "assistant", "content": "w0 w1 w2 w3 w4"}
    again = Agent(ScriptedBrain([]), conversation_id=agent.conversation_id)
    assert again.messages[-1]["content"] == "w0 w1 w2 w3 w4"


def test_a_call_interrupted_by_closing_the_app_gets_a_result_on_resume():
    agent = Agent(ScriptedBrain([("probe_hardware", {})]))
    # The app closes while the call runs: the assistant's tool call is stored, its result never is.
    agent._append({"role": "user", "content": "what hardware?"})
    agent._append({"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "probe_hardware", "arguments": "{}"}}]})
    agent._append({"role": "user", "content": "and later, something else"})
    again = Agent(ScriptedBrain([]), conversation_id=agent.conversation_id)
    roles = [m["role"] for m in again.messages]
    assert roles == ["user", "assistant", "tool", "user"]  # the result right after its call
    result = again.messages[2]
    assert result["tool_call_id"] == "call_x" and json.loads(result["content"])["error"]["code"] == "interrupted"
    assert Agent(ScriptedBrain([]), conversation_id=agent.conversation_id).messages == again.messages
