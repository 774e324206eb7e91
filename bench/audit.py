"""Benchmark: the full audit of 100,000 chat records (~60 tokens each), and two LSH indexes side by side.

    .venv/bin/python bench/audit.py [--rows 100000] [--exact] [--baseline OTHER_CHECKOUT] [--lsh-rows N]

Prints rows/s, wall time and peak RSS of `audit_dataset`, then the audit's LSH banding against rensa's own LSH
index (`RMinHashLSH`) on the same rows: time and verified pairs of each. With `--baseline` (another
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


def bench_lsh(path: Path, threshold: float = 0.75) -> dict:
    """The audit's LSH (runtime.neardup: banding, each row checked against the first row of every bucket it
    shares) against rensa's own index (RMinHashLSH: every candidate it returns checked) on the same rows."""
    import numpy as np
    import rensa

    from runtime import dataio, neardup
    from runtime.labels import normalize_label

    vocab, ids, offs, texts = {}, [], [0], []
    for _, rec in dataio.iter_records(path):
        text = normalize_label(" ".join(m["content"] for m in rec["messages"] if m["role"] != "system"))
        texts.append(text)
        ids.extend(vocab.setdefault(w, len(vocab)) for w in text.split())
        offs.append(len(ids))
    ids, offs = np.asarray(ids, np.uint32), np.asarray(offs, np.int64)
    t = time.perf_counter()
    sig, _ = neardup.signatures(ids, offs)
    t_sig = time.perf_counter() - t
    t = time.perf_counter()
    ours = neardup.similar_pairs(sig, threshold)
    t_ours = time.perf_counter() - t
    # rensa's index answers "which keys" only for RMinHash objects, which it builds from string tokens
    t = time.perf_counter()
    objs = rensa.RMinHash.from_token_sets([[" ".join(w[i:i + neardup.SHINGLE]) for i in range(
        max(1, len(w) - neardup.SHINGLE + 1))] for w in (x.split() for x in texts)], neardup.NUM_PERM, neardup.SEED)
    t_objs = time.perf_counter() - t
    t = time.perf_counter()
    lsh = rensa.RMinHashLSH(threshold, neardup.NUM_PERM, neardup.NUM_BANDS)
    lsh.insert_many(objs)
    candidates = lsh.query_all(objs)
    theirs = {(i, j) for i, cs in enumerate(candidates) for j in cs if j > i and objs[i].jaccard(objs[j]) >= threshold}
    t_rensa = time.perf_counter() - t
    return {"rows": len(texts), "signatures_s": round(t_sig, 2), "banding_s": round(t_ours, 2),
            "banding_pairs": len(ours), "rensa_objects_s": round(t_objs, 2), "rensa_lsh_and_verify_s": round(t_rensa, 2),
            "rensa_candidates": sum(len(c) - 1 for c in candidates), "rensa_pairs": len(theirs),
            "rensa_over_banding": round((t_objs + t_rensa) / max(t_ours, 1e-9), 1)}


_TIME_AUDIT = ("import json, time; from tools import call_tool; call_tool('audit_dataset', {'path': 'warm.jsonl'}); "
               "t, c = time.perf_counter(), time.process_time(); r = call_tool('audit_dataset', {'path': 'chat.jsonl'}); "
               "print(json.dumps({'ok': r.ok, 'wall_s': time.perf_counter() - t, 'cpu_s': time.process_time() - c}))")


def side_by_side(tmp: Path, baseline: Path, rounds: int = 2) -> dict:
    """The same audit with the baseline's code and this checkout's, alternating, each in a fresh process. CPU
    seconds (all threads) are printed beside wall seconds: on a shared machine they vary less."""
    here = Path(__file__).resolve().parents[1]
    runs: dict[str, dict[str, list[float]]] = {k: {"wall_s": [], "cpu_s": []} for k in ("baseline", "this")}
    for i in range(rounds):
        for name, code in (("baseline", baseline), ("this", here)):
            env = {**os.environ, "PYTHONPATH": str(code), "FTPILOT_DATA_DIR": str(tmp / f"data-{name}-{i}")}
            out = json.loads(subprocess.run([sys.executable, "-c", _TIME_AUDIT], cwd=code, env=env, capture_output=True,
                                            text=True, check=True).stdout.strip().splitlines()[-1])
            for k in ("wall_s", "cpu_s"):
                runs[name][k].append(round(out[k], 2))
    ratio = {k: round(min(runs["this"][k]) / min(runs["baseline"][k]), 2) for k in ("wall_s", "cpu_s")}
    return {**runs, "this_over_baseline_best": ratio}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--exact", action="store_true", help="also time exact token counts for every row")
    ap.add_argument("--lsh-rows", type=int, default=100_000, help="rows for the banding vs rensa LSH comparison "
                    "(0: skip it)")
    ap.add_argument("--baseline", type=Path, help="another ftpilot checkout to time side by side")
    ap.add_argument("--rounds", type=int, default=2, help="alternating runs of each side (best counts)")
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
            print(json.dumps({"side_by_side": side_by_side(tmp, a.baseline.resolve(), a.rounds)}, indent=1))
        if a.lsh_rows:
            lsh_path = path if a.lsh_rows == a.rows else write_jsonl(tmp / "lsh.jsonl", make_records(a.lsh_rows))
            print(json.dumps({"lsh": bench_lsh(lsh_path)}, indent=1))


if __name__ == "__main__":
    main()
