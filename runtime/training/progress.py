"""What a run reports while it trains: one metrics row per logged step (loss, learning rate, tokens/s that count
real tokens only, input and label tokens separately, s/step, ETA, memory), the heartbeat, cancel -> checkpoint,
and divergence: a non-finite loss fails the run naming its step, and metrics.jsonl stays strict JSON."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

from runtime import jobs
from runtime.errors import FtpilotError
from runtime.hardware import memory_mb
from runtime.training.common import CANCEL, IN_TRAINING_LOOP, JobContext, is_main


class Diverged(FtpilotError):
    code = "diverged"


class TokenCounting:
    """A mixin for any TRL/transformers trainer: counts the non-padding input tokens and the label tokens of each
    micro-batch it trains on (on the device, no sync), and adds the running totals, summed over ranks, to each
    training log as `input_tokens` and `label_tokens`. TRL's `num_input_tokens_seen` counts padding."""

    def training_step(self, model, inputs, *args, **kwargs):
        import torch

        mask = inputs.get("attention_mask")
        ids = inputs.get("input_ids")
        counted = mask.sum() if mask is not None else (ids.numel() if ids is not None else 0)
        if inputs.get("completion_mask") is not None:
            labels = inputs["completion_mask"].sum()
        elif inputs.get("labels") is not None:
            labels = (inputs["labels"][..., 1:] != -100).sum()
        else:
            labels = 0
        step = torch.stack([torch.as_tensor(counted, device=self.args.device).long(),
                            torch.as_tensor(labels, device=self.args.device).long()])
        self._ftpilot_tokens = step if getattr(self, "_ftpilot_tokens", None) is None else self._ftpilot_tokens + step
        return super().training_step(model, inputs, *args, **kwargs)

    def log(self, logs: dict, *args, **kwargs) -> None:
        totals = getattr(self, "_ftpilot_tokens", None)
        if "loss" in logs and totals is not None:
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals.clone(), reduction="sum")
            logs["input_tokens"], logs["label_tokens"] = (int(x) for x in totals.tolist())
        super().log(logs, *args, **kwargs)


def counting(trainer_cls: type) -> type:
    """`trainer_cls` with TokenCounting mixed in."""
    return type(f"Counting{trainer_cls.__name__}", (TokenCounting, trainer_cls), {})


def finite_row(logs: dict) -> dict:
    """Numbers of a log as JSON can hold them: NaN and infinity become null."""
    out: dict[str, Any] = {}
    for key, value in logs.items():
        if isinstance(value, (int, float)) and not key.startswith("total_flos"):
            out[key] = round(float(value), 6) if math.isfinite(value) else None
    return out


def make_callback(ctx: JobContext):
    from transformers import TrainerCallback

    class FtpilotCallback(TrainerCallback):
        """Metrics JSONL + JobMetric rows, heartbeat and step in the Job row, cancel -> checkpoint and stop."""

        def __init__(self):
            self._last = None          # (time, step, input tokens, label tokens) at the previous training log
            self._first = None         # the same at the first training log (ETA from the mean since then)
            self._beat = threading.Thread(target=self._heartbeat, daemon=True)
            self._stop = threading.Event()

        def _heartbeat(self):
            while not self._stop.wait(10.0):
                try:
                    jobs.heartbeat(ctx.job_id)
                except Exception:  # noqa: BLE001 - a busy store must not kill training
                    pass

        def on_train_begin(self, args, state, control, **kw):
            IN_TRAINING_LOOP.set()
            self._last = (time.perf_counter(), state.global_step, 0, 0)
            if is_main():
                jobs.update_job(ctx.job_id, total_steps=state.max_steps, step=state.global_step)
                self._beat.start()
            if CANCEL.is_set():
                control.should_training_stop = True

        def on_step_end(self, args, state, control, **kw):
            if CANCEL.is_set():
                control.should_save = True
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs:
                return
            bad = [k for k in ("loss", "grad_norm") if isinstance(logs.get(k), float) and not math.isfinite(logs[k])]
            diverged = bool(bad)
            if is_main():
                row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), "time": round(time.time(), 3),
                       **finite_row(logs)}
                if "loss" in logs and not diverged:
                    row.update(self._rates(state, logs))
                if diverged:
                    row["diverged"] = True
                row["memory_mb"] = round(memory_mb(), 1)
                jobs.record_metric(ctx.job_id, ctx.metrics_path, row)
            if diverged:
                raise Diverged(f"training diverged: the {bad[0]} became {logs[bad[0]]} at step {state.global_step}",
                               hint="Lower learning_rate (or check the data for empty answers), then start again.")

        def _rates(self, state, logs) -> dict:
            now = (time.perf_counter(), state.global_step, logs.get("input_tokens", 0), logs.get("label_tokens", 0))
            out: dict[str, Any] = {}
            if self._last is not None and now[1] > self._last[1]:
                dt = now[0] - self._last[0]
                out["s_per_step"] = round(dt / (now[1] - self._last[1]), 3)
                if dt > 0 and now[2] > self._last[2]:
                    out["tokens_per_s"] = round((now[2] - self._last[2]) / dt, 1)
                    out["label_tokens_per_s"] = round((now[3] - self._last[3]) / dt, 1)
            if self._first is None:
                self._first = now
            elif now[1] > self._first[1] and state.max_steps > 0:
                mean = (now[0] - self._first[0]) / (now[1] - self._first[1])
                out["eta_s"] = round(max(0, state.max_steps - now[1]) * mean, 1)
            self._last = now
            return out

        def on_train_end(self, args, state, control, **kw):
            self._stop.set()

    return FtpilotCallback()
