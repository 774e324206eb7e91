"""The project behind a conversation: which paths are data, how positional paths are read, what forms and
the brain are prefilled with (issue 9 items 4 and 8)."""

from __future__ import annotations

from assistant.workflow import Project


def sample_project() -> Project:
    p = Project()
    p.record("create_sample_dataset", {"out_dir": "samples"},
             {"train_path": "/ws/samples/train.jsonl", "eval_path": "/ws/samples/eval.jsonl", "rows": {}})
    return p


def test_reports_and_outputs_never_replace_the_projects_data():
    from runtime.settings import get_settings

    p = sample_project()
    audits = get_settings().data_dir / "audits"
    p.record("audit_dataset", {"path": "/ws/samples/train.jsonl", "eval_path": "/ws/samples/eval.jsonl"},
             {"rows": 240, "json_path": str(audits / "audit-00001-train.json"),
              "report_path": str(audits / "audit-00001-train.md")})
    p.record("audit_dataset", {"path": "/ws/samples/eval.jsonl"},  # auditing the eval set keeps it the eval set
             {"rows": 60, "json_path": "/ws/elsewhere/audit.json", "report_path": "/ws/elsewhere/audit.md"})
    p.record("evaluate", {"eval_path": "/ws/samples/eval.jsonl", "candidates": []},
             {"json_path": "/ws/out/evaluation.json", "report_path": "/ws/out/report.md",
              "predictions_paths": {"base": "/ws/out/predictions-base.jsonl"}})
    p.record("export_model", {"job_id": "abc"}, {"merged_dir": "/ws/export", "adapter_path": "/ws/a.json"})
    assert p.latest_dataset("train") == "/ws/samples/train.jsonl"
    assert p.latest_dataset("eval") == "/ws/samples/eval.jsonl"
    assert {d["path"] for d in p.datasets} == {"/ws/samples/train.jsonl", "/ws/samples/eval.jsonl"}
    # Data-making tools do move the project on: a cleaned copy becomes the train data.
    p.record("clean_dataset", {"path": "/ws/samples/train.jsonl", "out_path": "/ws/samples/clean.jsonl"},
             {"out_path": "/ws/samples/clean.jsonl", "manifest_path": "/ws/samples/clean.manifest.json"})
    assert p.latest_dataset("train") == "/ws/samples/clean.jsonl"


def test_positional_paths_go_to_train_then_eval():
    from assistant.brains.routing import pins_from_text
    from tools.registry import get_tool

    def pins(tool: str) -> dict:
        schema = get_tool(tool).openai_schema()["function"]["parameters"]
        return {k: v for k, v in pins_from_text("/decide samples/train.jsonl samples/eval.jsonl", schema).items()
                if k.endswith("path")}

    assert pins("recommend_strategy") == {"train_path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"}
    assert pins("train_sft") == {"train_path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"}
    assert pins("train_dpo") == {"train_path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"}
    assert pins("audit_dataset") == {"path": "samples/train.jsonl", "eval_path": "samples/eval.jsonl"}


def test_evaluate_is_prefilled_with_base_few_shot_and_the_run():
    from tools.evaluate import EvaluateInput

    p = sample_project()
    p.record("train_sft", {"train_path": "/ws/samples/train.jsonl", "model": "default"},
             {"job_id": "job1", "status": "succeeded", "adapter_path": "/data/runs/job1/adapter"})
    values = p.prefill(EvaluateInput)
    names = [c["name"] for c in values["candidates"]]
    assert names == ["base", "base 3-shot", "tuned"]
    assert values["candidates"][1]["few_shot"] == 3 and values["train_path"] == "/ws/samples/train.jsonl"
    assert values["candidates"][2]["adapter"] == "/data/runs/job1/adapter"
    assert values["eval_path"] == "/ws/samples/eval.jsonl"
    EvaluateInput.model_validate(values)  # a valid call as it stands
