"""`probe_hardware`: what this machine can run, for planning and for the person."""

from __future__ import annotations

from pydantic import BaseModel

from tools.registry import ToolInput, tool


class ProbeHardwareInput(ToolInput):
    pass


class GPUInfo(BaseModel):
    index: int
    name: str
    memory_gb: float
    capability: str
    bf16: bool


class ProbeHardwareOutput(BaseModel):
    device: str
    bf16: bool
    cpu_model: str
    cpu_cores: int
    ram_gb: float
    cpu_bf16: bool
    gpus: list[GPUInfo]


@tool("probe_hardware", "Report CPU, RAM, GPUs and bf16 support of this machine.", cost="instant")
def probe_hardware(args: ProbeHardwareInput) -> ProbeHardwareOutput:
    from runtime.hardware import probe

    return ProbeHardwareOutput(**probe().to_dict())
