"""Training tools: plan_training, train_sft, train_dpo, distill, export_model, and the run controls
list_runs, run_status, cancel_run, resume_run.

Training tools start a job (its own OS process, see runtime/jobs.py) and return its id at once, or wait for it
when `wait` is true (a progress line with step, loss and ETA goes to stderr; the JSON result stays on stdout).
No torch/transformers import at module level: tools are listed at start-up.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from tools.registry import ToolInput, tool

Method = Literal["lora", "qlora", "full"]


# --- shared ---------------------------------------------------------------------------------------------

class RunOutput(BaseModel):
    job_id: str
    status: str = Field(description="queued | running | succeeded | failed | cancelled")
    run_dir: str
    log_path: str | None = None
    metrics_path: str | None = None
    adapter_path: str | None = Field(None, description="PEFT adapter dir (lora/qlora/dpo) once succeeded")
    model_dir: str | None = Field(None, description="full weights dir (full fine-tuning, distillation) once succeeded")
    metrics: dict = Field(default_factory=dict, description="final train loss, eval loss before/after, ...")
    plan: dict | None = Field(None, description="the memory plan the run was sized with")
    error: str | None = None


class ProgressPrinter:
    """A one-line progress bar on stderr: step/total, loss, s/step, ETA."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_text = ""
        self._last_t = 0.0

    def __call__(self, job, metric: dict | None) -> None:
        step, total = job.step or 0, job.total_steps or 0
        loss = metric.get("loss") if metric else None
        sps = metric.get("s_per_step") if metric else None
        eta = f"{(total - step) * sps:.0f}s" if sps and total else "?"
        width = 24
        filled = int(width * step / total) if total else 0
        bar = "#" * filled + "-" * (width - filled)
        text = (f"[{bar}] {job.id} {job.status} step {step}/{total or '?'}"
                + (f" loss {loss:.4f}" if isinstance(loss, (int, float)) else "") + f" eta {eta}")
        now = time.monotonic()
        if text == self._last_text or (not self.tty and now - self._last_t < 5 and job.status == "running"):
            return
        self._last_text, self._last_t = text, now
        self.stream.write(("\r" + text.ljust(100)) if self.tty else text + "\n")
        if self.tty and job.status in ("succeeded", "failed", "cancelled"):
            self.stream.write("\n")
        self.stream.flush()


def run_output(job, plan: dict | None = None) -> RunOutput:
    result = job.result or {}
    return RunOutput(job_id=job.id, status=job.status, run_dir=job.run_dir, log_path=job.log_path,
                     metrics_path=job.metrics_path, adapter_path=result.get("adapter_path"),
                     model_dir=result.get("model_dir"), metrics=result.get("metrics") or {},
                     plan=plan or (job.config or {}).get("plan"), error=job.error)


def start_and_maybe_wait(kind: str, method: str, model: str, dataset: str | None, config: dict, wait: bool,
                         timeout_s: float | None) -> Any:
    from runtime import jobs

    job = jobs.create_job(kind, method=method, model=model, dataset=dataset, config=config)
    if wait:
        job = jobs.wait_job(job.id, timeout=timeout_s, on_progress=ProgressPrinter())
    return job


def _check_inputs(model: str, *paths: str | None) -> str:
    from runtime.models import resolve_model
    from runtime.paths import resolve_path

    for p in paths:
        if p:
            resolve_path(p, must_exist=True)
    return resolve_model(model).path


def _check_format(path: str | None, kinds: set[str], what: str, allow_labels: bool = False) -> None:
    """Refuse a dataset of the wrong kind (e.g. SFT rows for DPO) before any job starts (runtime.dataio detects it)."""
    if not path:
        return
    from runtime.dataio import detect_format, iter_records, kind_of
    from runtime.errors import BadInput
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    fmt = detect_format(p, sample=50)
    if kind_of(fmt) in kinds:
        return
    if allow_labels:
        first = next((r for _, r in iter_records(p) if isinstance(r, dict)), None)
        if first and {"prompt", "completion", "label"} <= set(first):
            return
    raise BadInput(f"{p.name} looks like {fmt} data; {what} needs {' or '.join(sorted(kinds))} data",
                   hint="SFT takes messages, prompt/completion or text rows; DPO takes prompt/chosen/rejected "
                        "(TRL's formats; Alpaca and ShareGPT are imported).", code="bad_dataset_format")


class TrainCommon(ToolInput):
    model: str = Field("default", description="model name (`default` = bundled SmolLM2-135M-Instruct) or a local dir")
    learning_rate: float | None = Field(None, gt=0, description="default: 2e-4 for lora/qlora, 2e-5 for full")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs")
    epochs: float = Field(1.0, gt=0, description="passes over the data when max_steps is not set")
    batch_size: int | None = Field(None, ge=1, description="per-device batch; default from the memory plan (8 here)")
    grad_accum: int | None = Field(None, ge=1, description="gradient accumulation; default from the memory plan")
    max_length: int = Field(512, ge=16, description="tokens per example (longer ones are truncated)")
    gradient_checkpointing: bool | None = Field(None, description="default: only when the memory plan needs it")
    lora_r: int = Field(16, ge=1, description="LoRA rank")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout")
    lora_targets: list[str] | None = Field(None, description="module names for LoRA; default all linear layers")
    save_steps: int | None = Field(None, ge=1, description="checkpoint every N steps (default max(10, steps/4))")
    eval_steps: int | None = Field(None, ge=1, description="evaluate every N steps (default: before and after only)")
    num_processes: int = Field(1, ge=1, le=64, description="processes under `accelerate launch` (DDP); 1 = plain")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 only where the hardware has it natively (probe), else fp32")
    seed: int = 0
    wait: bool = Field(False, description="block until the job ends and return its result")
    timeout_s: float | None = Field(None, gt=0, description="with wait: give up waiting after this many seconds")


def _planned(args: TrainCommon, kind: str, method: str, train_path: str | None, model_path: str) -> tuple[dict, dict]:
    """Resolve batch size / accumulation / checkpointing from the memory plan unless given."""
    from runtime.planning import plan_for

    plan = plan_for(model_path, method if method in ("lora", "qlora", "full") else "lora",
                    seq_len=args.max_length, train_path=train_path, batch_size=args.batch_size,
                    gradient_checkpointing=args.gradient_checkpointing, lora_r=args.lora_r)
    cfg = {"batch_size": args.batch_size or plan["batch_size"], "grad_accum": args.grad_accum or plan["grad_accum"],
           "gradient_checkpointing": plan["gradient_checkpointing"] if args.gradient_checkpointing is None
           else args.gradient_checkpointing}
    return cfg, plan


def _base_config(args: TrainCommon, method: str) -> dict:
    lr = args.learning_rate or (2e-5 if method == "full" else 2e-4)
    return {"model": args.model, "learning_rate": lr, "max_steps": args.max_steps, "epochs": args.epochs,
            "max_length": args.max_length, "lora_r": args.lora_r, "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout, "lora_targets": args.lora_targets, "save_steps": args.save_steps,
            "eval_steps": args.eval_steps, "num_processes": args.num_processes, "seed": args.seed,
            "precision": args.precision}


# --- train_sft ------------------------------------------------------------------------------------------

class TrainSFTInput(TrainCommon):
    train_path: str = Field(description="training data (JSONL/CSV/Parquet) in TRL's formats: messages, "
                                        "prompt/completion, or text")
    eval_path: str | None = Field(None, description="held-out data in the same format (eval loss before/after)")
    method: Method = Field("lora", description="lora | qlora (4-bit nf4, double quant) | full")


@tool("train_sft", "Supervised fine-tuning (LoRA, QLoRA or full) as a background job; loss on answers only.",
      cost="cpu_job")
def train_sft(args: TrainSFTInput) -> RunOutput:
    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"sft", "text"}, "train_sft")
    cfg = _base_config(args, args.method)
    planned, plan = _planned(args, "train_sft", args.method, args.train_path, model_path)
    cfg.update(planned, train_path=args.train_path, eval_path=args.eval_path, plan=plan)
    job = start_and_maybe_wait("train_sft", args.method, args.model, args.train_path, cfg, args.wait, args.timeout_s)
    return run_output(job, plan)


# --- run controls ---------------------------------------------------------------------------------------

class ListRunsInput(ToolInput):
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"] | None = Field(
        None, description="only runs with this status")
    limit: int = Field(20, ge=1, le=500)


class RunSummary(BaseModel):
    job_id: str
    kind: str
    method: str | None
    status: str
    model: str | None
    step: int | None
    total_steps: int | None
    created_at: str
    metrics: dict = Field(default_factory=dict)
    error: str | None = None


class ListRunsOutput(BaseModel):
    runs: list[RunSummary]


@tool("list_runs", "List training runs (jobs) with status, step and final metrics, newest first.", cost="instant")
def list_runs(args: ListRunsInput) -> ListRunsOutput:
    from runtime import jobs

    jobs.refresh()
    rows = jobs.list_jobs(status=args.status, limit=args.limit)
    return ListRunsOutput(runs=[RunSummary(job_id=j.id, kind=j.kind, method=j.method, status=j.status, model=j.model,
                                           step=j.step, total_steps=j.total_steps, created_at=j.created_at.isoformat(),
                                           metrics=(j.result or {}).get("metrics") or {}, error=j.error)
                                for j in rows])


class RunIdInput(ToolInput):
    job_id: str = Field(description="the run's job id")


class RunStatusOutput(BaseModel):
    job: dict = Field(description="the Job row (status, step, total_steps, pid, paths, config, result, error)")
    last_metrics: dict | None = Field(None, description="the last metrics line with a training loss")
    eta_s: float | None = None
    checkpoint: str | None = Field(None, description="the last checkpoint (what resume continues from)")


@tool("run_status", "A run's job row, its last metrics (step, loss, tokens/s, memory), ETA and last checkpoint.",
      cost="instant")
def run_status(args: RunIdInput) -> RunStatusOutput:
    from runtime import jobs

    jobs.refresh()
    job = jobs.get_job(args.job_id)
    last = jobs.last_metric(job)
    eta = None
    if job.status == "running" and last and last.get("s_per_step") and job.total_steps:
        eta = round((job.total_steps - (job.step or 0)) * last["s_per_step"], 1)
    ckpt = jobs.last_checkpoint(job)
    return RunStatusOutput(job=jobs.job_summary(job), last_metrics=last, eta_s=eta,
                           checkpoint=str(ckpt) if ckpt else None)


class RunControlOutput(BaseModel):
    job_id: str
    status: str
    checkpoint: str | None = None
    error: str | None = None


@tool("cancel_run", "Cancel a queued or running job; a running one saves a checkpoint before it stops.",
      cost="destructive")
def cancel_run(args: RunIdInput) -> RunControlOutput:
    from runtime import jobs

    job = jobs.cancel_job(args.job_id)
    ckpt = jobs.last_checkpoint(job)
    return RunControlOutput(job_id=job.id, status=job.status, checkpoint=str(ckpt) if ckpt else None, error=job.error)


class ResumeRunInput(RunIdInput):
    wait: bool = Field(False, description="block until the resumed job ends")
    timeout_s: float | None = Field(None, gt=0)


@tool("resume_run", "Resume a failed or cancelled run from its last checkpoint (same step and data position).",
      cost="cpu_job")
def resume_run(args: ResumeRunInput) -> RunOutput:
    from runtime import jobs

    job = jobs.resume_job(args.job_id)
    if args.wait:
        job = jobs.wait_job(job.id, timeout=args.timeout_s, on_progress=ProgressPrinter())
    return run_output(job)


# --- train_dpo ------------------------------------------------------------------------------------------

class TrainDPOInput(TrainCommon):
    train_path: str = Field(description="preference data: prompt, chosen, rejected (strings or conversations); "
                                        "for kto also prompt, completion, label")
    eval_path: str | None = Field(None, description="held-out pairs: preference accuracy before/after")
    method: Literal["dpo", "kto", "orpo"] = Field(
        "dpo", description="dpo (with `loss`), kto (unpaired good/bad labels), orpo (no reference model)")
    loss: Literal["dpo", "ipo", "hinge"] = Field("dpo", description="the DPO loss: dpo (sigmoid), ipo or hinge")
    beta: float = Field(0.1, gt=0, description="strength of the pull towards the reference model")
    adapter_path: str | None = Field(None, description="an SFT adapter to start from (it becomes the reference)")
    quantize: bool = Field(False, description="load the base in 4-bit nf4 (QLoRA-style DPO)")


@tool("train_dpo", "Preference tuning (DPO/IPO/hinge, KTO, ORPO) with LoRA as a background job; the reference "
      "is the adapter-disabled model.", cost="cpu_job")
def train_dpo(args: TrainDPOInput) -> RunOutput:
    from runtime.paths import resolve_path

    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"preference"}, f"train_dpo ({args.method})", allow_labels=args.method == "kto")
    if args.adapter_path:
        ap = resolve_path(args.adapter_path, must_exist=True)
        if not (ap / "adapter_config.json").exists():
            from runtime.errors import BadInput

            raise BadInput(f"{ap} is not a PEFT adapter dir (no adapter_config.json)",
                           hint="Pass the adapter_path a train_sft run returned.")
    base_method = "qlora" if args.quantize else "lora"
    if args.learning_rate is None:
        args.learning_rate = 5e-5
    cfg = _base_config(args, base_method)
    planned, plan = _planned(args, "train_dpo", base_method, None, model_path)
    if args.batch_size is None:  # a pair is two sequences
        planned["batch_size"] = max(1, planned["batch_size"] // 2)
        planned["grad_accum"] = max(1, planned["grad_accum"])
    method = args.method if args.method != "dpo" else args.loss
    cfg.update(planned, train_path=args.train_path, eval_path=args.eval_path, plan=plan, beta=args.beta,
               loss=args.loss, adapter_path=args.adapter_path, base_method=base_method)
    job = start_and_maybe_wait("train_dpo", method, args.model, args.train_path, cfg, args.wait, args.timeout_s)
    return run_output(job, plan)


# --- distill --------------------------------------------------------------------------------------------

class DistillInput(TrainCommon):
    train_path: str = Field(description="prompts with answers (messages or prompt/completion); for `sequence` "
                                        "only the prompts are used and the teacher writes the answers")
    eval_path: str | None = Field(None, description="held-out rows: the student's KL to the teacher before/after")
    student: str | None = Field(None, description="a student model with the teacher's tokenizer; default: the "
                                                  "teacher with every other layer")
    mode: Literal["logit", "gkd", "sequence"] = Field(
        "logit", description="logit: forward KL on the answers (off-policy); gkd: TRL's on-policy GKD; "
                             "sequence: the teacher generates answers, the student trains on them")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the distillation loss")
    max_new_tokens: int = Field(32, ge=1, le=4096, description="answer length for teacher/student generation")


@tool("distill", "Distil a teacher into a smaller student (logit KD, on-policy GKD or sequence-level KD) as a "
      "background job.", cost="cpu_job")
def distill(args: DistillInput) -> RunOutput:
    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    if args.student:
        _check_inputs(args.student)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"sft"}, "distill")
    if args.learning_rate is None:
        args.learning_rate = 1e-4
    cfg = _base_config(args, "full")
    planned, plan = _planned(args, "distill", "full", args.train_path, model_path)
    cfg.update(planned, train_path=args.train_path, eval_path=args.eval_path, plan=plan, student=args.student,
               temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    job = start_and_maybe_wait("distill", args.mode, args.model, args.train_path, cfg, args.wait, args.timeout_s)
    return run_output(job, plan)


# --- plan_training --------------------------------------------------------------------------------------

class PlanTrainingInput(ToolInput):
    model: str = Field("default", description="model name or local dir")
    method: Method = Field("lora", description="lora | qlora | full")
    max_length: int = Field(512, ge=16, description="tokens per example (cap)")
    train_path: str | None = Field(None, description="dataset for token statistics (rows, mean/p95/max tokens)")
    batch_size: int | None = Field(None, ge=1, description="fix the batch size instead of choosing one")
    gradient_checkpointing: bool | None = Field(None, description="force checkpointing on/off (default: only if needed)")
    lora_r: int = Field(16, ge=1)
    budget_mb: float | None = Field(None, gt=0, description="memory budget (default: 90% of GPU memory, or 60% of RAM)")
    max_steps: int | None = Field(None, ge=1)
    epochs: float = Field(1.0, gt=0)


class PlanTrainingOutput(BaseModel):
    fits: bool
    method: str = Field(description="the method that fits (qlora when the asked one does not)")
    precision: str
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate: dict = Field(description="peak memory in MB by part: framework, weights, optimizer, activations, logits")
    budget_mb: float
    expected_steps: int | None = None
    expected_minutes: float | None = None
    token_stats: dict | None = None
    notes: list[str] = Field(default_factory=list)


@tool("plan_training", "Estimate peak memory for a training run and choose a config that fits this machine.",
      cost="instant")
def plan_training(args: PlanTrainingInput) -> PlanTrainingOutput:
    from runtime.planning import plan_for

    model_path = _check_inputs(args.model, args.train_path)
    plan = plan_for(model_path, args.method, seq_len=args.max_length, train_path=args.train_path,
                    batch_size=args.batch_size, gradient_checkpointing=args.gradient_checkpointing,
                    lora_r=args.lora_r, budget_mb=args.budget_mb, max_steps=args.max_steps, epochs=args.epochs)
    return PlanTrainingOutput(**{k: plan.get(k) for k in PlanTrainingOutput.model_fields if k in plan})

