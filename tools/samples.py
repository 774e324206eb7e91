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


class CreateSampleDatasetOutput(BaseModel):
    train_path: str
    eval_path: str
    rows: dict[str, int]
    format: str


@tool("create_sample_dataset", "Write a sample task (train.jsonl, eval.jsonl) to try ftpilot without your own data.",
      cost="instant")
def create_sample_dataset(args: CreateSampleDatasetInput) -> CreateSampleDatasetOutput:
    from runtime.paths import resolve_path
    from runtime.samples import ticket_preference_records, ticket_records, write_split

    out = resolve_path(args.out_dir)
    make = ticket_records if args.task == "tickets" else ticket_preference_records
    # One draw split in two, so eval texts never repeat train texts.
    rows = make(args.train_rows + args.eval_rows, seed=args.seed)
    train, evals = write_split(out, rows, args.train_rows)
    return CreateSampleDatasetOutput(train_path=str(train), eval_path=str(evals),
                                     rows={"train": args.train_rows, "eval": args.eval_rows},
                                     format="conversational" if args.task == "tickets" else "preference_conversational")
