"""The project behind a conversation: task, datasets, base model, audits, runs, evaluations, decision.

It is persisted in `Conversation.project` (JSON) and drives the plan panel: the steps decide, audit, clean,
synthesize, train, align, distill, evaluate, export, each backed by one tool, with the next suggested step.
Tool outputs are read tolerantly (by key names such as `*_path`, `job_id`), so the plan keeps up with tools
as they grow. Every step can be started without the brain: `prefill(tool)` gives a form its known values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


@dataclass(frozen=True)
class Step:
    key: str
    tool: str
    title: str
    slash: str
    optional: bool = False


STEPS: list[Step] = [
    Step("decide", "recommend_strategy", "Decide: fine-tune, prompt, or RAG?", "/decide"),
    Step("audit", "audit_dataset", "Audit the data", "/audit"),
    Step("clean", "clean_dataset", "Clean the data", "/clean", optional=True),
    Step("synthesize", "generate_synthetic", "Synthesize more examples", "/synth", optional=True),
    Step("train", "train_sft", "Train (LoRA / QLoRA SFT)", "/train"),
    Step("align", "train_dpo", "Align with preferences (DPO)", "/dpo", optional=True),
    Step("distill", "distill", "Distill a teacher", "/distill", optional=True),
    Step("evaluate", "evaluate", "Evaluate against the base", "/eval"),
    Step("export", "export_model", "Export for serving", "/export"),
]
STEP_BY_KEY = {s.key: s for s in STEPS}
STEP_BY_TOOL = {s.tool: s for s in STEPS}
SLASH_TOOLS = {s.slash: s.tool for s in STEPS}
# Slash commands that open a view instead of calling a tool.
SLASH_VIEWS = {"/runs": "runs", "/help": "help", "/history": "history", "/audits": "audit", "/evals": "evaluation",
               "/playground": "playground"}
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
RUN_TOOLS = {"train_sft", "train_dpo", "distill"}
RUN_REFERENCING = {"run_status", "cancel_run", "resume_run", "list_runs", "evaluate", "export_model"}
# Argument names that name a data set, and its role. No other argument, and no output but DATA_OUTPUTS, is
# project data: an audit's JSON report or an evaluation file must never become the "train data".
DATA_ARGS = {"path": "train", "dataset": "train", "data_path": "train", "input_path": "train", "train_path": "train",
             "seeds_path": "train", "eval_path": "eval", "test_path": "eval", "preference_path": "preferences",
             "preferences_path": "preferences", "pref_path": "preferences"}
DATA_OUTPUTS = {"create_sample_dataset": {"train_path": "train", "eval_path": "eval"},
                "split_dataset": {"train_path": "train", "eval_path": "eval"},
                "clean_dataset": {"out_path": "train"}, "generate_synthetic": {"out_path": "train"}}
FEW_SHOT_K = 3  # demonstrations in the few-shot candidate evaluate is prefilled with


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Project(BaseModel):
    task: str | None = Field(None, description="what the person wants the model to do")
    base_model: str = "default"
    datasets: list[dict] = Field(default_factory=list)     # {path, role, source}
    audits: list[dict] = Field(default_factory=list)       # {dataset, summary..., at}
    runs: list[dict] = Field(default_factory=list)         # {job_id, tool, status, run_dir, adapter_path}
    evaluations: list[dict] = Field(default_factory=list)
    exports: list[dict] = Field(default_factory=list)
    decision: dict | None = None
    done: dict[str, str] = Field(default_factory=dict)     # step key -> when it last succeeded

    # --- reading --------------------------------------------------------------------------------------
    def latest_dataset(self, role: str = "train") -> str | None:
        for d in reversed(self.datasets):
            if d.get("role") == role:
                return d["path"]
        return None

    def latest_run(self) -> dict | None:
        return self.runs[-1] if self.runs else None

    def step_status(self, key: str) -> str:
        if key in self.done:
            return "done"
        step = STEP_BY_KEY[key]
        if step.tool in RUN_TOOLS and any(r.get("tool") == step.tool and r.get("status") in ("queued", "running")
                                          for r in self.runs):
            return "running"
        return "todo"

    def next_step(self) -> Step:
        """The next step worth doing: data before training, a decision before training, evaluation after it."""
        if not self.datasets:
            return STEP_BY_KEY["audit"]
        for key in ("audit", "decide", "train", "evaluate", "export"):
            if self.step_status(key) == "todo":
                if key == "evaluate" and not self.runs:
                    continue
                return STEP_BY_KEY[key]
        return STEP_BY_KEY["evaluate"]

    def summary_lines(self) -> list[str]:
        out = [f"task: {self.task or '(not stated yet)'}", f"base model: {self.base_model}"]
        for role in ("train", "eval", "preferences"):
            if (p := self.latest_dataset(role)):
                out.append(f"{role} data: {p}")
        if self.decision:
            out.append(f"decision: {self.decision.get('summary') or self.decision.get('strategy') or self.decision}")
        if (run := self.latest_run()):
            out.append(f"latest run: {run.get('job_id')} ({run.get('tool')}, {run.get('status')})")
        out.append(f"next step: {self.next_step().key}")
        return out

    # --- writing --------------------------------------------------------------------------------------
    def add_dataset(self, path: str, role: str, source: str) -> None:
        self.datasets = [d for d in self.datasets if not (d["path"] == path and d["role"] == role)]
        self.datasets.append({"path": path, "role": role, "source": source})

    def record(self, tool: str, args: dict, output: dict | None) -> None:
        """Fold one successful tool call into the project."""
        output = output or {}
        step = STEP_BY_TOOL.get(tool)
        self._record_datasets(tool, args, output)
        if tool == "recommend_strategy" and isinstance(args.get("task"), str) and args["task"].strip():
            self.task = args["task"].strip()[:300]
        if self.task is None and (train := self.latest_dataset("train")):
            self.task = task_from_data(train)
        if (m := args.get("model") or args.get("base_model")) and tool in RUN_TOOLS | {"plan_training"}:
            self.base_model = str(m)
        if tool == "audit_dataset":
            self.audits.append({"at": _now(), "args": args, **{k: v for k, v in output.items()
                                                               if not isinstance(v, (list, dict)) or k == "summary"}})
        if tool == "recommend_strategy":
            self.decision = {"at": _now(), **output}
        if tool == "evaluate":
            self.evaluations.append({"at": _now(), "args": args, "output": output})
        if tool == "export_model":
            self.exports.append({"at": _now(), **output})
        job_id = output.get("job_id")
        if job_id and tool not in RUN_REFERENCING:
            run = {"job_id": job_id, "tool": tool, "status": output.get("status", "queued"),
                   **{k: output[k] for k in ("run_dir", "adapter_path", "model_dir") if output.get(k)}}
            self.runs = [r for r in self.runs if r.get("job_id") != job_id] + [run]
        if tool in ("run_status", "cancel_run", "resume_run") and job_id:
            self.update_run(job_id, output)
        if step and not (tool in RUN_TOOLS and output.get("status") not in ("succeeded", None)):
            self.done[step.key] = _now()

    def _record_datasets(self, tool: str, args: dict, output: dict) -> None:
        """Data sets the call named (arguments keep a known path's role) or produced (data-making tools only)."""
        from runtime.paths import in_data_dir

        named = [(v, DATA_ARGS[k]) for k, v in args.items() if k in DATA_ARGS]
        made = [(output.get(k), role) for k, role in DATA_OUTPUTS.get(tool, {}).items()]
        known = {d["path"] for d in self.datasets}
        for value, role in named + made:
            if not isinstance(value, str) or not value.lower().endswith(DATA_SUFFIXES) or in_data_dir(Path(value)):
                continue
            if role == "train" and (tool == "train_dpo" or
                                    (tool == "create_sample_dataset" and "preference" in str(args.get("task")))):
                role = "preferences"
            if (value, role) in named and value in known:
                continue  # naming a known file (auditing the eval set) does not change what it is
            self.add_dataset(value, role, tool)

    def update_run(self, job_id: str, info: dict) -> None:
        for r in self.runs:
            if r.get("job_id") == job_id:
                for k in ("status", "run_dir", "adapter_path", "model_dir"):
                    if info.get(k):
                        r[k] = info[k]
                step = STEP_BY_TOOL.get(r.get("tool", ""))
                if step and info.get("status") == "succeeded":
                    self.done[step.key] = _now()

    # --- forms ----------------------------------------------------------------------------------------
    def candidates(self) -> list[dict] | None:
        """The first session's comparison: the base model, the base with k demonstrations, the latest run."""
        run = self.latest_run() or {}
        out = [{"model": self.base_model, "name": "base"}]
        if self.latest_dataset("train"):
            out.append({"model": self.base_model, "few_shot": FEW_SHOT_K, "name": f"base {FEW_SHOT_K}-shot"})
        if run:
            out.append({"model": self.base_model, "adapter": run.get("adapter_path") or run.get("job_id"),
                        "name": "tuned"})
        return out if len(out) > 1 else None

    def prefill(self, input_model: type[BaseModel]) -> dict:
        """Values the project already knows for a tool's input fields (by field name)."""
        run = self.latest_run() or {}
        known: dict[str, Any] = {}
        for name in input_model.model_fields:
            n = name.lower()
            value: Any = None
            if n in ("path", "dataset", "dataset_path", "data_path", "train_path", "input_path", "train"):
                value = self.latest_dataset("train")
            elif n in ("eval_path", "test_path", "eval_dataset", "eval"):
                value = self.latest_dataset("eval")
            elif n in ("preferences_path", "pref_path", "preference_path"):
                value = self.latest_dataset("preferences")
            elif n in ("model", "base_model", "student", "student_model"):
                value = self.base_model
            elif n in ("job_id", "run_id", "run", "job"):
                value = run.get("job_id")
            elif n in ("adapter_path", "adapter", "run_dir"):
                value = run.get(n) or run.get("run_dir")
            elif n in ("task", "task_description", "description") and self.task:
                value = self.task
            elif n == "seeds_path":
                value = self.latest_dataset("train")
            elif n == "candidates":
                value = self.candidates()
            if value is not None and _fits(input_model.model_fields[name].annotation, value):
                known[name] = value
        return known


def _fits(annotation, value) -> bool:
    """Prefill only values the field accepts (a project task is no answer to a Literal field)."""
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(annotation).validate_python(value)
        return True
    except (ValidationError, TypeError, Exception):  # noqa: BLE001 - odd annotations just don't prefill
        return False


def task_from_data(path: str) -> str | None:
    """The task as the data states it: the first row's system message (conversational data), if any."""
    import json

    try:
        with Path(path).open() as f:
            row = json.loads(f.readline())
    except (OSError, ValueError):
        return None
    msgs = row.get("messages") or row.get("prompt") if isinstance(row, dict) else None
    if isinstance(msgs, list):
        for m in msgs:
            if isinstance(m, dict) and m.get("role") == "system" and isinstance(m.get("content"), str):
                return m["content"].strip()[:300] or None
    return None


# --- persistence ----------------------------------------------------------------------------------------

def load_project(conversation_id: str) -> Project:
    from runtime import store

    with store.session() as s:
        conv = s.get(store.Conversation, conversation_id)
        data = (conv.project if conv else None) or {}
    return Project.model_validate(data)


def save_project(conversation_id: str, project: Project) -> None:
    from runtime import store

    with store.session() as s:
        conv = s.get(store.Conversation, conversation_id)
        if conv is None:
            conv = store.Conversation(id=conversation_id)
        conv.project = project.model_dump(mode="json")
        conv.updated_at = store.utcnow()
        s.add(conv)


# --- reading the person's words ---------------------------------------------------------------------------

PATH_RE = re.compile(r"(?:\b[A-Za-z]:\\)?[\w./~\\-]+\.(?:jsonl|json|csv|parquet|txt)\b")   # also C:\data\t.csv
JOB_RE = re.compile(r"\b[0-9a-f]{12}\b")


def mentioned_paths(text: str) -> list[str]:
    return PATH_RE.findall(text or "")


def mentioned_job_ids(text: str) -> list[str]:
    return JOB_RE.findall(text or "")
