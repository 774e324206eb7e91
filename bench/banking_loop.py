"""The default loop on a real intent set: decide, train with the proposed settings, evaluate (issue 10).

Banking77 (text,category CSVs): a seeded sample of --rows training rows -> `recommend_strategy` -> `train_sft` with
exactly the run it proposes -> `evaluate` base / k-shot / adapter on --eval-rows stratified test rows, the k-shot
prompt as the baseline. Prints each step's wall time, the proposal, the accuracies with 95% CIs, and the
adapter - k-shot difference with its paired 95% CI.

    PYTHONPATH=$PWD .venv/bin/python bench/banking_loop.py [--train CSV] [--test CSV] [--rows 1000] [--eval-rows 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def sample_csv(src: str, dst: Path, n: int, seed: int) -> None:
    with open(src, newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames
    random.Random(seed).shuffle(rows)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows[:n])


def ci(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train", default="/tmp/realdata/cmp/ws-before/banking_train.csv")
    p.add_argument("--test", default="/tmp/realdata/cmp/ws-before/banking_test.csv")
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--eval-rows", type=int, default=200)
    p.add_argument("--few-shot", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--root", default=None, help="workspace folder (default: a new temporary one)")
    a = p.parse_args()

    root = Path(a.root or tempfile.mkdtemp(prefix="banking-loop-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ.update(FTPILOT_DATA_DIR=str(root / "data"), FTPILOT_WORKSPACE_ROOT=str(root))
    train, test = root / "train.csv", root / "test.csv"
    sample_csv(a.train, train, a.rows, a.seed)
    shutil.copy(a.test, test)
    from tools import call_tool

    def timed(name, args):
        t0 = time.time()
        res = call_tool(name, args)
        if not res.ok:
            raise SystemExit(f"{name} failed: {res.error}")
        return res.output, time.time() - t0

    rec, t_rec = timed("recommend_strategy", {"task": "classify a bank customer's message into one of 77 intents",
                                              "train_path": str(train), "eval_path": str(test),
                                              "few_shot": a.few_shot})
    print(f"recommend_strategy: {rec['recommendation']} ({t_rec:.0f} s, load {os.getloadavg()[0]:.1f}): "
          f"{rec['summary']}", flush=True)
    proposed = rec.get("proposed_run")
    if not proposed:
        raise SystemExit("no run proposed")
    print("proposed run: " + json.dumps(proposed), flush=True)
    run, t_train = timed("train_sft", {**proposed, "wait": True})
    print(f"train_sft: {run['status']} in {t_train:.0f} s ({t_train / 60:.1f} min, load {os.getloadavg()[0]:.1f}); "
          f"metrics {json.dumps(run['metrics'])}", flush=True)
    k = a.few_shot
    ev, t_eval = timed("evaluate", {
        "eval_path": str(test), "train_path": str(train), "sample": a.eval_rows, "baseline": f"{k}-shot",
        "metrics": ["accuracy", "exact_match", "f1"], "out_dir": str(root / "eval"),
        "candidates": [{"name": "base"}, {"name": f"{k}-shot", "few_shot": k},
                       {"name": "adapter", "adapter": run["adapter_path"]}]})
    print(f"evaluate: {t_eval:.0f} s, n={ev['n']} ({json.dumps(ev['sample'])}), decoding {ev['decoding']}, "
          f"load {os.getloadavg()[0]:.1f}")
    for r in ev["results"]:
        print(f"  {r['name']:<8} accuracy {ci(r['metrics']['accuracy'])}  macro-F1 {ci(r['metrics']['f1'])}")
    for c in ev["comparisons"]:
        d = c["metrics"]["accuracy"]
        print(f"  {c['candidate']} - {c['baseline']}: {d['delta']:+.3f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"
              f"{' (excludes zero)' if d['excludes_zero'] else ''}")
    total = t_rec + t_train + t_eval
    print(f"loop wall time {total / 60:.1f} min (recommend {t_rec / 60:.1f}, train {t_train / 60:.1f}, "
          f"evaluate {t_eval / 60:.1f}); workspace {root}")


if __name__ == "__main__":
    main()
