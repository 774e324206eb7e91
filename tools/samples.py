"""`create_sample_dataset`: a ready task with known answers, for a first run without your own data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.registry import ToolInput, tool


class CreateSampleDatasetInput(ToolInput):
    task: Literal["tickets", "tickets_preferences"] = Field(
        "tickets", description="tickets: support ticket -> label (SFT); tickets_preferences: chosen/rejected pairs")
    out_dir: str = Field("samples", description="folder (inside the workspace) for train.jsonl and eval.jsonl")
    train_rows: int = Field(240, ge=1, le=100_000)
    eval_rows: int = Field(60, ge=1, le=100_000)
    seed: int = 0
    overwrite: bool = Field(False, description="replace existing train.jsonl/eval.jsonl (needs approval)")


class CreateSampleDatasetOutput(BaseModel):
    train_path: str
    eval_path: str
    rows: dict[str, int]
    format: str


@tool("create_sample_dataset", "Write a sample task (train.jsonl, eval.jsonl) to try ftpilot without your own data.",
      cost="instant")
def create_sample_dataset(args: CreateSampleDatasetInput) -> CreateSampleDatasetOutput:
    from runtime.outputs import OutputSet, check_output, json_line
    from runtime.paths import resolve_path
    from runtime.samples import ticket_preference_records, ticket_records

    out = resolve_path(args.out_dir)
    paths = [check_output(out / name, overwrite=args.overwrite) for name in ("train.jsonl", "eval.jsonl")]
    make = ticket_records if args.task == "tickets" else ticket_preference_records
    # Eval rows come from held-out templates: no eval text repeats (or near-copies) a train text.
    parts = (make(args.train_rows, seed=args.seed, part="train"), make(args.eval_rows, seed=args.seed, part="eval"))
    with OutputSet(overwrite=args.overwrite) as files:
        for path, rows in zip(paths, parts):
            f = files.open(path)
            f.writelines(json_line(r) for r in rows)
    return CreateSampleDatasetOutput(train_path=str(paths[0]), eval_path=str(paths[1]),
                                     rows={"train": args.train_rows, "eval": args.eval_rows},
                                     format="conversational" if args.task == "tickets" else "preference_conversational")
