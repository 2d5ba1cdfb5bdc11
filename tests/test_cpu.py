"""CPU facts: the name and the instruction-set flags that choose the serving path."""

from __future__ import annotations

import torch

import posture.cpu as cpu

_CPUINFO = """processor\t: 0
model name\t: Example CPU 9000
flags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 amx_tile
processor\t: 1
model name\t: Example CPU 9000
"""


def test_name_and_flags_come_from_cpuinfo(monkeypatch):
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: _CPUINFO)
    assert cpu.cpu_name() == "Example CPU 9000"
    assert cpu.cpu_flags() == ["avx2", "avx512f", "avx512_bf16"]  # only those that matter, in a fixed order
    monkeypatch.setattr(cpu, "bf16_supported", lambda: True)
    assert cpu.describe_cpu() == "Example CPU 9000 (avx2, avx512f, avx512_bf16; native bf16: True)"


def test_without_cpuinfo_the_flags_are_unknown(monkeypatch):
    monkeypatch.setattr(cpu, "_cpuinfo", lambda: "")
    monkeypatch.setattr(cpu.platform, "processor", lambda: "")
    monkeypatch.setattr(cpu.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(cpu, "bf16_supported", lambda: False)
    assert cpu.cpu_flags() == [] and cpu.cpu_name() == "arm64"
    assert cpu.describe_cpu() == "arm64 (flags unknown; native bf16: False)"


def test_bf16_needs_onednn_and_the_instructions(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu.bf16_supported() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu.bf16_supported() is True
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert cpu.bf16_supported() is False
