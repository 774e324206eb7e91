"""Hardware probe: what this machine can do, so precision and device come from it, never from library defaults."""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GPU:
    index: int
    name: str
    memory_gb: float
    capability: str
    bf16: bool


@dataclass(frozen=True)
class Hardware:
    cpu_model: str
    cpu_cores: int
    ram_gb: float
    cpu_bf16: bool
    gpus: tuple[GPU, ...] = field(default_factory=tuple)

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"

    @property
    def bf16(self) -> bool:
        """bf16 is worth using: all GPUs support it, or (CPU only) the CPU has native bf16 instructions."""
        return all(g.bf16 for g in self.gpus) if self.gpus else self.cpu_bf16

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(device=self.device, bf16=self.bf16)
        return d


def _cpu_info() -> tuple[str, bool]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("", "unknown", platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    # Native bf16 math: AVX512_BF16 or AMX. Without them bf16 is emulated and ~16x slower (docs/FACTS.md).
    return model, bool(flags & {"avx512_bf16", "amx_bf16"})


@functools.cache
def probe() -> Hardware:
    import psutil

    cpu_model, cpu_bf16 = _cpu_info()
    gpus: list[GPU] = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                gpus.append(GPU(i, p.name, round(p.total_memory / 2**30, 1), f"{p.major}.{p.minor}", p.major >= 8))
    except ImportError:
        pass
    return Hardware(cpu_model, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
                    round(psutil.virtual_memory().total / 2**30, 1), cpu_bf16, tuple(gpus))


def memory_mb(peak: bool = False) -> float:
    """This process's memory in MB, the quantity the planner predicts: on a GPU torch's peak allocated memory;
    else the RSS now, or with `peak` the peak RSS (VmHWM; ru_maxrss is not this process's own: Linux carries it
    across exec, so a job started from a big parent would report the parent's peak)."""
    import sys

    torch = sys.modules.get("torch")  # only a process that uses torch can have CUDA memory
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    if peak:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    import psutil

    return psutil.Process().memory_info().rss / 2**20
