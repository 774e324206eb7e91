"""Preference training inside the job process: TRL DPOTrainer (loss dpo/ipo/hinge), KTO and ORPO, with LoRA.

The reference model is the adapter-disabled model (TRL's PEFT path), never a second copy in memory. On top of an
SFT adapter, that adapter is the one trained further and TRL copies it as a `ref` adapter.
Preference accuracy (the share of held-out pairs where the policy gives the chosen answer a higher log-probability
than the rejected one) is measured before and after training.
"""

from __future__ import annotations

from runtime.errors import BadInput
from runtime.training.common import JobContext, common_args, load_model, lora_config, prepared_rows
from runtime.training.config import PreferenceRun
from runtime.training.progress import counting, make_callback
from runtime.training.runner import SCRIPT_END, SCRIPT_MAIN, Recipe, Setup

DPO_LOSSES = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}


def _completion_text(tokenizer, prompt, completion) -> tuple[str, str]:
    if isinstance(prompt, list):
        pre = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
        if not full.startswith(pre):
            return pre, full[len(pre):]
        return pre, full[len(pre):]
    return prompt, completion


def preference_accuracy(model, tokenizer, rows, limit: int = 200) -> dict:
    """Share of pairs with logp(chosen) > logp(rejected) (summed over the answer's tokens), and the mean margin."""
    import torch

    model.eval()
    wins, margins = 0, []
    rows = list(rows)[:limit]

    def logp(prompt_text: str, answer: str) -> float:
        p_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + a_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        lp = torch.log_softmax(logits[0, :-1], -1)
        tgt = ids[0, 1:]
        picked = lp.gather(-1, tgt[:, None])[:, 0]
        return float(picked[len(p_ids) - 1:].sum())

    for r in rows:
        pre, chosen = _completion_text(tokenizer, r["prompt"], r["chosen"])
        _, rejected = _completion_text(tokenizer, r["prompt"], r["rejected"])
        m = logp(pre, chosen) - logp(pre, rejected)
        margins.append(m)
        wins += m > 0
    return {"accuracy": round(wins / max(1, len(rows)), 4), "mean_margin": round(sum(margins) / max(1, len(margins)), 4),
            "pairs": len(rows)}


def to_unpaired(ds):
    """Paired preferences -> KTO's unpaired rows (chosen: label True, rejected: label False)."""
    from datasets import Dataset

    if "label" in ds.column_names:
        return ds
    rows = []
    for r in ds:
        rows.append({"prompt": r["prompt"], "completion": r["chosen"], "label": True})
        rows.append({"prompt": r["prompt"], "completion": r["rejected"], "label": False})
    return Dataset.from_list(rows)


class PreferenceRecipe(Recipe):
    config_cls = PreferenceRun
    metric_keys = ("preference_accuracy", "preference_accuracy_before", "preference_margin")

    def setup(self, ctx: JobContext) -> Setup:
        from transformers import AutoTokenizer

        from runtime.models import resolve_adapter, resolve_model

        cfg: PreferenceRun = ctx.config
        model_path = resolve_model(cfg.model).path
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        train_ds, cut = prepared_rows(cfg, cfg.train_path, conversational=False)
        eval_ds, _ = prepared_rows(cfg, cfg.eval_path, conversational=False)
        kto_labels = cfg.method == "kto" and "label" in train_ds.column_names
        needed = {"completion", "label"} if kto_labels else {"chosen", "rejected"}
        if not needed <= set(train_ds.column_names):
            raise BadInput(f"{cfg.method} needs preference data with columns {sorted(needed)}; got "
                           f"{train_ds.column_names}",
                           hint="Use TRL's preference format: prompt, chosen, rejected (strings or conversations).")
        model = load_model(model_path, cfg.load_method, cfg)
        peft_config = lora_config(cfg)
        if cfg.adapter_path:
            from peft import PeftModel

            adapter_dir, _ = resolve_adapter(cfg.adapter_path)
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
            peft_config = None
        base = common_args(ctx, eval_ds is not None)
        base.pop("remove_unused_columns")  # the preference trainers choose their own columns
        if cfg.method == "dpo":
            from trl import DPOConfig, DPOTrainer

            args = DPOConfig(**base, beta=cfg.beta, loss_type=[DPO_LOSSES[cfg.loss]], max_length=cfg.max_length)
            trainer_cls = DPOTrainer
        elif cfg.method == "kto":
            from trl import KTOConfig, KTOTrainer

            train_ds = to_unpaired(train_ds)
            args = KTOConfig(**base, beta=cfg.beta, max_length=cfg.max_length)
            trainer_cls = KTOTrainer
        else:
            from trl.experimental.orpo import ORPOConfig, ORPOTrainer

            args = ORPOConfig(**base, beta=cfg.beta, max_length=cfg.max_length)
            trainer_cls = ORPOTrainer
        self.pairs = list(eval_ds) if eval_ds is not None and "chosen" in eval_ds.column_names else None
        trainer_eval = eval_ds if cfg.method != "kto" or eval_ds is None else to_unpaired(eval_ds)
        trainer = counting(trainer_cls)(model=model, args=args, train_dataset=train_ds, eval_dataset=trainer_eval,
                                        processing_class=tokenizer, peft_config=peft_config,
                                        callbacks=[make_callback(ctx)])
        trainer.ftpilot_rows_truncated = cut
        return Setup(trainer, tokenizer, model_path, info={"preference_method": cfg.job_method, "beta": cfg.beta})

    def measure(self, ctx: JobContext, s: Setup, when: str) -> dict:
        if not self.pairs:
            return {}
        acc = preference_accuracy(s.trainer.model, s.tokenizer, self.pairs)
        if when == "before":
            return {"preference_accuracy_before": acc["accuracy"]}
        return {"preference_accuracy": acc["accuracy"], "preference_margin": acc["mean_margin"]}

    def reproduce_config(self, ctx: JobContext, s: Setup, result: dict) -> dict:
        cfg: PreferenceRun = ctx.config
        return {"dpo_method": cfg.job_method, "beta": cfg.beta, "adapter_path": cfg.adapter_path}

    def trl_config(self, ctx: JobContext, s: Setup) -> tuple[str, dict] | None:
        cfg: PreferenceRun = ctx.config
        if cfg.method == "orpo":  # ORPO is experimental in TRL: no CLI command
            return None
        if cfg.method == "kto":
            return "kto", {"beta": cfg.beta}
        return "dpo", {"beta": cfg.beta, "loss_type": [DPO_LOSSES[cfg.loss]]}


REPRODUCE_DPO = '''"""Rerun of an ftpilot preference job with plain TRL + PEFT (no ftpilot). Run: bash reproduce.sh [--output_dir DIR]"""
import argparse
import json

import torch
from datasets import Dataset, load_dataset
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

CONFIG = json.loads(r"""__CONFIG__""")
LOSS = {"dpo": "sigmoid", "ipo": "ipo", "hinge": "hinge"}


''' + SCRIPT_MAIN + '''    model = AutoModelForCausalLM.from_pretrained(c["model"], dtype=dtype)
    tok = AutoTokenizer.from_pretrained(c["model"])
    peft = LoraConfig(r=c["lora_r"], lora_alpha=c["lora_alpha"], lora_dropout=c["lora_dropout"],
                      target_modules=c["lora_targets"], task_type="CAUSAL_LM")
    if c["adapter_path"]:  # continue the SFT adapter; TRL copies it as the reference
        model, peft = PeftModel.from_pretrained(model, c["adapter_path"], is_trainable=True), None
    train = load_dataset("json", data_files=c["train_path"], split="train")
    common = dict(output_dir=out, bf16=c["bf16"], learning_rate=c["learning_rate"], max_steps=c["max_steps"],
                  num_train_epochs=c["epochs"], per_device_train_batch_size=c["batch_size"],
                  gradient_accumulation_steps=c["grad_accum"], gradient_checkpointing=c["gradient_checkpointing"],
                  max_length=c["max_length"], seed=c["seed"], beta=c["beta"], logging_steps=1, save_strategy="no",
                  report_to="none")
    method = c["dpo_method"]
    if method == "kto":
        if "label" not in train.column_names:
            rows = [{"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
                    for r in train for k in ("chosen", "rejected")]
            train = Dataset.from_list(rows)
        trainer = KTOTrainer(model=model, args=KTOConfig(**common), train_dataset=train, processing_class=tok,
                             peft_config=peft)
    elif method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer = ORPOTrainer(model=model, args=ORPOConfig(**common), train_dataset=train, processing_class=tok,
                              peft_config=peft)
    else:
        trainer = DPOTrainer(model=model, args=DPOConfig(**common, loss_type=[LOSS[method]]), train_dataset=train,
                             processing_class=tok, peft_config=peft)
    trainer.train()
''' + SCRIPT_END
PreferenceRecipe.reproduce_template = REPRODUCE_DPO
