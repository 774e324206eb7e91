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

from runtime.training.config import LORA_ALPHA, LORA_DROPOUT, LORA_R, MAX_BATCH, MAX_LENGTH, MAX_STEPS
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
        eta_s = (metric or {}).get("eta_s")
        eta = f"{eta_s:.0f}s" if eta_s is not None else (f"{(total - step) * sps:.0f}s" if sps and total else "?")
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


def start_and_maybe_wait(config, model: str, wait: bool, timeout_s: float | None, method: str) -> Any:
    from runtime import jobs

    job = jobs.create_job(config.kind, method=method, model=model, dataset=config.train_path,
                          config=config.model_dump(mode="json"))
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
    learning_rate: float | None = Field(None, gt=0, description="default: sized to the model and LoRA rank for SFT "
                                        "(1e-3 for the bundled model), 2e-5 for full")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="optimizer steps; overrides epochs")
    epochs: float | None = Field(None, gt=0, le=10_000, description="passes over the data when max_steps is not "
                                 "set; default: enough that each label is seen about 12 times (1 to 4)")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH,
                                   description="per-device batch; default from the memory plan (8 here)")
    grad_accum: int | None = Field(None, ge=1, le=MAX_BATCH, description="gradient accumulation; default from the "
                                   "memory plan")
    max_length: int | None = Field(None, ge=16, le=MAX_LENGTH, description="tokens per example (longer ones are "
                                   "truncated); default: from the data's longest rows")
    gradient_checkpointing: bool | None = Field(None, description="default: only when the memory plan needs it")
    lora_r: int = Field(LORA_R, ge=1, le=4096, description="LoRA rank")
    lora_alpha: int = Field(LORA_ALPHA, ge=1, le=65536, description="LoRA alpha")
    lora_dropout: float = Field(LORA_DROPOUT, ge=0, lt=1, description="LoRA dropout")
    lora_targets: list[str] | None = Field(None, description="module names for LoRA; default all linear layers")
    save_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="checkpoint every N steps (default "
                                   "max(10, steps/4))")
    eval_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="evaluate every N steps (default: before "
                                   "and after only)")
    num_processes: int = Field(1, ge=1, le=64, description="processes under `accelerate launch` (DDP); 1 = plain")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 only where the hardware has it natively (probe), else fp32")
    seed: int = 0
    columns: dict[str, str] | None = Field(None, description="which column holds each role (keys among prompt, "
                                           "completion, system, chosen, rejected), for data in other layouts")
    too_long: Literal["truncate", "refuse"] = Field(
        "truncate", description="rows longer than max_length: truncate them, or refuse the run naming them")
    eval_rows: int | None = Field(None, ge=0, description="held-out rows scored before/after; default: as many as "
                                  "take about 30 s each time here (the result says how many); 0: none")
    preflight: bool | None = Field(None, description="measure a few steps at the planned shape before training "
                                   "(peak memory, real tokens/s, ETA; corrects the batch if it would not fit); "
                                   "default: for runs of 100 steps or more")
    wait: bool = Field(False, description="block until the job ends and return its result")
    timeout_s: float | None = Field(None, gt=0, description="with wait: give up waiting after this many seconds")


# Tool fields that go into every run config as they are.
CONFIG_FIELDS = ("model", "learning_rate", "max_steps", "epochs", "max_length", "lora_r", "lora_alpha",
                 "lora_dropout", "lora_targets", "save_steps", "eval_steps", "num_processes", "precision", "seed",
                 "columns", "too_long", "eval_rows", "preflight", "train_path", "eval_path")


def build_config(config_cls, args: TrainCommon, model_path: str, plan_method: str, **fields):
    """The run's typed config: the tool's fields, the memory plan's batch/accumulation/checkpointing where the
    person named none, the SFT defaults (runtime/training/defaults.py) where they named none, and the method's own
    fields. Its validators are the cross-field rules."""
    from pydantic import ValidationError

    from runtime.errors import BadInput
    from runtime.planning import plan_for
    from runtime.training import defaults

    pairs = config_cls.kind == "train_dpo"  # a preference row is two sequences: half the batch
    sft = config_cls.kind == "train_sft"
    chosen, data = {}, None
    epochs = args.epochs or 1.0
    if sft:
        from runtime.paths import resolve_path

        data = defaults.profile(str(resolve_path(args.train_path, must_exist=True)), args.columns)
        if args.epochs is None and args.max_steps is None:
            epochs = chosen["epochs"] = defaults.epochs_for(data)
    seq_len = args.max_length or (defaults.LENGTH_CAP if sft else 512)
    plan = plan_for(model_path, plan_method, seq_len=seq_len, train_path=None if pairs else args.train_path,
                    batch_size=args.batch_size, gradient_checkpointing=args.gradient_checkpointing,
                    lora_r=args.lora_r, max_steps=args.max_steps, epochs=epochs, columns=args.columns,
                    answers_only=sft)
    batch = args.batch_size or (max(1, plan["batch_size"] // 2) if pairs else plan["batch_size"])
    values = {k: getattr(args, k) for k in CONFIG_FIELDS}
    values.update(epochs=epochs, max_length=seq_len)
    if sft:
        if args.max_length is None:
            measured = defaults.max_length_for((plan.get("token_stats") or {}).get("max_tokens"))
            values["max_length"] = chosen["max_length"] = measured or 512
        if args.learning_rate is None and fields.get("method") != "full":
            values["learning_rate"] = chosen["learning_rate"] = defaults.lora_learning_rate(
                plan["shape"]["hidden"], args.lora_r, args.lora_alpha)
        values["warmup_steps"] = chosen["warmup_steps"] = defaults.warmup_for(args.max_steps
                                                                              or plan.get("expected_steps"))
        plan["defaults"] = {"chosen": chosen, "rows": data.rows,
                            "labels": len(data.label_counts) if data.label_counts else None,
                            "median_label_count": data.median_label_count}
    values.update(batch_size=batch, grad_accum=args.grad_accum or plan["grad_accum"],
                  gradient_checkpointing=plan["gradient_checkpointing"] if args.gradient_checkpointing is None
                  else args.gradient_checkpointing,
                  group_by_length=plan.get("group_by_length", False), plan=plan, **fields)
    try:
        return config_cls(**values)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}" for err in e.errors())
        raise BadInput(problems, hint="Fix these arguments and call again.", code="validation_error") from None


# --- train_sft ------------------------------------------------------------------------------------------

class TrainSFTInput(TrainCommon):
    train_path: str = Field(description="training data (JSONL/CSV/Parquet) in TRL's formats: messages, "
                                        "prompt/completion, or text")
    eval_path: str | None = Field(None, description="held-out data in the same format (eval loss before/after)")
    method: Method = Field("lora", description="lora | qlora (4-bit nf4, double quant) | full")


@tool("train_sft", "Supervised fine-tuning (LoRA, QLoRA or full) as a background job; loss on answers only.",
      cost="cpu_job")
def train_sft(args: TrainSFTInput) -> RunOutput:
    from runtime.training.config import SFTRun

    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"sft", "text"}, "train_sft")
    config = build_config(SFTRun, args, model_path, args.method, method=args.method)
    job = start_and_maybe_wait(config, args.model, args.wait, args.timeout_s, args.method)
    return run_output(job, config.plan)


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
    tokens_per_s: float | None = Field(None, description="real (non-padding) input tokens per second, lately")
    label_tokens_per_s: float | None = Field(None, description="answer tokens the loss is on, per second, lately")
    preflight: dict | None = Field(None, description="the pre-flight's measured peak memory, tokens/s, ETA and any "
                                   "correction of the plan")


@tool("run_status", "A run's job row, its last metrics (step, loss, real tokens/s, memory), ETA, pre-flight and "
      "last checkpoint.", cost="instant")
def run_status(args: RunIdInput) -> RunStatusOutput:
    from runtime import jobs

    jobs.refresh()
    job = jobs.get_job(args.job_id)
    last = jobs.last_metric(job) or {}
    final = (job.result or {}).get("metrics") or {}
    eta = None
    if job.status == "running" and last.get("eta_s") is not None:
        eta = last["eta_s"]  # from the mean step time since training began
    elif job.status == "running" and last.get("s_per_step") and job.total_steps:
        eta = round((job.total_steps - (job.step or 0)) * last["s_per_step"], 1)
    ckpt = jobs.last_checkpoint(job)
    return RunStatusOutput(job=jobs.job_summary(job), last_metrics=last or None, eta_s=eta,
                           checkpoint=str(ckpt) if ckpt else None,
                           tokens_per_s=last.get("tokens_per_s", final.get("tokens_per_s")),
                           label_tokens_per_s=last.get("label_tokens_per_s", final.get("label_tokens_per_s")),
                           preflight=(job.result or {}).get("preflight"))


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
    from runtime.models import resolve_adapter
    from runtime.training.config import PreferenceRun

    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"preference"}, f"train_dpo ({args.method})", allow_labels=args.method == "kto")
    if args.adapter_path:
        resolve_adapter(args.adapter_path)  # an adapter dir, with safetensors and a base model tools may read
    config = build_config(PreferenceRun, args, model_path, "qlora" if args.quantize else "lora", method=args.method,
                          loss=args.loss, beta=args.beta, adapter_path=args.adapter_path, quantize=args.quantize)
    job = start_and_maybe_wait(config, args.model, args.wait, args.timeout_s, config.job_method)
    return run_output(job, config.plan)


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
    from runtime.training.config import DistillRun

    model_path = _check_inputs(args.model, args.train_path, args.eval_path)
    if args.student:
        _check_inputs(args.student)
    for p in (args.train_path, args.eval_path):
        _check_format(p, {"sft"}, "distill")
    config = build_config(DistillRun, args, model_path, "full", mode=args.mode, student=args.student,
                          temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    job = start_and_maybe_wait(config, args.model, args.wait, args.timeout_s, args.mode)
    return run_output(job, config.plan)


# --- plan_training --------------------------------------------------------------------------------------

class PlanTarget(ToolInput):
    device: Literal["cuda", "cpu"] | None = Field(None, description="default: this machine's")
    gpu_memory_gb: float | None = Field(None, gt=0, le=100_000, description="one card's memory (default: this "
                                        "machine's card, or 80 GB)")
    gpu_count: int | None = Field(None, ge=1, le=1024, description="cards (data parallel: each holds a copy)")
    bf16: bool | None = Field(None, description="default: what the device supports (every recent GPU)")


class PlanTrainingInput(ToolInput):
    model: str = Field("default", description="model name or local dir (config.json is enough)")
    method: Method = Field("lora", description="lora | qlora | full")
    max_length: int = Field(512, ge=16, le=MAX_LENGTH, description="tokens per example (cap)")
    train_path: str | None = Field(None, description="dataset for token statistics (rows, mean/p95/max tokens)")
    columns: dict[str, str] | None = Field(None, description="which column holds each role, as for train_sft")
    batch_size: int | None = Field(None, ge=1, le=MAX_BATCH, description="fix the batch size instead of choosing "
                                   "one")
    gradient_checkpointing: bool | None = Field(None, description="force checkpointing on/off (default: only if needed)")
    lora_r: int = Field(LORA_R, ge=1, le=4096)
    budget_mb: float | None = Field(None, gt=0, description="memory budget (default: what the allocator can use "
                                    "on the target card, or 60% of RAM)")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    epochs: float = Field(1.0, gt=0, le=10_000)
    target: PlanTarget | None = Field(None, description="plan for another machine, e.g. {\"device\": \"cuda\", "
                                      "\"gpu_memory_gb\": 24}; default: this one")


class PlanTrainingOutput(BaseModel):
    fits: bool
    method: str = Field(description="the method that fits (qlora when the asked one does not)")
    precision: str
    batch_size: int
    grad_accum: int
    gradient_checkpointing: bool
    estimate: dict = Field(description="peak memory in MB by part: framework, weights, optimizer, activations, "
                           "logits; total_mb predicts torch.cuda.max_memory_allocated on CUDA, peak RSS on a CPU")
    budget_mb: float
    reason: str | None = Field(None, description="why this batch, accumulation and checkpointing")
    target: dict | None = Field(None, description="the machine planned for")
    seq_len: int | None = Field(None, description="the longest padded batch's length the estimate is for")
    group_by_length: bool = False
    expected_steps: int | None = None
    expected_s_per_step: float | None = None
    expected_minutes: float | None = None
    token_stats: dict | None = None
    notes: list[str] = Field(default_factory=list)


@tool("plan_training", "Estimate peak memory for a training run and choose a config that fits this machine or a "
      "named target (e.g. one 24 GB GPU).", cost="instant")
def plan_training(args: PlanTrainingInput) -> PlanTrainingOutput:
    from runtime.planning import plan_for

    model_path = _check_inputs(args.model, args.train_path)
    plan = plan_for(model_path, args.method, seq_len=args.max_length, train_path=args.train_path,
                    batch_size=args.batch_size, gradient_checkpointing=args.gradient_checkpointing,
                    lora_r=args.lora_r, budget_mb=args.budget_mb, max_steps=args.max_steps, epochs=args.epochs,
                    columns=args.columns, target=args.target.model_dump(exclude_none=True) if args.target else None,
                    answers_only=True)   # the plan of an SFT run (train_sft's methods)
    return PlanTrainingOutput(**{k: plan.get(k) for k in PlanTrainingOutput.model_fields if k in plan})

