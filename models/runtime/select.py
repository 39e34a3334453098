"""Which runtime and precision `auto` means on a device, from the settings and the CPU's flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from models.runtime.base import Precision, Runtime

CPUINFO = Path("/proc/cpuinfo")
# bf16 pays only with AMX tiles: on this Sapphire Rapids VM, whose CPU flags show AVX-512 BF16 but
# no AMX, OpenVINO 2026.4 ran bf16 at 0.70-0.77x its fp32 rate (one thread, batch 1 and 8, best of
# 6-10 interleaved rounds), so AVX-512 BF16 alone keeps auto on fp32.
BF16_FLAGS = frozenset({"amx_bf16"})


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The first CPU's feature flags from /proc/cpuinfo; empty where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def cpu_has_bf16(cpuinfo: Path = CPUINFO) -> bool:
    return bool(cpu_flags(cpuinfo) & BF16_FLAGS)


def choose(
    runtime: Literal["auto", "torch", "openvino"],
    precision: Literal["auto", "fp32", "bf16"],
    device: torch.device,
    cpuinfo: Path = CPUINFO,
) -> tuple[Runtime, Precision]:
    """(runtime, precision) for the settings on `device`.

    auto on a CPU: OpenVINO, bf16 where the CPU has AMX (BF16_FLAGS), else fp32. On CUDA auto is
    torch in fp16; an explicit openvino there is left to the factory, which serves torch instead
    (OpenVINO runs on the CPU here). fp32 and bf16 are honoured everywhere.
    """
    chosen: Runtime = "openvino" if device.type == "cpu" else "torch"
    if runtime != "auto":
        chosen = runtime
    if device.type == "cuda" and chosen == "torch":
        return chosen, "fp16" if precision == "auto" else precision
    if precision != "auto":
        return chosen, precision
    # torch's CPU bf16 was measured well below OpenVINO's, so auto keeps torch exact.
    if chosen == "openvino" and cpu_has_bf16(cpuinfo):
        return chosen, "bf16"
    return chosen, "fp32"
