"""Benchmark: the full audit of 100,000 chat records (~60 tokens each), and MinHash libraries side by side.

    .venv/bin/python bench/audit.py [--rows 100000] [--exact] [--baseline OTHER_CHECKOUT]

Prints rows/s, wall time and peak RSS of `audit_dataset`, then MinHash signature throughput of datasketch and
rensa on the same word 3-gram shingles (datasketch on a subset: it is ~50x slower). With `--baseline` (another
checkout of ftpilot, e.g. `git archive main | tar -x -C /tmp/base`) it also times the same audit of the same file
with that code and with this code, alternating, in fresh processes, and prints the ratio. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = ["billing", "shipping", "account", "refund", "password", "delivery", "warranty", "invoice", "order", "app"]
VERBS = ["update", "cancel", "check", "change", "reset", "track", "confirm", "return", "replace", "fix"]
NOUNS = ["order", "card", "address", "package", "subscription", "device", "email", "payment", "plan", "screen",
         "router", "laptop", "ticket", "receipt", "account", "profile", "settings", "battery", "cable", "charger"]
FILLER = ["please", "today", "again", "quickly", "for me", "as soon as possible", "this week", "if you can",
          "after the update", "from my phone"]


def make_records(n: int, seed: int = 0):
    rng = random.Random(seed)
    for i in range(n):
        user = (f"Hi, I need to {rng.choice(VERBS)} my {rng.choice(NOUNS)} and the {rng.choice(NOUNS)} "
                f"{rng.choice(FILLER)}. Order {rng.randint(1000, 99999)} was about {rng.choice(TOPICS)}.")
        answer = (f"Sure. To {rng.choice(VERBS)} the {rng.choice(NOUNS)}, open {rng.choice(NOUNS)} settings, "
                  f"choose {rng.choice(TOPICS)} and confirm {rng.choice(FILLER)}.")
        yield {"messages": [{"role": "system", "content": "You are a support agent."},
                            {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_minhash(path: Path, subset: int) -> dict:
    import numpy as np
    import rensa
    from datasketch import MinHash

    from runtime import dataio
    from tools.dataset._analyze import NUM_PERM, SHINGLE, normalize, shingle_hashes, signatures

    vocab, ids, offs = {}, [], [0]
    for _, rec in dataio.iter_records(path):
        text = normalize(" ".join(m["content"] for m in rec["messages"] if m["role"] != "system"))
        ids.extend(vocab.setdefault(w, len(vocab)) for w in text.split())
        offs.append(len(ids))
    hashes, rows_of = shingle_hashes(np.asarray(ids, np.uint64), np.asarray(offs, np.int64), SHINGLE)
    n = len(offs) - 1
    counts = np.bincount(rows_of, minlength=n)
    row_offs = np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64)
    t = time.perf_counter()
    m = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, row_offs, NUM_PERM, 7)
    lsh = rensa.RMinHashLSH(0.75, NUM_PERM, 32)
    lsh.insert_matrix(m, 0)
    flags = lsh.query_duplicate_flags_matrix(m)
    t_rensa = time.perf_counter() - t
    t = time.perf_counter()
    sig, _ = signatures(np.asarray(ids, np.uint32), np.asarray(offs, np.int64))
    t_ours = time.perf_counter() - t
    k = min(subset, n)
    t = time.perf_counter()
    from datasketch import MinHashLSH

    dlsh = MinHashLSH(threshold=0.75, num_perm=NUM_PERM)
    for i in range(k):
        mh = MinHash(num_perm=NUM_PERM, seed=7)
        mh.update_batch([int(h).to_bytes(8, "little") for h in hashes[int(row_offs[i]):int(row_offs[i + 1])]])
        dlsh.insert(i, mh)
    t_ds = time.perf_counter() - t
    return {"rensa_rows_per_s": round(n / t_rensa), "rensa_s": round(t_rensa, 3), "rensa_rows": n,
            "rensa_lsh_candidates": int(sum(flags)),
            "audit_signatures_as_numpy_s": round(t_ours, 3),
            "datasketch_rows_per_s": round(k / t_ds), "datasketch_s": round(t_ds, 3), "datasketch_rows": k,
            "speedup": round((n / t_rensa) / (k / t_ds), 1)}


_TIME_AUDIT = ("import json, time; from tools import call_tool; call_tool('audit_dataset', {'path': 'warm.jsonl'}); "
               "t = time.perf_counter(); r = call_tool('audit_dataset', {'path': 'chat.jsonl'}); "
               "print(json.dumps({'ok': r.ok, 'wall_s': time.perf_counter() - t}))")


def side_by_side(tmp: Path, baseline: Path, rounds: int = 2) -> dict:
    """The same audit with the baseline's code and this checkout's, alternating, each in a fresh process."""
    here = Path(__file__).resolve().parents[1]
    walls: dict[str, list[float]] = {"baseline": [], "this": []}
    for i in range(rounds):
        for name, code in (("baseline", baseline), ("this", here)):
            env = {**os.environ, "PYTHONPATH": str(code), "FTPILOT_DATA_DIR": str(tmp / f"data-{name}-{i}")}
            out = subprocess.run([sys.executable, "-c", _TIME_AUDIT], cwd=code, env=env, capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            walls[name].append(round(json.loads(out)["wall_s"], 2))
    best = {k: min(v) for k, v in walls.items()}
    return {"wall_s": walls, "this_over_baseline": round(best["this"] / best["baseline"], 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--exact", action="store_true", help="also time exact token counts for every row")
    ap.add_argument("--minhash-subset", type=int, default=5_000)
    ap.add_argument("--baseline", type=Path, help="another ftpilot checkout to time side by side")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.update(FTPILOT_WORKSPACE_ROOT=str(tmp), FTPILOT_DATA_DIR=str(tmp / "data"))
        if "FTPILOT_MODELS_DIR" not in os.environ:
            import platformdirs

            os.environ["FTPILOT_MODELS_DIR"] = str(Path(platformdirs.user_data_dir("ftpilot")) / "models")
        from runtime.outputs import write_jsonl
        from tools import call_tool

        path = write_jsonl(tmp / "chat.jsonl", make_records(a.rows))
        size_mb = path.stat().st_size / 2**20
        # warm the tokenizer and imports so the timing is the audit itself
        write_jsonl(tmp / "warm.jsonl", make_records(10, seed=1))
        call_tool("audit_dataset", {"path": "warm.jsonl"})
        rss_before = peak_rss_mb()
        t = time.perf_counter()
        res = call_tool("audit_dataset", {"path": "chat.jsonl"})
        wall = time.perf_counter() - t
        assert res.ok, res.error
        out = res.output
        print(json.dumps({"rows": out["rows"], "file_mb": round(size_mb, 1), "wall_s": round(wall, 2),
                          "rows_per_s": round(out["rows"] / wall), "peak_rss_mb": round(peak_rss_mb()),
                          "peak_rss_before_audit_mb": round(rss_before),
                          "rss_growth_mb": round(peak_rss_mb() - rss_before), "timing_s": out["summary"]["timing_s"],
                          "tokens": out["summary"]["tokens"],
                          "findings": {f["check"]: f["count"] for f in out["findings"]}}, indent=1))
        if a.exact:
            t = time.perf_counter()
            res = call_tool("audit_dataset", {"path": "chat.jsonl", "exact_token_counts": True})
            print(json.dumps({"exact_token_counts_wall_s": round(time.perf_counter() - t, 2),
                              "tokens": res.output["summary"]["tokens"]}))
        if a.baseline:
            print(json.dumps({"side_by_side": side_by_side(tmp, a.baseline.resolve())}, indent=1))
        print(json.dumps({"minhash": bench_minhash(path, a.minhash_subset)}, indent=1))
        print("MinHash choice: rensa (batched Rust signatures + LSH), by the speed measured above.")


if __name__ == "__main__":
    main()
