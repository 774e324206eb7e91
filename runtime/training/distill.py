"""Distillation inside the job process, teacher -> student with the same tokenizer.

- `logit`: TRL's GKDTrainer off-policy (lmbda=0) with beta=0: the forward KL(teacher || student) on the answer tokens.
- `gkd`: TRL's on-policy GKD (lmbda=0.5, beta=0.5 generalized JSD; the student generates part of the answers).
- `sequence`: the teacher generates answers to the prompts (greedy), the student is fine-tuned on them (SFT).
With no student given, one is made from the teacher by keeping every other decoder layer (the DistilBERT recipe).
The student's KL to the teacher on the held-out answers is measured before and after training.
"""

from __future__ import annotations

import json
from pathlib import Path

from runtime.errors import BadInput
from runtime.outputs import write_jsonl
from runtime.training.common import JobContext, common_args, is_main, precision, prepared_rows
from runtime.training.config import DistillRun
from runtime.training.progress import counting, make_callback
from runtime.training.runner import SCRIPT_END, SCRIPT_MAIN, Recipe, Setup


def make_half_student(teacher_dir: str, out_dir: Path) -> dict:
    """A student with every other layer of the teacher (layers 0, 2, 4, ...), weights copied; saved to out_dir."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from runtime.models import load_kwargs

    if (out_dir / "config.json").exists():
        cfg = json.loads((out_dir / "ftpilot_student.json").read_text())
        return cfg
    teacher = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32, **load_kwargs())
    config = AutoConfig.from_pretrained(teacher_dir)
    n = config.num_hidden_layers
    keep = list(range(0, n, 2))
    config.num_hidden_layers = len(keep)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in keep]
    student = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    t_state = teacher.state_dict()
    s_state = {}
    for key, value in t_state.items():
        if ".layers." in key:
            prefix, rest = key.split(".layers.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) in keep:
                s_state[f"{prefix}.layers.{keep.index(int(idx))}.{tail}"] = value
        else:
            s_state[key] = value
    missing, unexpected = student.load_state_dict(s_state, strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"student init: missing {missing[:3]}, unexpected {unexpected[:3]}")
    student.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(out_dir)
    info = {"teacher_layers": n, "student_layers": len(keep), "kept_layers": keep,
            "teacher_params": sum(p.numel() for p in teacher.parameters()),
            "student_params": sum(p.numel() for p in student.parameters())}
    (out_dir / "ftpilot_student.json").write_text(json.dumps(info))
    return info


def teacher_kl(student, teacher, tokenizer, rows, limit: int = 64, batch: int = 8) -> float:
    """Mean per-token forward KL(teacher || student) on the answer tokens of prompt/completion rows."""
    import torch
    import torch.nn.functional as F

    student.eval()
    total, count = 0.0, 0
    rows = list(rows)[:limit]
    for i in range(0, len(rows), batch):
        for r in rows[i:i + batch]:
            prompt, completion = r["prompt"], r["completion"]
            if isinstance(prompt, list):
                pre = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
                full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
            else:
                pre, full = prompt, prompt + completion
            p_len = len(tokenizer(pre, add_special_tokens=False)["input_ids"])
            ids = torch.tensor([tokenizer(full, add_special_tokens=False)["input_ids"]])
            with torch.no_grad():
                s = F.log_softmax(student(input_ids=ids).logits.float()[0, p_len - 1:-1], -1)
                t = F.log_softmax(teacher(input_ids=ids).logits.float()[0, p_len - 1:-1], -1)
            kl = F.kl_div(s, t, reduction="none", log_target=True).sum(-1)
            total += float(kl.sum())
            count += kl.numel()
    return round(total / max(1, count), 5)


def teacher_answers(teacher, tokenizer, ds, max_new_tokens: int, batch: int = 8) -> list[dict]:
    """Sequence-level KD data: the teacher's greedy answer to each prompt, as conversations."""
    import torch

    tokenizer.padding_side = "left"
    rows = list(ds)
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        texts = [tokenizer.apply_chat_template(r["prompt"], tokenize=False, add_generation_prompt=True)
                 if isinstance(r["prompt"], list) else r["prompt"] for r in chunk]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = teacher.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id)
        for r, g in zip(chunk, gen[:, enc["input_ids"].shape[1]:]):
            answer = tokenizer.decode(g, skip_special_tokens=True).strip()
            prompt = r["prompt"]
            out.append({"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]
                        if isinstance(prompt, list) else answer})
    tokenizer.padding_side = "right"
    return out


class DistillRecipe(Recipe):
    config_cls = DistillRun
    metric_keys = ("teacher_kl", "teacher_kl_before", "student_layers", "teacher_layers")

    def setup(self, ctx: JobContext) -> Setup:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from runtime.models import load_kwargs, resolve_model

        cfg: DistillRun = ctx.config
        teacher_path = resolve_model(cfg.model).path
        tokenizer = AutoTokenizer.from_pretrained(teacher_path)
        student_info: dict = {}
        if cfg.student:
            student_path = resolve_model(cfg.student).path
            s_tok = AutoTokenizer.from_pretrained(student_path)
            if s_tok.get_vocab() != tokenizer.get_vocab():
                raise BadInput("the student's tokenizer differs from the teacher's",
                               hint="Logit distillation needs the same tokenizer; leave `student` empty to derive one.")
        else:
            student_path = str(ctx.run_dir / "student_init")
            if is_main():
                student_info = make_half_student(teacher_path, Path(student_path))
        dtype, _ = precision(cfg)
        self.teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=dtype, **load_kwargs())
        self.teacher.eval()
        student = AutoModelForCausalLM.from_pretrained(student_path, dtype=dtype, **load_kwargs())
        train_ds, cut = prepared_rows(cfg, cfg.train_path, tokenizer)
        eval_ds, _ = prepared_rows(cfg, cfg.eval_path, tokenizer)
        if "prompt" not in train_ds.column_names:
            raise BadInput("distillation needs prompts: conversations or prompt/completion rows")
        self.kl_rows = eval_ds if eval_ds is not None else train_ds
        base = common_args(ctx, eval_ds is not None)
        base.pop("remove_unused_columns")
        info = {"distill_mode": cfg.mode, "teacher": teacher_path, "student_init": student_path, **student_info}
        if cfg.mode == "sequence":
            from trl import SFTConfig, SFTTrainer

            seq_path = ctx.run_dir / "teacher_answers.jsonl"
            if not seq_path.exists():
                rows = teacher_answers(self.teacher, tokenizer, train_ds, cfg.max_new_tokens)
                write_jsonl(seq_path, rows)
            train_ds = Dataset.from_list([json.loads(x) for x in seq_path.read_text().splitlines()])
            info["teacher_answers_path"] = str(seq_path)
            args = SFTConfig(**base, max_length=cfg.max_length, remove_unused_columns=True)
            trainer = counting(SFTTrainer)(model=student, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                           processing_class=tokenizer, callbacks=[make_callback(ctx)])
        else:
            from trl.experimental.gkd import GKDConfig, GKDTrainer

            def to_messages(ds):
                return ds.map(lambda r: {"messages": r["prompt"] + r["completion"]},
                              remove_columns=ds.column_names) if isinstance(ds[0]["prompt"], list) else ds

            # logit: forward KL on the answers, off-policy (lmbda 0, beta 0); gkd: TRL's on-policy generalized JSD
            lmbda, beta = (0.0, 0.0) if cfg.mode == "logit" else (cfg.lmbda, cfg.beta)
            args = GKDConfig(**base, lmbda=lmbda, beta=beta, temperature=cfg.temperature,
                             max_new_tokens=cfg.max_new_tokens, max_length=cfg.max_length)
            trainer = counting(GKDTrainer)(model=student, teacher_model=self.teacher, args=args,
                                           train_dataset=to_messages(train_ds),
                                           eval_dataset=to_messages(eval_ds) if eval_ds is not None else None,
                                           processing_class=tokenizer, callbacks=[make_callback(ctx)])
        trainer.ftpilot_rows_truncated = cut
        return Setup(trainer, tokenizer, teacher_path, artifact="model", info=info)

    def measure(self, ctx: JobContext, s: Setup, when: str) -> dict:
        kl = teacher_kl(s.trainer.model, self.teacher, s.tokenizer, self.kl_rows)
        return {"teacher_kl_before" if when == "before" else "teacher_kl": kl}

    def reproduce_config(self, ctx: JobContext, s: Setup, result: dict) -> dict:
        cfg: DistillRun = ctx.config
        return {"mode": cfg.mode, "student": result.get("student_init"), "temperature": cfg.temperature,
                "max_new_tokens": cfg.max_new_tokens, "lmbda": cfg.lmbda, "beta": cfg.beta,
                "teacher_answers": result.get("teacher_answers_path")}


REPRODUCE_DISTILL = '''"""Rerun of an ftpilot distillation job with plain TRL (no ftpilot). Run: bash reproduce.sh [--output_dir DIR]

The student starts from `student` (for a derived student: the teacher's even layers, saved in student_init/).
"""
import argparse
import json

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

CONFIG = json.loads(r"""__CONFIG__""")


''' + SCRIPT_MAIN + '''    tok = AutoTokenizer.from_pretrained(c["model"])
    teacher = AutoModelForCausalLM.from_pretrained(c["model"], dtype=dtype)
    student = AutoModelForCausalLM.from_pretrained(c["student"], dtype=dtype)
    common = dict(output_dir=out, bf16=c["bf16"], learning_rate=c["learning_rate"], max_steps=c["max_steps"],
                  num_train_epochs=c["epochs"], per_device_train_batch_size=c["batch_size"],
                  gradient_accumulation_steps=c["grad_accum"], gradient_checkpointing=c["gradient_checkpointing"],
                  max_length=c["max_length"], seed=c["seed"], logging_steps=1, save_strategy="no", report_to="none")
    if c["mode"] == "sequence":  # the teacher's answers (generated by the original run) as SFT data
        from trl import SFTConfig, SFTTrainer

        data = load_dataset("json", data_files=c["teacher_answers"], split="train")
        trainer = SFTTrainer(model=student, args=SFTConfig(**common), train_dataset=data, processing_class=tok)
    else:
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        data = load_dataset("json", data_files=c["train_path"], split="train")
        if "messages" not in data.column_names:
            data = data.map(lambda r: {"messages": r["prompt"] + r["completion"]}, remove_columns=data.column_names)
        lmbda, beta = (0.0, 0.0) if c["mode"] == "logit" else (c["lmbda"], c["beta"])
        args = GKDConfig(**common, lmbda=lmbda, beta=beta, temperature=c["temperature"],
                         max_new_tokens=c["max_new_tokens"])
        trainer = GKDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                             processing_class=tok)
    trainer.train()
''' + SCRIPT_END
DistillRecipe.reproduce_template = REPRODUCE_DISTILL
