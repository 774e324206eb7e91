"""Shared pieces of the training recipes: the job context, cancellation, data loading (rows bounded before any
tokenizer sees them), model loading, and training arguments chosen from the hardware (never library defaults)."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.errors import BadInput
from runtime.training.config import RunConfig

CANCEL = threading.Event()
IN_TRAINING_LOOP = threading.Event()


class Cancelled(BaseException):
    """SIGTERM outside the training loop (loading, data preparation, evaluation before): stop at once."""


def install_signal_handlers() -> None:
    """SIGTERM (cancel): inside the training loop the callback saves a checkpoint at the current step and stops;
    before it (loading, tokenizing) there is nothing to save, so the job stops where it is."""

    def on_term(signum, _frame):
        CANCEL.set()
        if not IN_TRAINING_LOOP.is_set():
            raise Cancelled()

    signal.signal(signal.SIGTERM, on_term)


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


@dataclass
class JobContext:
    job_id: str
    kind: str
    method: str | None
    config: RunConfig
    run_dir: Path
    metrics_path: str
    device: str
    resume_from: str | None = None
    result: dict = field(default_factory=dict)

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "checkpoints"


# --- data ------------------------------------------------------------------------------------------------

def load_rows(path: str, columns: dict[str, str] | None = None):
    """A datasets.Dataset in TRL's format from any file runtime.dataio reads (imports converted)."""
    from runtime import dataio
    from runtime.paths import resolve_path

    p = resolve_path(path, must_exist=True)
    # `columns` is the data helper's mapping (issue 10); passed only when set, so older loaders still work.
    return dataio.load_dataset(str(p), **({"columns": columns} if columns else {}))


def text_bytes(value: Any) -> int:
    """UTF-8 bytes of the text in a value (a string, messages, or lists of them)."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if isinstance(value, list):
        return sum(text_bytes(v) for v in value)
    if isinstance(value, dict):
        return text_bytes(value.get("content"))
    return 0


def cut_text(value: Any, budget: list[int]) -> Any:
    """The value with its text cut to the remaining byte budget, in reading order (what token truncation keeps)."""
    if isinstance(value, str):
        raw = value.encode("utf-8", "surrogatepass")
        keep = raw[:max(0, budget[0])].decode("utf-8", "ignore")
        budget[0] -= len(raw)
        return keep
    if isinstance(value, list):
        return [cut_text(v, budget) for v in value]
    if isinstance(value, dict) and "content" in value:
        return {**value, "content": cut_text(value.get("content"), budget)}
    return value


def row_bytes(ds) -> list[int]:
    """UTF-8 bytes of each row's text, computed column-wise by Arrow (no Python pass over the rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = ds.data.table if hasattr(ds.data, "table") else ds.data
    total = np.zeros(len(ds), dtype=np.int64)

    def add(arr, owners):
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            lengths = pc.fill_null(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
            np.add.at(total, owners, lengths)
        elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
            parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
            add(pc.list_flatten(arr), owners[parents])
        elif pa.types.is_struct(arr.type):
            for i in range(arr.type.num_fields):
                add(pc.struct_field(arr, [i]), owners)

    rows = np.arange(len(ds))
    for name in table.column_names:
        add(table.column(name).combine_chunks(), rows)
    return total.tolist()


def bound_rows(ds, config: RunConfig, what: str = "training"):
    """Bound per-row work before tokenizing: rows over `config.max_row_bytes` are cut (too_long=truncate) or
    stop the run naming them (refuse). Returns (dataset, rows_truncated)."""
    cap = config.max_row_bytes
    sizes = row_bytes(ds)
    over = [i for i, n in enumerate(sizes) if n > cap]
    if not over:
        return ds, 0
    if config.too_long == "refuse":
        raise BadInput(f"{len(over)} {what} rows are longer than max_length {config.max_length} tokens allows "
                       f"(over {cap} bytes): rows {over[:5]}",
                       hint="Pass too_long: truncate to cut them, or clean_dataset (too_long drop/truncate) first.",
                       code="rows_too_long")
    over_set = set(over)

    def cut(row, index):
        return {k: cut_text(v, [cap]) for k, v in row.items()} if index in over_set else row

    return ds.map(cut, with_indices=True, load_from_cache_file=False, desc="cutting over-long rows"), len(over)


def refuse_long_rows(ds, tokenizer, config: RunConfig) -> None:
    """too_long=refuse: a row over max_length tokens (chat template applied) stops the run before training."""
    if config.too_long != "refuse":
        return
    over = []
    for i, row in enumerate(ds):
        n = len(_render_ids(tokenizer, row))
        if n > config.max_length:
            over.append(i)
    if over:
        raise BadInput(f"{len(over)} rows are longer than max_length {config.max_length} tokens: rows {over[:5]}",
                       hint="Pass too_long: truncate, raise max_length, or run clean_dataset (too_long drop/truncate).",
                       code="rows_too_long")


def _render_ids(tokenizer, row: dict) -> list[int]:
    if "messages" in row:
        ids = tokenizer.apply_chat_template(row["messages"], tokenize=True)
    elif isinstance(row.get("prompt"), list):
        ids = tokenizer.apply_chat_template(row["prompt"] + (row.get("completion") or row.get("chosen") or []),
                                            tokenize=True)
    else:
        text = (row.get("prompt") or "") + (row.get("completion") or row.get("chosen") or row.get("text") or "")
        ids = tokenizer(text)["input_ids"]
    return ids["input_ids"] if hasattr(ids, "keys") else ids


def to_prompt_completion(ds):
    """Conversations -> prompt/completion (loss only on the last assistant turn); other formats pass through."""
    cols = set(ds.column_names)
    if "messages" not in cols:
        if {"prompt", "completion"} <= cols or "text" in cols:
            return ds
        raise BadInput(f"unknown dataset columns {sorted(cols)}",
                       hint="Use TRL's standard formats: messages, prompt/completion, or text.")

    def split(row):
        msgs = row["messages"]
        if not msgs or msgs[-1]["role"] != "assistant":
            raise BadInput("a conversation does not end with an assistant turn",
                           hint="Each row's last message must be the assistant's answer.")
        return {"prompt": msgs[:-1], "completion": [msgs[-1]]}

    return ds.map(split, remove_columns=[c for c in ds.column_names])


def prepared_rows(config: RunConfig, path: str | None, tokenizer=None, conversational: bool = True):
    """Load, bound and (for SFT-style data) split a dataset file; None when no path."""
    if not path:
        return None, 0
    ds, cut = bound_rows(load_rows(path, config.columns), config)
    if tokenizer is not None:
        refuse_long_rows(ds, tokenizer, config)
    return (to_prompt_completion(ds) if conversational else ds), cut


# --- model and arguments ---------------------------------------------------------------------------------

def precision(config: RunConfig | None = None):
    """(torch dtype, bf16 flag) from the hardware probe (bf16 only where it is native), unless the run names one."""
    import torch

    from runtime.hardware import probe

    asked = config.precision if config is not None else "auto"
    bf16 = probe().bf16 if asked == "auto" else asked == "bf16"
    return (torch.bfloat16 if bf16 else torch.float32), bf16


def load_model(path: str, method: str, config: RunConfig):
    """The base model in the training dtype; for qlora in 4-bit nf4 (double quant).

    QLoRA does not go through PEFT's prepare_model_for_kbit_training: it casts every non-quantized weight
    (embeddings, norms, the tied head) to fp32, which makes the residual stream fp32 and put QLoRA's CUDA peak above
    LoRA's. The adapters and the trainer freeze and cast what they need."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype, _ = precision(config)
    from runtime.models import load_kwargs

    kwargs: dict[str, Any] = {"dtype": dtype, **load_kwargs()}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": "cpu"} if not torch.cuda.is_available() else {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method == "qlora":
        for p in model.parameters():
            p.requires_grad_(False)
        if config.gradient_checkpointing:
            model.enable_input_require_grads()
    return model


def lora_config(config: RunConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.lora_targets or "all-linear", task_type="CAUSAL_LM")


def adapters_compute_in_bf16(model) -> None:
    """Mixed precision for LoRA as for the rest of the model: the adapters keep fp32 master weights (PEFT's
    default), but their inputs stay bf16 under autocast instead of being copied to fp32 on every adapted linear.
    That copy (and its fp32 dropout) made LoRA slower than QLoRA, whose adapters TRL keeps in bf16 (GPU table in
    the README). Forwards outside autocast would mix dtypes: every forward of a bf16 run goes through it."""
    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False


def sampling_args(group_by_length: bool) -> dict:
    """Length-grouped batches (less padding) in whichever spelling this transformers has."""
    if not group_by_length:
        return {}
    from transformers import TrainingArguments

    if "train_sampling_strategy" in TrainingArguments.__dataclass_fields__:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def common_args(ctx: JobContext, has_eval: bool) -> dict:
    """TrainingArguments fields every method shares, chosen here (never the library defaults)."""
    cfg = ctx.config
    _, bf16 = precision(cfg)
    return dict(
        output_dir=str(ctx.checkpoints_dir), bf16=bf16, fp16=False,
        use_cpu=ctx.device == "cpu",
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size or cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        gradient_checkpointing=cfg.gradient_checkpointing,
        learning_rate=cfg.learning_rate, max_steps=cfg.max_steps or -1,
        num_train_epochs=cfg.epochs, lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps, weight_decay=0.0,
        logging_steps=1, logging_first_step=True, save_strategy="steps", save_steps=cfg.save_every,
        logging_nan_inf_filter=False,  # a non-finite loss must show (the callback fails the run as diverged)
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if has_eval and cfg.eval_steps else "no",
        eval_steps=cfg.eval_steps,
        report_to="none", disable_tqdm=True, seed=cfg.seed, data_seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=True,
        ddp_find_unused_parameters=False if cfg.num_processes > 1 else None,
        **sampling_args(cfg.group_by_length),
    )
