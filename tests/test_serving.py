"""Serving path: precision choice and fallback, bf16 agreement with fp32, overlay encoding."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import posture.serving as serving
from conftest import CLASSES, make_checkpoint, person_like
from posture.checkpoints import ModelInfo
from posture.explain import grad_cam
from posture.models import build_model, list_models
from posture.predict import Predictor
from posture.serving import PRECISION_ENV, bf16_supported, resolve_precision

needs_bf16 = pytest.mark.skipif(not bf16_supported(), reason="this CPU has no native bfloat16")


@pytest.fixture(scope="module")
def checkpoints_128(tmp_path_factory):
    """Checkpoints at 128 px, so resnet18's last stage has a 4x4 map worth correlating."""
    folder = tmp_path_factory.mktemp("serving")
    return {arch: make_checkpoint(folder / f"{arch}.safetensors", arch, 128, seed=7) for arch in list_models()}


def _agree(a, b) -> None:
    """Two explanations of the same class: both empty, or Pearson >= 0.99."""
    assert a.target == b.target and a.cam_empty == b.cam_empty
    if not a.cam_empty:
        assert np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1] >= 0.99


def test_precision_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert resolve_precision() == "fp32"
    assert resolve_precision("bf16") == "bf16"
    monkeypatch.setenv(PRECISION_ENV, "BF16")
    assert resolve_precision() == "bf16"
    monkeypatch.delenv(PRECISION_ENV)
    assert resolve_precision() == ("bf16" if bf16_supported() else "fp32")
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        resolve_precision("fp8")


def test_auto_falls_back_to_fp32_without_native_bf16(monkeypatch, checkpoint_dir):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.setattr(serving, "bf16_supported", lambda: False)
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    assert predictor.precision == "fp32"
    monkeypatch.setenv(PRECISION_ENV, "fp32")  # forcing fp32 also works where bf16 exists
    monkeypatch.setattr(serving, "bf16_supported", lambda: True)
    assert Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors").precision == "fp32"


_LAYERS = [(arch, layer) for arch in list_models() for layer in build_model(arch).cam_layers]


@pytest.mark.parametrize("arch, layer", _LAYERS)
def test_fp32_path_equals_the_whole_model_with_captum(checkpoint_dir, arch, layer):
    predictor = Predictor.from_checkpoint(checkpoint_dir / f"{arch}.safetensors", precision="fp32")
    img = person_like(seed=3)
    _, x, box = predictor.prepare(img)
    model = predictor.model
    reference = grad_cam(model, x, layer=model.cam_layer(layer))  # the whole model, hooks on that stage
    pred = predictor.predict(img, layer=layer)
    assert pred.layer == layer
    probs = torch.softmax(reference.logits, dim=1)[0].tolist()
    assert list(pred.probabilities.values()) == pytest.approx(probs, abs=1e-6)
    expected = box.unletterbox(reference.cams[0])
    assert expected.max() > 0
    assert np.allclose(pred.heatmap, expected / expected.max(), atol=1e-5)


@needs_bf16
@pytest.mark.parametrize("arch", list_models())
def test_bf16_path_agrees_with_fp32(checkpoints_128, arch):
    fast = Predictor.from_checkpoint(checkpoints_128[arch], precision="bf16")
    exact = Predictor.from_checkpoint(checkpoints_128[arch], precision="fp32")
    assert fast.precision == "bf16"
    shown = 0
    for seed in range(3):
        img = person_like(seed=seed)
        a, b = exact.predict(img), fast.predict(img)
        assert b.label == a.label
        assert list(b.probabilities.values()) == pytest.approx(list(a.probabilities.values()), abs=0.01)
        for target in CLASSES:  # each class, named
            ca, cb = exact.predict(img, target=target), fast.predict(img, target=target)
            _agree(ca, cb)
            shown += not ca.cam_empty
    assert shown >= 3  # most explanations had something to show, so the agreement was tested


@needs_bf16
def test_bf16_path_is_thread_safe(checkpoint_dir):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision="bf16")
    images = [person_like(seed=s) for s in range(4)]
    results: dict[int, object] = {}

    def work(i: int) -> None:  # every thread's first call races for the one-time freeze
        results[i] = predictor.predict(images[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, img in enumerate(images):
        again = predictor.predict(img)
        assert results[i].probabilities == pytest.approx(again.probabilities, abs=1e-6)
        assert np.allclose(results[i].heatmap, again.heatmap, atol=1e-5)


def test_batches_of_other_sizes_use_the_frozen_backbone(checkpoint_dir):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    images = [person_like(seed=s) for s in range(3)]
    batch = predictor.predict_batch(images)
    for img, b in zip(images, batch):
        assert predictor.predict(img).probabilities == pytest.approx(b.probabilities, abs=1e-3)


def test_only_posture_models_are_served():
    with pytest.raises(TypeError, match="PostureNet"):
        serving.ServingModel(nn.Conv2d(3, 4, 3), 32)


def test_a_trained_head_change_is_seen_without_rebuilding():
    """The head shares the model's linear layer: no stale copy of the classifier."""
    model = build_model("resnet14")
    predictor = Predictor(model, ModelInfo("resnet14", CLASSES, 32), precision="fp32")
    assert predictor.serving.head("layer3").model.fc is model.fc


@pytest.mark.parametrize("fmt, pil_format", [("jpeg", "JPEG"), ("png", "PNG"), ("JPG", "JPEG")])
def test_overlay_bytes_decode_to_the_overlay(checkpoint_dir, fmt, pil_format):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    pred = predictor.predict(person_like(200, 120))
    data = pred.overlay_bytes(0.5, fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_format and decoded.size == (200, 120)
    diff = np.abs(np.asarray(decoded.convert("RGB"), dtype=int) - np.asarray(pred.overlay(0.5), dtype=int))
    assert diff.mean() < (3.0 if pil_format == "JPEG" else 1e-9)
    with pytest.raises(ValueError, match="jpeg, png"):
        pred.overlay_bytes(0.5, "gif")


@needs_bf16
@pytest.mark.parametrize("fault", ["disagrees", "fails"])
def test_a_fused_backbone_that_disagrees_or_fails_is_replaced_by_the_plain_one(monkeypatch, checkpoint_dir, fault):
    """The oneDNN-fused graph is checked against the plain frozen one when it is built."""
    def broken_fuse(traced, example):
        if fault == "fails":
            return None  # what _fuse returns after the fuser raised
        return lambda x: torch.zeros_like(traced(x))

    exact = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision="fp32")
    monkeypatch.setattr(serving, "_fuse", broken_fuse)
    fast = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision="bf16")
    img = person_like(seed=5)
    a, b = exact.predict(img), fast.predict(img)
    assert list(b.probabilities.values()) == pytest.approx(list(a.probabilities.values()), abs=0.01)
    _agree(a, b)


@needs_bf16
def test_the_fuser_switch_is_restored_after_building():
    was_on = torch.jit.onednn_fusion_enabled()
    model = build_model("resnet14", 2).eval()
    features = serving.ServingModel(model, 64, precision="bf16").features(torch.randn(2, 3, 64, 64), "layer3")
    assert features.shape == (2, 64, 16, 16) and features.dtype == torch.float32
    assert torch.jit.onednn_fusion_enabled() == was_on
