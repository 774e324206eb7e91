"""SFT inside the job process: TRL SFTTrainer with LoRA, QLoRA (4-bit nf4, double quant) or full fine-tuning.

Loss only on the assistant's answer: conversations become prompt/completion (TRL masks the prompt), and the
chat template closes the answer with the EOS token so the model learns to stop.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.training.common import (CANCEL, JobContext, common_args, dataset_info, is_main, load_model, load_rows,
                                     lora_config, make_callback, precision, to_prompt_completion, write_json,
                                     write_reproduce)


def build_sft_args(ctx: JobContext, has_eval: bool):
    from trl import SFTConfig

    cfg = ctx.config
    return SFTConfig(**common_args(ctx, has_eval), max_length=int(cfg.get("max_length", 512)),
                     packing=bool(cfg.get("packing", False)), completion_only_loss=None,
                     dataset_num_proc=None, prediction_loss_only=True)  # eval loss only: no gathered logits


def train(ctx: JobContext) -> dict:
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from runtime.models import resolve_model

    cfg = ctx.config
    method = ctx.method or "lora"
    model_path = resolve_model(cfg["model"]).path
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    train_ds = to_prompt_completion(load_rows(cfg["train_path"]))
    eval_ds = to_prompt_completion(load_rows(cfg["eval_path"])) if cfg.get("eval_path") else None
    model = load_model(model_path, method, cfg)
    trainer = SFTTrainer(model=model, args=build_sft_args(ctx, eval_ds is not None), train_dataset=train_ds,
                         eval_dataset=eval_ds, processing_class=tokenizer,
                         peft_config=lora_config(cfg) if method in ("lora", "qlora") else None,
                         callbacks=[make_callback(ctx)])
    return run_trainer(ctx, trainer, tokenizer, method, model_path, eval_ds is not None)


def run_trainer(ctx: JobContext, trainer, tokenizer, method: str, model_path: str, has_eval: bool,
                extra: dict | None = None) -> dict:
    """Evaluate before, train (resuming when asked), evaluate after, save artifacts; returns the job result."""
    from runtime import jobs

    cfg = ctx.config
    result: dict = {"method": method, "model_path": model_path, "device": ctx.device,
                    "world_size": trainer.args.world_size}
    dtype, bf16 = precision(cfg)
    result["precision"] = "bf16" if bf16 else "fp32"
    model = trainer.model
    try:
        result["model_memory_mb"] = round(model.get_memory_footprint() / 2**20, 1)
    except Exception:  # noqa: BLE001
        pass
    result["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    result["total_params"] = sum(p.numel() for p in model.parameters())
    if has_eval and cfg.get("eval_before", True) and not ctx.resume_from and not CANCEL.is_set():
        before = trainer.evaluate()
        result["eval_loss_before"] = before.get("eval_loss")
        if is_main():
            jobs.record_metric(ctx.job_id, ctx.metrics_path, {"step": 0, "eval_loss": before.get("eval_loss")})
    out = trainer.train(resume_from_checkpoint=ctx.resume_from)
    result["train_runtime_s"] = round(out.metrics.get("train_runtime", 0.0), 2)
    result["peak_memory_mb"] = round(peak_memory_mb(), 1)
    result["global_step"] = trainer.state.global_step
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if losses:
        result["train_loss_first"] = losses[0]
        result["train_loss"] = losses[-1]
        tail = losses[-5:]
        result["train_loss_last5"] = sum(tail) / len(tail)
    if CANCEL.is_set():
        ckpt = jobs.last_checkpoint(jobs.get_job(ctx.job_id))
        result["checkpoint"] = str(ckpt) if ckpt else None
        return {"metrics": _metrics(result), **result} if is_main() else result
    if has_eval:
        after = trainer.evaluate()
        result["eval_loss"] = after.get("eval_loss")
        for k, v in after.items():
            if k.startswith("eval_rewards") or k.startswith("eval_logps"):
                result[k] = v
        if is_main():
            jobs.record_metric(ctx.job_id, ctx.metrics_path,
                               {"step": trainer.state.global_step, **{k: v for k, v in after.items()
                                                                      if isinstance(v, (int, float))}})
    if extra:
        result.update(extra)
    if is_main():
        save_artifacts(ctx, trainer, tokenizer, method, result)
        if not cfg.get("keep_checkpoints"):
            # Checkpoints exist for resume; the Trainer writes optimizer/RNG state with torch.save (pickle).
            # A finished run needs none of it: its artifacts are safetensors.
            import shutil

            shutil.rmtree(ctx.checkpoints_dir, ignore_errors=True)
    result["metrics"] = _metrics(result)
    return result


def peak_memory_mb() -> float:
    """Peak memory of the training so far: CUDA max allocated on a GPU, else the process's peak RSS."""
    import resource

    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    # VmHWM is this address space's peak. ru_maxrss is not: Linux carries it across exec, so a job started
    # from a big parent (a test run, the app) would report the parent's peak as its own.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _metrics(result: dict) -> dict:
    keys = ("train_loss", "train_loss_first", "train_loss_last5", "eval_loss", "eval_loss_before", "global_step",
            "train_runtime_s", "model_memory_mb", "peak_memory_mb", "world_size")
    out = {k: result[k] for k in keys if k in result}
    out.update({k: v for k, v in result.items() if k.startswith("eval_rewards")})
    return out


def save_artifacts(ctx: JobContext, trainer, tokenizer, method: str, result: dict) -> None:
    run_dir = ctx.run_dir
    if method in ("lora", "qlora"):
        target = run_dir / "adapter"
        trainer.model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        result["adapter_path"] = str(target)
    else:
        target = run_dir / "model"
        trainer.model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        result["model_dir"] = str(target)
    tokenizer.save_pretrained(run_dir / "tokenizer")
    write_json(run_dir / "config.json", {"kind": ctx.kind, "method": method, "config": ctx.config,
                                          "training_args": trainer.args.to_dict()})
    data = {"train": dataset_info(ctx.config.get("train_path")), "eval": dataset_info(ctx.config.get("eval_path"))}
    write_json(run_dir / "dataset.json", data)
    result["dataset_sha256"] = (data["train"] or {}).get("sha256")
    write_json(run_dir / "result.json", result)
    config = _repro_config(ctx, method, trainer)
    template = REPRODUCE_SFT
    if ctx.kind == "train_dpo":
        from runtime.training.dpo import REPRODUCE_DPO

        template = REPRODUCE_DPO
        config.update(dpo_method=ctx.method, beta=ctx.config.get("beta", 0.1), adapter_path=ctx.config.get("adapter_path"))
    elif ctx.kind == "distill":
        from runtime.training.distill import REPRODUCE_DISTILL

        template = REPRODUCE_DISTILL
        config.update(mode=ctx.method, student=result.get("student_init"), temperature=ctx.config.get("temperature", 1.0),
                      max_new_tokens=ctx.config.get("max_new_tokens", 32),
                      teacher_answers=result.get("teacher_answers_path"))
    write_reproduce(ctx, template.replace("__CONFIG__", json.dumps(config, indent=4)), [])
    result["reproduce"] = str(run_dir / "reproduce.sh")


def _repro_config(ctx: JobContext, method: str, trainer) -> dict:
    from runtime.models import resolve_model
    from runtime.paths import resolve_path

    cfg = ctx.config
    a = trainer.args
    return {"model": resolve_model(cfg["model"]).path, "train_path": str(resolve_path(cfg["train_path"])),
            "eval_path": str(resolve_path(cfg["eval_path"])) if cfg.get("eval_path") else None,
            "method": method, "lora_r": cfg.get("lora_r", 16), "lora_alpha": cfg.get("lora_alpha", 32),
            "lora_dropout": cfg.get("lora_dropout", 0.05), "lora_targets": cfg.get("lora_targets") or "all-linear",
            "learning_rate": a.learning_rate, "max_steps": a.max_steps, "epochs": a.num_train_epochs,
            "batch_size": a.per_device_train_batch_size, "grad_accum": a.gradient_accumulation_steps,
            "max_length": cfg.get("max_length", 512), "bf16": a.bf16, "gradient_checkpointing": a.gradient_checkpointing,
            "seed": a.seed, "lr_scheduler": str(a.lr_scheduler_type.value if hasattr(a.lr_scheduler_type, "value")
                                                else a.lr_scheduler_type)}


REPRODUCE_SFT = '''"""Rerun of an ftpilot SFT job with plain TRL + PEFT (no ftpilot). Run: bash reproduce.sh [--output_dir DIR]"""
import argparse
import json

import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from trl import SFTConfig, SFTTrainer

CONFIG = json.loads(r"""__CONFIG__""")


def load(path):
    kind = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet"}[path.rsplit(".", 1)[-1]]
    ds = load_dataset(kind, data_files=path, split="train")
    if "messages" in ds.column_names:  # loss on the assistant answer only: prompt/completion
        ds = ds.map(lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
                    remove_columns=ds.column_names)
    return ds


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--output_dir", default="reproduced")
    out = p.parse_args().output_dir
    c = CONFIG
    dtype = torch.bfloat16 if c["bf16"] else torch.float32
    kw = {"dtype": dtype}
    if c["method"] == "qlora":
        kw["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                       bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(c["model"], **kw)
    tok = AutoTokenizer.from_pretrained(c["model"])
    peft = None if c["method"] == "full" else LoraConfig(
        r=c["lora_r"], lora_alpha=c["lora_alpha"], lora_dropout=c["lora_dropout"], target_modules=c["lora_targets"],
        task_type="CAUSAL_LM")
    args = SFTConfig(output_dir=out, bf16=c["bf16"], learning_rate=c["learning_rate"], max_steps=c["max_steps"],
                     num_train_epochs=c["epochs"], per_device_train_batch_size=c["batch_size"],
                     gradient_accumulation_steps=c["grad_accum"], gradient_checkpointing=c["gradient_checkpointing"],
                     max_length=c["max_length"], seed=c["seed"], lr_scheduler_type=c["lr_scheduler"],
                     logging_steps=1, save_strategy="no", report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=load(c["train_path"]),
                         eval_dataset=load(c["eval_path"]) if c["eval_path"] else None, processing_class=tok,
                         peft_config=peft)
    trainer.train()
    if c["eval_path"]:
        print(trainer.evaluate())
    trainer.save_model(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
'''
