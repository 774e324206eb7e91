"""`evaluate` with free-text answers (the old way) against answers sized to the task (the default), in one run.

    .venv/bin/python bench/evaluate.py [--eval F --train F] [--rows 60] [--few-shot 3] [--adapter DIR]

Same eval rows, same candidates (base, k-shot, and an adapter if given), the same engine; once with
`decoding: free` (generate up to the token budget, as evaluate did before) and once with `decoding: auto`
(label-constrained answers when the references form a label set, else stop at the first line). The two ways run
in alternating order per candidate so load from other processes on a shared machine hits both alike. Prints
rows/s, wall and CPU seconds each way, the speed ratios, and each way's metrics with 95% CIs. Without --eval it uses the bundled ticket
task (3 labels). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval", help="eval file (any SFT format); default: the ticket sample task")
    ap.add_argument("--train", help="few-shot demonstrations (default: the ticket sample task)")
    ap.add_argument("--rows", type=int, default=60, help="a seeded sample of this many eval rows")
    ap.add_argument("--few-shot", type=int, default=3)
    ap.add_argument("--adapter", help="also evaluate this PEFT adapter dir")
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args()

    if not a.eval:
        from runtime.outputs import write_jsonl
        from runtime.samples import ticket_records

        tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
        rows = ticket_records(300, seed=0)
        a.train = str(write_jsonl(tmp / "train.jsonl", rows[:240]))
        a.eval = str(write_jsonl(tmp / "eval.jsonl", rows[240:]))
    root = os.path.commonpath([os.path.abspath(p) for p in (a.eval, a.train, a.adapter or a.eval)])
    os.environ.setdefault("FTPILOT_WORKSPACE_ROOT", root)

    from tools.evaluate import Candidate, EvaluateInput, run_evaluation

    cands = [Candidate(model=a.model, name="base"), Candidate(model=a.model, few_shot=a.few_shot,
                                                              name=f"{a.few_shot}shot")]
    if a.adapter:
        cands.append(Candidate(model=a.model, adapter=a.adapter, name="adapter"))
    from tools.evaluate import _engine

    _engine(cands[0])  # load the model before timing (engines are cached per process)
    out: dict = {}
    for i, cand in enumerate(cands):
        for way in (("free", "auto") if i % 2 == 0 else ("auto", "free")):
            cpu0 = time.process_time()
            o = run_evaluation(EvaluateInput(eval_path=a.eval, train_path=a.train, candidates=[cand], sample=a.rows,
                                             decoding=way, metrics=["exact_match", "accuracy", "f1"],
                                             batch_size=a.batch))
            r = o.results[0]
            out.setdefault(way, {})[cand.name] = {
                "rows_per_s": r["rows_per_s"], "wall_s": r["wall_s"], "cpu_s": round(time.process_time() - cpu0, 1),
                "completion_tokens": r["completion_tokens"], "max_new_tokens": r["max_new_tokens"],
                "decoding": r["decoding"]["mode"], "failed_requests": r["failed_requests"],
                **{m: f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]" for m, v in r["metrics"].items()}}
    for name in out["free"]:
        f, d = out["free"][name], out["auto"][name]
        out.setdefault("speedup_wall", {})[name] = round(f["wall_s"] / d["wall_s"], 2)
        out.setdefault("speedup_cpu", {})[name] = round(f["cpu_s"] / d["cpu_s"], 2)
    print(json.dumps({"eval": a.eval, "rows": a.rows, "note": "one run; on a shared machine wall time is noisy, "
                      "CPU seconds of this process less so", **out}, indent=1))


if __name__ == "__main__":
    main()
