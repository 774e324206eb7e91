"""SFT inside the job process: TRL SFTTrainer with LoRA, QLoRA (4-bit nf4, double quant) or full fine-tuning.

Loss only on the assistant's answer: conversations become prompt/completion (TRL masks the prompt), and the
chat template closes the answer with the EOS token so the model learns to stop.
"""

from __future__ import annotations

from runtime.training.common import (JobContext, adapters_compute_in_bf16, common_args, load_model, lora_config,
                                     precision, prepared_rows)
from runtime.training.config import SFTRun
from runtime.training.progress import counting, make_callback
from runtime.training.runner import SCRIPT_END, SCRIPT_MAIN, Recipe, Setup


class SFTRecipe(Recipe):
    config_cls = SFTRun

    def setup(self, ctx: JobContext) -> Setup:
        from transformers import AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        from runtime.models import resolve_model

        cfg: SFTRun = ctx.config
        model_path = resolve_model(cfg.model).path
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        train_ds, cut = prepared_rows(cfg, cfg.train_path, tokenizer)
        eval_ds, _ = prepared_rows(cfg, cfg.eval_path, tokenizer)
        model = load_model(model_path, cfg.method, cfg)
        args = SFTConfig(**common_args(ctx, eval_ds is not None), max_length=cfg.max_length, packing=cfg.packing,
                         completion_only_loss=None, dataset_num_proc=None,
                         prediction_loss_only=True)  # eval loss only: no gathered logits
        trainer = counting(SFTTrainer)(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                       processing_class=tokenizer,
                                       peft_config=lora_config(cfg) if cfg.uses_lora else None,
                                       callbacks=[make_callback(ctx)])
        trainer.ftpilot_rows_truncated = cut
        if cfg.uses_lora and precision(cfg)[1]:
            adapters_compute_in_bf16(trainer.model)
        return Setup(trainer, tokenizer, model_path, artifact="adapter" if cfg.uses_lora else "model")

    def trl_config(self, ctx: JobContext, s: Setup) -> tuple[str, dict]:
        return "sft", {"packing": ctx.config.packing}


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


''' + SCRIPT_MAIN + '''    kw = {"dtype": dtype}
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
                     warmup_steps=c["warmup_steps"],
                     logging_steps=1, save_strategy="no", report_to="none")
    trainer = SFTTrainer(model=model, args=args, train_dataset=load(c["train_path"]),
                         eval_dataset=load(c["eval_path"]) if c["eval_path"] else None, processing_class=tok,
                         peft_config=peft)
    trainer.train()
    if c["eval_path"]:
        print(trainer.evaluate())
''' + SCRIPT_END
SFTRecipe.reproduce_template = REPRODUCE_SFT
