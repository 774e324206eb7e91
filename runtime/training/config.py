"""Typed run configs, one per training method (TRL's habit: a documented config per trainer).

The tool builds one from its validated input and the memory plan, the job row stores it (`model_dump`), and the
job process validates it again before anything loads (`RUN_CONFIGS[kind].model_validate(job.config)`), so a
config edited in the store or written by an older version fails with a clear error, never half-way.
Cross-field rules are validators here; the LoRA defaults live here alone. No torch import.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.dataio import check_columns
from runtime.errors import BadInput

# Upper bounds: a step count or batch beyond these is a typo, and 2e20 steps overflowed SQLite's INTEGER.
MAX_STEPS = 10_000_000
MAX_BATCH = 4096
MAX_LENGTH = 1_048_576
LORA_R, LORA_ALPHA, LORA_DROPOUT = 16, 32, 0.05
# A row's text beyond this many bytes per token of max_length is too long before any tokenizer sees it
# (a token is rarely more than a few bytes): per-row work stays bounded (a 50 MB row once took 12 GB).
BYTES_PER_TOKEN = 16


class RunConfig(BaseModel):
    """What every training job shares. Fields a job adds on resume (`resume`, `attempts`) are part of it."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: ClassVar[str]
    default_learning_rate: ClassVar[float] = 2e-4

    model: str = "default"
    train_path: str
    eval_path: str | None = None
    columns: dict[str, str] | None = Field(None, description="role -> column name for the loader")
    learning_rate: float | None = Field(None, gt=0, description="default per method (a validator fills it)")
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    epochs: float = Field(1.0, gt=0, le=10_000)
    batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH)
    eval_batch_size: int | None = Field(None, ge=1, le=MAX_BATCH)
    max_length: int = Field(512, ge=16, le=MAX_LENGTH)
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    lora_r: int = Field(LORA_R, ge=1, le=4096)
    lora_alpha: int = Field(LORA_ALPHA, ge=1, le=65536)
    lora_dropout: float = Field(LORA_DROPOUT, ge=0, lt=1)
    lora_targets: list[str] | None = None
    save_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    save_total_limit: int = Field(2, ge=1)
    keep_checkpoints: bool = False
    eval_steps: int | None = Field(None, ge=1, le=MAX_STEPS)
    eval_before: bool = True
    eval_rows: int | None = Field(None, ge=0, description="held-out rows scored for eval loss; None: sized to "
                                  "the machine, 0: none")
    num_processes: int = Field(1, ge=1, le=64)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    lr_scheduler: str = "linear"
    warmup_steps: int = Field(0, ge=0)
    too_long: Literal["truncate", "refuse"] = "truncate"
    preflight: bool | None = Field(None, description="measure a few steps at the planned shape first; None: "
                                   "only for long runs")
    plan: dict | None = None
    resume: bool = False
    attempts: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _defaults(self):
        if self.learning_rate is None:
            self.learning_rate = self.default_lr()
        try:
            check_columns(self.columns)  # runtime.dataio's rule for a columns mapping
        except BadInput as e:
            raise ValueError(e.message) from None
        return self

    def default_lr(self) -> float:
        return self.default_learning_rate

    @property
    def max_row_bytes(self) -> int:
        return self.max_length * BYTES_PER_TOKEN

    @property
    def uses_lora(self) -> bool:
        return True

    @property
    def load_method(self) -> str:
        """How the base model is loaded: lora (dense), qlora (4-bit nf4) or full."""
        return "lora"

    @property
    def save_every(self) -> int:
        if self.save_steps:
            return self.save_steps
        return max(10, self.max_steps // 4) if self.max_steps else 50


class SFTRun(RunConfig):
    """train_sft: TRL SFTTrainer, loss on the answers only."""

    kind: ClassVar[str] = "train_sft"
    method: Literal["lora", "qlora", "full"] = "lora"
    packing: bool = False

    def default_lr(self) -> float:
        return 2e-5 if self.method == "full" else 2e-4

    @property
    def uses_lora(self) -> bool:
        return self.method != "full"

    @property
    def load_method(self) -> str:
        return self.method


class PreferenceRun(RunConfig):
    """train_dpo: DPO (loss dpo/ipo/hinge), KTO or ORPO with LoRA; the reference is the adapter-disabled model."""

    kind: ClassVar[str] = "train_dpo"
    default_learning_rate: ClassVar[float] = 5e-5
    method: Literal["dpo", "kto", "orpo"] = "dpo"
    loss: Literal["dpo", "ipo", "hinge"] = "dpo"
    beta: float = Field(0.1, gt=0)
    adapter_path: str | None = None
    quantize: bool = False

    @model_validator(mode="after")
    def _loss_only_for_dpo(self):
        if self.loss != "dpo" and self.method != "dpo":
            raise ValueError(f"loss {self.loss!r} applies to method dpo, not {self.method}")
        return self

    @property
    def load_method(self) -> str:
        return "qlora" if self.quantize else "lora"

    @property
    def job_method(self) -> str:
        """The name the job row and the result carry: the DPO loss for dpo, else the method."""
        return self.loss if self.method == "dpo" else self.method


class DistillRun(RunConfig):
    """distill: teacher -> student with the same tokenizer (logit KD, on-policy GKD or sequence-level KD)."""

    kind: ClassVar[str] = "distill"
    default_learning_rate: ClassVar[float] = 1e-4
    mode: Literal["logit", "gkd", "sequence"] = "logit"
    student: str | None = None
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(32, ge=1, le=4096)
    lmbda: float = Field(0.5, ge=0, le=1, description="gkd: share of on-policy (student-generated) answers")
    beta: float = Field(0.5, ge=0, le=1, description="gkd: generalized JSD interpolation")

    @property
    def uses_lora(self) -> bool:
        return False

    @property
    def load_method(self) -> str:
        return "full"


RUN_CONFIGS: dict[str, type[RunConfig]] = {c.kind: c for c in (SFTRun, PreferenceRun, DistillRun)}
