"""Device choice: "auto" takes CUDA, then MPS, then the CPU; absent devices are clear errors.

No GPU is needed: what torch reports is replaced, so every branch runs on any machine."""

from __future__ import annotations

import pytest
import torch

import posture.devices as devices
from conftest import CLASSES
from posture.checkpoints import ModelInfo
from posture.devices import autocast_dtype, available_devices, resolve_device
from posture.errors import UsageError
from posture.models import build_model
from posture.predict import Predictor


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has the given devices: machine(cuda=2, mps=True)."""
    def have(cuda: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
        monkeypatch.setattr(devices, "_mps_available", lambda: mps)

    return have


@pytest.mark.parametrize("cuda, mps, want", [(0, False, "cpu"), (0, True, "mps"), (1, True, "cuda"), (2, False, "cuda")])
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, want):
    machine(cuda=cuda, mps=mps)
    assert resolve_device("auto") == resolve_device(None) == resolve_device(" AUTO ") == torch.device(want)
    assert available_devices()[0] == want and available_devices()[-1] == "cpu"


def test_named_devices(machine):
    machine(cuda=2)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda:0")
    with pytest.raises(UsageError, match="2 CUDA device"):
        resolve_device("cuda:2")
    with pytest.raises(UsageError, match="must be a number"):
        resolve_device("cuda:x")


def test_an_absent_or_unknown_device_is_a_clear_error(machine):
    machine(cuda=0, mps=False)
    with pytest.raises(UsageError, match="'cuda' is not available on this machine; available: cpu"):
        resolve_device("cuda")
    with pytest.raises(UsageError, match="not available"):
        resolve_device("mps")
    with pytest.raises(UsageError, match="auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_mixed_precision_only_on_a_gpu(monkeypatch):
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("mps")) is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(torch.device("cuda")) is torch.float16


def test_the_predictor_serves_on_the_device_it_resolved(machine):
    machine(cuda=0)
    info = ModelInfo("resnet14", list(CLASSES), 32)
    predictor = Predictor(build_model("resnet14", len(CLASSES)), info, precision="fp32", device="auto")
    assert predictor.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())
    with pytest.raises(UsageError, match="not available"):
        Predictor(build_model("resnet14", len(CLASSES)), info, device="cuda")
