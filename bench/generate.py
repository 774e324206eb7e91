"""Batched vs one-at-a-time generation on this machine, in one run; prints tokens/s and the ratio.

    .venv/bin/python bench/generate.py [--model default] [--batch 16] [--new-tokens 32]

Same prompts, greedy, the transformers engine: first each prompt alone, then all of them in batches of --batch
(left padding). Target on the 2-core CPU: 3x or more at batch 16. vLLM against this engine: bench/serve.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Write one sentence about the sea.", "What is a good name for a cat?", "Give me a tip for sleeping better.",
    "Describe a red apple.", "What should I cook tonight?", "Name three colors.", "Why is the sky blue?",
    "Say something kind.", "How do plants grow?", "What is a computer?", "Tell me about mountains.",
    "Suggest a weekend hobby.", "What is rain?", "Describe your ideal morning.", "How do birds fly?",
    "What is music?", "Explain what a bicycle is.", "Give a reason to read books.", "What is the moon?",
    "How do you make tea?", "Describe a forest.", "What is friendship?", "Name a fast animal.", "What is snow?",
    "How do fish breathe?", "Describe the city at night.", "What is a library?", "Why do we sleep?",
    "How are clouds made?", "Give a fun fact.", "What is a river?", "Describe a sunny day.",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--prompts", type=int, default=16, help="how many prompts (<= 32)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of both ways")
    a = ap.parse_args()

    from runtime.engines import Sampling, get_engine

    eng = get_engine(f"transformers:{a.model}")
    prompts = PROMPTS[: a.prompts]
    # min_new_tokens would change the work; instead count the tokens each way actually produced.
    s = Sampling(max_new_tokens=a.new_tokens)
    eng.generate(prompts[:2], s)  # warm-up (allocations, kernels)

    # Interleaved rounds (one-at-a-time then batched, then the other order), so load from other processes on a
    # shared machine hits both ways alike; totals are summed over rounds.
    t_single = t_batch = 0.0
    single: list = []
    batched: list = []
    for rnd in range(a.rounds):
        order = ("single", "batch") if rnd % 2 == 0 else ("batch", "single")
        for way in order:
            t0 = time.perf_counter()
            if way == "single":
                out = [eng.generate([p], s)[0] for p in prompts]
                t_single += time.perf_counter() - t0
                single += out
            else:
                out = eng.generate(prompts, s, batch_size=a.batch)
                t_batch += time.perf_counter() - t0
                batched += out
    tok_single = sum(c.completion_tokens for c in single)
    tok_batch = sum(c.completion_tokens for c in batched)
    same = sum(x.text == y.text for x, y in zip(single, batched))
    n = len(single)
    tps_single, tps_batch = tok_single / t_single, tok_batch / t_batch
    print(f"model={eng.describe()['path']} device={eng.describe()['device']} dtype={eng.describe()['dtype']} "
          f"threads={__import__('torch').get_num_threads()}")
    print(f"one-at-a-time: {n} requests, {tok_single} tokens in {t_single:.1f} s = {tps_single:.1f} tok/s")
    print(f"batched (batch={a.batch}): {tok_batch} tokens in {t_batch:.1f} s = {tps_batch:.1f} tok/s")
    print(f"identical greedy outputs: {same}/{n}; load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"RATIO batched/one-at-a-time tokens/s: {tps_batch / tps_single:.2f}x (target >= 3x at batch 16)")


if __name__ == "__main__":
    main()
