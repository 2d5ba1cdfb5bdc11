"""What this CPU computes natively: the facts serving and training choose their precision by.

Never assume bfloat16: many laptop and cloud CPUs (AVX2 only) emulate it at a fraction of
fp32's speed. oneDNN computes it natively with AVX512-BF16 or AMX.
"""

from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["bf16_supported", "cpu_flags", "cpu_name", "describe_cpu"]

# Instruction-set flags (as /proc/cpuinfo spells them) that decide which serving path is fastest.
_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 matrix instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:  # not Linux: the flags are unknown, the name comes from platform
        return ""


def cpu_name() -> str:
    """The CPU's model name (e.g. "Intel(R) Xeon(R) Processor"), as the OS reports it."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> list[str]:
    """The instruction-set flags among those that matter here (AVX2, AVX-512, VNNI, BF16, AMX) this CPU has."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in _FLAGS_OF_INTEREST if f in have]
    return []


def describe_cpu() -> str:
    """One line naming the CPU and its relevant flags, for logs and benchmark results."""
    flags = cpu_flags()
    return f"{cpu_name()} ({', '.join(flags) if flags else 'flags unknown'}; native bf16: {bf16_supported()})"
