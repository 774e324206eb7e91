"""The tool contract: strict schemas, errors as values with field paths, null means default."""

from __future__ import annotations

from typing import Literal

import pytest

from pydantic import BaseModel, Field

from tools.registry import ToolInput, call_tool, extra_tools, get_tool, strict_schema, tool


class Inner(BaseModel):
    k: int = Field(3, ge=1)


class EchoInput(ToolInput):
    text: str
    times: int = Field(2, ge=1, le=5, description="repeat count")
    mode: Literal["upper", "lower"] | None = None
    inner: Inner = Inner()


class Loose(BaseModel):
    a: int = 1


class EchoOutput(BaseModel):
    result: str


@tool("_test_echo", "Echo text (test tool).", cost="instant")
def _echo(args: EchoInput) -> EchoOutput:
    if args.text == "boom":
        raise RuntimeError("kaboom")
    if args.text == "domain":
        from runtime.errors import BadInput

        raise BadInput("text may not be 'domain'", hint="pick another")
    text = args.text * args.times
    return EchoOutput(result=text.upper() if args.mode == "upper" else text)


@pytest.fixture(autouse=True)
def echo_tool():
    with extra_tools(_echo):
        yield


def test_strict_schema_requires_every_property_and_forbids_extras():
    schema = strict_schema(EchoInput)
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"text", "times", "mode", "inner"}
    times = schema["properties"]["times"]
    assert {"type": "null"} in times["anyOf"] and "default" not in str(times)
    inner = schema["$defs"]["Inner"]
    assert inner["additionalProperties"] is False and inner["required"] == ["k"]
    full = get_tool("_test_echo").openai_schema()
    assert full["function"]["strict"] is True and full["function"]["name"] == "_test_echo"


def test_call_validates_and_null_means_default():
    ok = call_tool("_test_echo", {"text": "ab", "times": None, "mode": "upper", "inner": None})
    assert ok.ok and ok.output == {"result": "ABAB"}


def test_validation_errors_are_values_with_field_paths():
    res = call_tool("_test_echo", {"text": "x", "times": 9, "inner": {"k": 0}, "bogus": 1})
    assert not res.ok and res.error["code"] == "validation_error"
    locs = {f["loc"] for f in res.error["fields"]}
    assert locs == {"times", "inner.k", "bogus"}


def test_domain_and_internal_errors_are_values():
    dom = call_tool("_test_echo", {"text": "domain"})
    assert dom.error == {"code": "bad_input", "message": "text may not be 'domain'", "hint": "pick another"}
    bug = call_tool("_test_echo", {"text": "boom"})
    assert bug.error["code"] == "internal_error" and "kaboom" in bug.error["message"]
    missing = call_tool("no_such_tool", {})
    assert missing.error["code"] == "unknown_tool"


def test_input_models_must_forbid_extras():
    import pytest

    with pytest.raises(TypeError):
        @tool("_loose", "bad", cost="instant")
        def _loose(args: Loose) -> EchoOutput:  # pragma: no cover
            ...


def test_every_registered_tool_has_a_valid_contract():
    from tools import all_tools

    tools_ = all_tools()
    assert "probe_hardware" in tools_
    for t in tools_.values():
        assert t.cost in ("instant", "cpu_job", "gpu_job", "destructive")
        assert t.description and "\n" not in t.description
        schema = t.openai_schema()["function"]["parameters"]
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema.get("properties", {}))


def test_create_sample_dataset_writes_disjoint_balanced_splits(workspace):
    import json
    from collections import Counter

    res = call_tool("create_sample_dataset", {"train_rows": 30, "eval_rows": 12, "out_dir": "s"})
    assert res.ok, res.error
    train = [json.loads(x) for x in open(res.output["train_path"])]
    evals = [json.loads(x) for x in open(res.output["eval_path"])]
    assert len(train) == 30 and len(evals) == 12
    texts = lambda rows: {r["messages"][1]["content"] for r in rows}  # noqa: E731
    assert not texts(train) & texts(evals)
    assert set(Counter(r["messages"][-1]["content"] for r in train).values()) == {10}
    outside = call_tool("create_sample_dataset", {"out_dir": "/etc/ftpilot-test"})
    assert outside.error["code"] == "outside_workspace"


def test_non_finite_numbers_are_refused():
    from tools.training import TrainSFTInput

    for bad in (float("inf"), float("-inf"), float("nan")):
        res = call_tool("train_sft", {"train_path": "x.jsonl", "learning_rate": bad})
        assert not res.ok and res.error["code"] == "validation_error"
        assert any(f["loc"] == "learning_rate" for f in res.error["fields"])
    assert TrainSFTInput.model_json_schema()  # the schema still builds


def test_overwrite_makes_a_call_destructive():
    t = get_tool("_test_echo")
    assert t.cost_for({"text": "a"}) == "instant"
    assert t.cost_for({"text": "a", "overwrite": True}) == "destructive"
    assert t.cost_for({"text": "a", "overwrite": False}) == "instant"


def test_test_tools_live_only_inside_extra_tools():
    from tools import all_tools

    assert "_test_echo" in all_tools()
    with extra_tools():
        pass
    names = set(all_tools())
    assert all(get_tool(n).module.startswith("tools.") for n in names - {"_test_echo"})
