"""Cold start to first frame, and keystroke-to-render latency while a job streams metrics.

    .venv/bin/python bench/startup.py [--keys 60] [--rate 50] [--baseline OTHER_CHECKOUT]

1. Cold start: a fresh interpreter imports the app and renders its first frame (headless, 120x40) with the
   default brain setting; we time from process spawn to the first frame, 5 times, and print the median. The
   brain loads after the first frame, in a worker. With --baseline, another checkout (e.g. a worktree of main)
   is started in alternation with this one, and the ratio of the medians is printed: same machine, same load.
2. Keystroke latency: the runs screen is open on a job whose metrics file grows at --rate lines/s (a writer
   thread, the way a training job appends); we press up/down in the jobs table and time each key until the
   cursor moved and the screen refreshed. The same is measured with no job streaming, and the ratio printed.
   Also printed: how many metric reads were coalesced into how many plot renders.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
from assistant.app import create_app
app = create_app()
def first(a):
    heavy = [m for m in ("torch", "transformers") if m in sys.modules]
    print(json.dumps({"first_frame_s": time.perf_counter() - t0, "heavy_at_first_frame": heavy}), flush=True)
    a.exit()
app.first_frame_hooks.append(first)
app.run(headless=True, size=(120, 40))
"""


def _first_frame(root: Path, env: dict) -> tuple[float, float, list]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, cwd=root,
                         timeout=120)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("{")), None)
    if line is None:
        raise SystemExit(f"child failed in {root}:\n{out.stderr[-2000:]}")
    data = json.loads(line)
    return time.perf_counter() - t, data["first_frame_s"], data["heavy_at_first_frame"]


def cold_start(runs: int = 5, baseline: Path | None = None) -> dict:
    """Median first-frame time of this checkout (and of `baseline`, started in alternation)."""
    tmp = tempfile.mkdtemp(prefix="ftpilot-bench-")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FTPILOT_DATA_DIR": f"{tmp}/data", "FTPILOT_WORKSPACE_ROOT": tmp,
           "FTPILOT_CONFIG_FILE": f"{tmp}/c.toml"}
    roots = {"this": ROOT} | ({"baseline": baseline} if baseline else {})
    found: dict = {name: ([], [], None) for name in roots}
    for _ in range(runs):
        for name, root in roots.items():
            wall, inner, heavy = _first_frame(root, {**env, "PYTHONPATH": str(root)})
            found[name][0].append(wall)
            found[name][1].append(inner)
            found[name] = (found[name][0], found[name][1], heavy)
    return {name: {"spawn_to_exit_s_median": statistics.median(w), "import_to_first_frame_s_median":
                   statistics.median(i), "heavy_modules_at_first_frame": h} for name, (w, i, h) in found.items()}


class IdleBrain:
    """The bench measures the UI, not a model: a brain that is ready and never called."""

    kind, model, ready = "bench", "none", True

    def load(self):
        pass

    def describe(self):
        return "bench · no model"

    def stream(self, req):
        return iter(())


async def key_latency(keys: int, rate: float | None) -> dict:
    from assistant.app import create_app
    from assistant.app.screens import RunsScreen
    from runtime import store
    from runtime.settings import reset_settings
    from runtime.store import reset_engines

    tmp = Path(tempfile.mkdtemp(prefix="ftpilot-bench-"))
    os.environ.update(FTPILOT_DATA_DIR=str(tmp / "data"), FTPILOT_WORKSPACE_ROOT=str(tmp),
                      FTPILOT_CONFIG_FILE=str(tmp / "c.toml"))
    reset_settings()
    reset_engines()
    metrics = tmp / "metrics.jsonl"
    metrics.write_text("")
    (tmp / "log.txt").write_text("")
    jobs = [store.add(store.Job(kind="train_sft", method="lora", status="running", total_steps=100000,
                                metrics_path=str(metrics), log_path=str(tmp / "log.txt")))]
    for _ in range(5):
        jobs.append(store.add(store.Job(kind="train_sft", status="succeeded")))
    stop = threading.Event()
    written = [0]

    def writer():
        step = 0
        with metrics.open("a") as f, (tmp / "log.txt").open("a") as log:
            while not stop.is_set():
                step += 1
                f.write(json.dumps({"step": step, "loss": 3.0 / (1 + step / 100), "s_per_step": 1 / rate}) + "\n")
                log.write(f"step {step}\n")
                f.flush()
                log.flush()
                written[0] = step
                time.sleep(1 / rate)

    app = create_app(brain=IdleBrain())
    lat = []
    async with app.run_test(size=(120, 40)) as pilot:
        while app.agent is None:
            await pilot.pause(0.05)
        t = None
        if rate:
            t = threading.Thread(target=writer, daemon=True)
            t.start()
        app.push_screen(RunsScreen(jobs[0].id))
        await pilot.pause(1.0)
        screen = app.screen
        table = screen.query_one("#jobs")
        from textual import events

        rt = []
        for i in range(keys):
            before = table.cursor_row
            key = "down" if i % 2 == 0 else "up"
            t0 = time.perf_counter()
            ev = events.Key(key, None)
            ev.set_sender(app)
            app._driver.send_message(ev)  # the path a real terminal's key takes
            deadline = t0 + 5
            while table.cursor_row == before and time.perf_counter() < deadline:
                await asyncio.sleep(0.0005)
            lat.append(time.perf_counter() - t0)
            await pilot.pause(0.03)
            # The pilot's round trip: key press until the app is idle again (an upper bound incl. repaint).
            t0 = time.perf_counter()
            await pilot.press("up" if key == "down" else "down")
            rt.append(time.perf_counter() - t0)
            await pilot.pause(0.03)
        stop.set()
        renders = screen.renders
    lat.sort()
    return {"median_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
            "roundtrip_median_ms": 1000 * statistics.median(rt),
            "metric_lines_written": written[0], "plot_renders": renders}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--rate", type=float, default=50.0, help="metric lines per second while streaming")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to compare, run in alternation")
    a = ap.parse_args()
    starts = cold_start(a.runs, a.baseline)
    for name, cs in starts.items():
        print(f"cold start ({name}): import to first frame {cs['import_to_first_frame_s_median']:.3f} s (median of "
              f"{a.runs}); spawn to exit {cs['spawn_to_exit_s_median']:.3f} s; heavy modules at first frame: "
              f"{cs['heavy_modules_at_first_frame'] or 'none'}")
    if a.baseline:
        ratio = (starts["this"]["import_to_first_frame_s_median"]
                 / starts["baseline"]["import_to_first_frame_s_median"])
        print(f"first frame, this / baseline: {ratio:.2f}x")
    idle = asyncio.run(key_latency(a.keys, None))
    busy = asyncio.run(key_latency(a.keys, a.rate))
    print(f"keystroke handled, runs screen idle: median {idle['median_ms']:.1f} ms, p95 {idle['p95_ms']:.1f} ms; "
          f"pilot round trip to idle (incl. repaint) median {idle['roundtrip_median_ms']:.1f} ms")
    print(f"keystroke handled, job streaming {a.rate:.0f} lines/s: median {busy['median_ms']:.1f} ms, "
          f"p95 {busy['p95_ms']:.1f} ms; round trip median {busy['roundtrip_median_ms']:.1f} ms; "
          f"ratio streaming/idle {busy['median_ms'] / idle['median_ms']:.2f}x")
    print(f"coalescing: {busy['metric_lines_written']} metric lines -> {busy['plot_renders']} plot renders")


if __name__ == "__main__":
    main()
