"""Do ftpilot's training defaults learn more than textbook TRL in the same step budget?

Each task is trained twice on the bundled SmolLM2-135M-Instruct at the same step budget and batch:
- ftpilot: `train_sft` with only `max_steps` given (every other choice is the product's default),
- trl: plain TRL SFTTrainer + PEFT LoRA with textbook settings (lr 2e-4, r 16 / alpha 32, dropout 0.05, linear
  schedule, no warmup, the data as TRL's standard conversational `messages` rows), precision from the hardware,
then both adapters are scored by `evaluate` (label-constrained decoding where the answers form a label set, else
the first line) on held-out rows whose phrasings differ from the training phrasings. Prints exact match with
95% bootstrap CIs side by side and the paired difference ftpilot - trl with its CI.

    PYTHONPATH=$PWD .venv/bin/python bench/defaults.py [--steps 40] [--tasks routing,sentiment,extract,banking]
        [--eval-rows 60] [--ftpilot-args '{"learning_rate": 1e-3}']

Tasks: `routing` (5 intents, train and eval sentence frames disjoint), `sentiment` (3 classes, disjoint frames),
`extract` (name and city into "Name | City", not a label set; disjoint frames and held-out names), `banking`
(10 Banking77 intents from --banking-train/--banking-test when those CSVs exist).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BATCH = 8


# --- tasks: train and eval phrasings drawn from disjoint templates -----------------------------------------

ROUTING = {
    "billing": ["charge", "invoice", "refund", "payment", "subscription fee", "receipt", "double charge"],
    "shipping": ["parcel", "delivery", "tracking number", "courier", "package", "shipment", "order"],
    "technical": ["app crash", "error message", "login screen", "update", "wifi connection", "frozen screen",
                  "bluetooth pairing"],
    "account": ["password", "email address", "username", "profile", "two-factor code", "account settings",
                "security question"],
    "sales": ["discount", "bulk pricing", "quote", "new plan", "upgrade offer", "business license", "demo"],
}
ROUTING_TRAIN = ["I have a problem with my {k}.", "Question about the {k}, please help.", "Help me with the {k}",
                 "Something is wrong with my {k}.", "Can you check the {k} for me?", "{k} issue again",
                 "Need assistance regarding the {k}."]
ROUTING_EVAL = ["Hi team, my {k} is giving me trouble since yesterday, what should I do?",
                "Could someone look into the {k}? It is urgent.", "Why does the {k} never work for me",
                "hello, is there anyone who knows about {k}?"]

SENTIMENT = {
    "positive": ["great", "excellent", "wonderful", "fantastic", "really good", "superb", "lovely"],
    "negative": ["terrible", "awful", "disappointing", "useless", "really bad", "horrible", "broken"],
    "neutral": ["okay", "average", "fine I guess", "nothing special", "acceptable", "so-so", "ordinary"],
}
THINGS = ["blender", "hotel room", "movie", "pizza", "phone", "jacket", "concert", "laptop", "book", "tent"]
SENTIMENT_TRAIN = ["The {t} was {a}.", "This {t} is {a}.", "{a} {t}, that is my review.", "My {t}: {a}.",
                   "I found the {t} {a}."]
SENTIMENT_EVAL = ["Honestly, after a week with the {t} I would call it {a}.", "Bought a {t} last month. Verdict: {a}",
                  "If you ask me, the {t} turned out {a} overall."]
SENTIMENT_SYSTEM = "Give the sentiment of the review: positive, negative or neutral."

NAMES = ["Ana", "Bruno", "Chen", "Dara", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kofi", "Lena", "Mateo",
         "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Viktor", "Wen", "Yara", "Zane"]
CITIES = ["Lisbon", "Berlin", "Osaka", "Lima", "Cairo", "Oslo", "Denver", "Hanoi", "Perth", "Quito", "Dublin",
          "Seoul", "Nairobi", "Austin", "Porto", "Krakow", "Bogota", "Tunis", "Zurich", "Manila"]
EXTRACT_TRAIN = ["Please ship the order to {n} in {c}.", "{n} lives in {c}.", "Customer {n}, city {c}.",
                 "Send it to {n} ({c})."]
EXTRACT_EVAL = ["We got a message from {n}, who moved to {c} last year and wants a new card.",
                "The caller said her name is {n} and she is calling from {c}."]
EXTRACT_SYSTEM = "Extract the person's name and city. Answer as: Name | City"


def _rows(prompt_answers, system: str | None = None) -> list[dict]:
    sys_turn = [{"role": "system", "content": system}] if system else []
    return [{"messages": sys_turn + [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}
            for p, a in prompt_answers]


def routing(rng, n_train: int, n_eval: int):
    def draw(frames, n):
        labels = list(ROUTING)
        return [(rng.choice(frames).format(k=rng.choice(ROUTING[lab])), lab)
                for lab in (labels[i % len(labels)] for i in range(n))]
    return _rows(draw(ROUTING_TRAIN, n_train)), _rows(draw(ROUTING_EVAL, n_eval))


def sentiment(rng, n_train: int, n_eval: int):
    def draw(frames, n):
        labels = list(SENTIMENT)
        return [(rng.choice(frames).format(t=rng.choice(THINGS), a=rng.choice(SENTIMENT[lab])), lab)
                for lab in (labels[i % len(labels)] for i in range(n))]
    return _rows(draw(SENTIMENT_TRAIN, n_train), SENTIMENT_SYSTEM), _rows(draw(SENTIMENT_EVAL, n_eval),
                                                                         SENTIMENT_SYSTEM)


def extract(rng, n_train: int, n_eval: int):
    def draw(frames, names, n):
        out = []
        for _ in range(n):
            name, city = rng.choice(names), rng.choice(CITIES)
            out.append((rng.choice(frames).format(n=name, c=city), f"{name} | {city}"))
        return out
    return (_rows(draw(EXTRACT_TRAIN, NAMES[:18], n_train), EXTRACT_SYSTEM),
            _rows(draw(EXTRACT_EVAL, NAMES[18:], n_eval), EXTRACT_SYSTEM))


def banking(rng, n_train: int, n_eval: int, train_csv: str, test_csv: str, intents: int = 10):
    def read(path):
        with open(path, newline="") as f:
            return [(r["text"], r["category"]) for r in csv.DictReader(f)]
    train, test = read(train_csv), read(test_csv)
    chosen = sorted(rng.sample(sorted({c for _, c in train}), intents))

    def pick(rows, n):
        by = {c: [r for r in rows if r[1] == c] for c in chosen}
        out = []
        for i in range(n):
            pool = by[chosen[i % intents]]
            out.append(pool.pop(rng.randrange(len(pool))))
        return out
    return _rows(pick(train, n_train)), _rows(pick(test, n_eval))


# --- the two ways to train ---------------------------------------------------------------------------------

def train_ftpilot(train: str, steps: int, extra: dict) -> str:
    from tools import call_tool

    res = call_tool("train_sft", {"model": "default", "train_path": train, "max_steps": steps, "wait": True,
                                  **extra})
    if not res.ok or res.output["status"] != "succeeded":
        raise SystemExit(f"ftpilot run failed: {res.error or res.output}")
    return res.output["adapter_path"]


def train_trl(train: str, steps: int, out: str) -> str:
    """Textbook TRL in its own process (as a person would run it); returns the adapter dir."""
    code = f"""
import torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from runtime.hardware import probe
from runtime.models import resolve_model

path = resolve_model("default").path
bf16 = probe().bf16
ds = load_dataset("json", data_files={train!r}, split="train")
args = SFTConfig(output_dir={out!r}, max_steps={steps}, per_device_train_batch_size={BATCH}, learning_rate=2e-4,
                 lr_scheduler_type="linear", bf16=bf16, gradient_checkpointing=False, report_to="none",
                 save_strategy="no", logging_steps=10, seed=0, use_cpu=not torch.cuda.is_available())
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if bf16 else torch.float32)
peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(path),
                     peft_config=peft)
trainer.train()
trainer.save_model({out!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    return out


def score(eval_path: str, adapters: dict[str, str], out_dir: str) -> dict:
    from tools import call_tool

    res = call_tool("evaluate", {
        "eval_path": eval_path, "metrics": ["exact_match"], "out_dir": out_dir, "overwrite": True,
        "candidates": [{"name": n, "adapter": a, "engine": "transformers:default"} for n, a in adapters.items()]})
    if not res.ok:
        raise SystemExit(f"evaluate failed: {res.error}")
    res = res.output
    by = {r["name"]: r["metrics"]["exact_match"] for r in res["results"]}
    delta = res["comparisons"][0]["metrics"]["exact_match"]
    return {"by": by, "delta": delta, "decoding": res["decoding"]["mode"], "n": res["n"]}


def fmt(m: dict) -> str:
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.2f}, {hi:.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--tasks", default="routing,sentiment,extract,banking")
    p.add_argument("--train-rows", type=int, default=200)
    p.add_argument("--eval-rows", type=int, default=60)
    p.add_argument("--ftpilot-args", default="{}", help="extra train_sft arguments (JSON), e.g. to try a setting")
    p.add_argument("--banking-train", default="/tmp/realdata/cmp/ws-before/banking_train.csv")
    p.add_argument("--banking-test", default="/tmp/realdata/cmp/ws-before/banking_test.csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="work folder; adapters already trained there are reused")
    a = p.parse_args()
    extra = json.loads(a.ftpilot_args)

    root = Path(a.root or tempfile.mkdtemp(prefix="bench-defaults-"))
    os.environ.update(FTPILOT_DATA_DIR=str(root / "data"), FTPILOT_WORKSPACE_ROOT=str(root))
    makers = {"routing": routing, "sentiment": sentiment, "extract": extract}
    rows_out = []
    for name in a.tasks.split(","):
        rng = random.Random(a.seed)
        if name == "banking":
            if not (Path(a.banking_train).exists() and Path(a.banking_test).exists()):
                print(f"banking: skipped ({a.banking_train} or {a.banking_test} missing)")
                continue
            train_rows, eval_rows = banking(rng, a.train_rows, a.eval_rows, a.banking_train, a.banking_test)
        else:
            train_rows, eval_rows = makers[name](rng, a.train_rows, a.eval_rows)
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        train, evalp = d / "train.jsonl", d / "eval.jsonl"
        train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
        evalp.write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
        t0 = time.time()
        done = d / "ftpilot_adapter.txt"
        ft = done.read_text() if done.exists() else train_ftpilot(str(train), a.steps, extra)
        done.write_text(ft)
        t_ft = time.time() - t0
        t0 = time.time()
        tr = str(d / "trl-adapter")
        if not (d / "trl-adapter" / "adapter_config.json").exists():
            train_trl(str(train), a.steps, tr)
        t_trl = time.time() - t0
        s = score(str(evalp), {"trl": tr, "ftpilot": ft}, str(d / "eval"))
        load = os.getloadavg()[0]
        rows_out.append((name, s, t_ft, t_trl, load))
        print(f"{name}: trl {fmt(s['by']['trl'])}  ftpilot {fmt(s['by']['ftpilot'])}  "
              f"diff {s['delta']['delta']:+.3f} [{s['delta']['ci95'][0]:+.2f}, {s['delta']['ci95'][1]:+.2f}]  "
              f"(train {t_ft:.0f}s / {t_trl:.0f}s, load {load:.1f})", flush=True)

    print(f"\nexact match, {a.steps} steps x batch {BATCH}, SmolLM2-135M-Instruct, {a.eval_rows} held-out rows "
          f"per task (95% bootstrap CIs; diff = ftpilot - trl, paired)")
    print(f"{'task':<10} {'decoding':<10} {'trl textbook':<22} {'ftpilot defaults':<22} {'diff':<24} load")
    for name, s, t_ft, t_trl, load in rows_out:
        dl = s["delta"]
        print(f"{name:<10} {s['decoding']:<10} {fmt(s['by']['trl']):<22} {fmt(s['by']['ftpilot']):<22} "
              f"{dl['delta']:+.3f} [{dl['ci95'][0]:+.2f}, {dl['ci95'][1]:+.2f}]{' *' if dl['excludes_zero'] else '  '}"
              f"   {load:.1f}")
    print("* the 95% CI of the difference excludes zero")


if __name__ == "__main__":
    main()
