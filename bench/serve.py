"""vLLM (the managed server's CPU build) against ftpilot's transformers engine, side by side in one run.

    .venv/bin/python bench/serve.py [--model default] [--prompts 64] [--new-tokens 64] [--inflight 32]
                                    [--variants default,reserve0] [--dtypes auto]

The same chat prompts, greedy, through the transformers engine (batches of --inflight) and through a vLLM server
(--inflight requests in flight) for each server variant: thread placement (`default`: vLLM's own, which keeps one
core for its front end; `reserve0`: VLLM_CPU_NUM_OF_RESERVED_CPU=0, OpenMP threads on every core; `nobind`:
VLLM_CPU_OMP_THREADS_BIND=nobind with OMP_NUM_THREADS = all cores, placement left to the OS) and dtype (`auto`
= what runtime/serving.py picks: bf16 where the CPU has it natively, else fp32; or float32/bfloat16). Prints per
way: tokens/s, p50/p95 request latency, server start time, greedy outputs identical to the transformers
engine's, and the ratio to the transformers engine (run before and after the servers; the mean is used).
Each server is a scratch one in its own folder (serving.scratch), stopped afterwards; a running managed server is
left alone. The machine's load average is printed with the numbers: on a shared machine, say so next to them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = ["the sea", "a cat", "sleeping well", "a red apple", "cooking dinner", "colors", "the sky", "kindness",
          "plants", "computers", "mountains", "hobbies", "rain", "mornings", "birds", "music"]
ASKS = ["Write one sentence about {}.", "Give me two facts about {}.", "Explain {} to a child.",
        "Write a short poem about {}."]
PROMPTS = [a.format(t) for a in ASKS for t in TOPICS]  # 64 distinct chat prompts

VARIANTS = {
    "default": {},
    "reserve0": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    "nobind": {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))},
}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def measure(engine, prompts: list[str], new_tokens: int, inflight: int) -> dict:
    from runtime.engines import Sampling

    s = Sampling(max_new_tokens=new_tokens)
    engine.generate(prompts[:2], s, batch_size=2)  # warm-up
    t0 = time.perf_counter()
    outs = engine.generate(prompts, s, batch_size=inflight)
    wall = time.perf_counter() - t0
    errors = [c.error for c in outs if c.error]
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {errors[0]}")
    tokens = sum(c.completion_tokens for c in outs)
    # a request's latency: its own round trip (vLLM), or the wall time of the batch it was part of (transformers)
    lat = [c.latency_s for c in outs]
    return {"tok_s": tokens / wall, "tokens": tokens, "wall_s": wall, "p50": pct(lat, 50), "p95": pct(lat, 95),
            "texts": [c.text for c in outs], "load": os.getloadavg()[0]}


def served(model: str, variant: str, dtype: str, prompts: list[str], new_tokens: int, inflight: int) -> dict:
    from runtime import serving
    from runtime.engines import get_engine

    saved = {k: os.environ.get(k) for k in VARIANTS[variant]}
    os.environ.update(VARIANTS[variant])  # the server's environment is this process's (serving._env)
    try:
        t0 = time.perf_counter()
        with serving.scratch(model, dtype=None if dtype == "auto" else dtype) as st:
            start_s = time.perf_counter() - t0
            eng = get_engine({"backend": "openai", "base_url": st.url, "model": st.model, "concurrency": inflight,
                              "structured": "prompt"})
            out = measure(eng, prompts, new_tokens, inflight)
            eng.close()
            out.update(start_s=start_s, dtype=st.dtype)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--variants", default="default,reserve0", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--dtypes", default="auto", help="comma list of auto, float32, bfloat16")
    a = ap.parse_args()

    from runtime import serving
    from runtime.engines import get_engine

    if not serving.available():
        raise SystemExit("no vLLM runtime here: `make vllm` builds .venv-vllm")
    prompts = PROMPTS[: a.prompts]
    hf = get_engine(f"transformers:{a.model}")
    d = hf.describe()
    print(f"{len(prompts)} chat prompts, {a.new_tokens} new tokens, greedy, {a.inflight} in flight; model {d['path']}; "
          f"{os.cpu_count()} CPUs; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    runs = {"transformers (before)": measure(hf, prompts, a.new_tokens, a.inflight)}
    for variant in a.variants.split(","):
        for dtype in a.dtypes.split(","):
            name = f"vllm {variant} {dtype}"
            runs[name] = served(a.model, variant, dtype, prompts, a.new_tokens, a.inflight)
            r = runs[name]
            print(f"  {name}: started in {r['start_s']:.0f} s, {r['tok_s']:.0f} tok/s (load {r['load']:.1f})",
                  flush=True)
    runs["transformers (after)"] = measure(hf, prompts, a.new_tokens, a.inflight)
    hf_tok_s = statistics.mean([runs["transformers (before)"]["tok_s"], runs["transformers (after)"]["tok_s"]])
    reference = runs["transformers (before)"]["texts"]
    print(f"\n{'way':34} {'dtype':9} {'tok/s':>7} {'p50 s':>7} {'p95 s':>7} {'start s':>8} {'identical':>10} "
          f"{'ratio':>6} {'load':>5}")
    for name, r in runs.items():
        same = sum(x == y for x, y in zip(r["texts"], reference))
        start = f"{r['start_s']:.0f}" if "start_s" in r else "-"
        print(f"{name:34} {r.get('dtype', d['dtype']):9} {r['tok_s']:7.1f} {r['p50']:7.2f} {r['p95']:7.2f} "
              f"{start:>8} {same:>5}/{len(prompts):<4} {r['tok_s'] / hf_tok_s:5.2f}x {r['load']:5.1f}")
    best = max((n for n in runs if n.startswith("vllm")), key=lambda n: runs[n]["tok_s"])
    print(f"\nRATIO best vLLM ({best}) / transformers engine tokens/s: {runs[best]['tok_s'] / hf_tok_s:.2f}x "
          f"(target >= 2x); load average at the end {os.getloadavg()[0]:.1f} on a shared machine")


if __name__ == "__main__":
    main()
