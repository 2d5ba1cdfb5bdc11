"""Predictor: probabilities, heatmaps on the original frame, targets, empty CAMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import CLASSES, person_like
from posture.checkpoints import ModelInfo
from posture.models import build_model, list_models
from posture.preprocess import resize_map
from posture.predict import Predictor


@pytest.mark.parametrize("arch", list_models())
def test_prediction_has_probabilities_and_a_heatmap_over_the_original_image(checkpoint_dir, arch):
    predictor = Predictor.from_checkpoint(checkpoint_dir / f"{arch}.safetensors")
    pred = predictor.predict(person_like(200, 120))
    assert list(pred.probabilities) == CLASSES
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
    assert pred.target == pred.label
    assert pred.heatmap.shape == (120, 200) and pred.heatmap.dtype == np.float32
    assert pred.heatmap.max() == pytest.approx(1.0) and pred.heatmap.min() >= 0.0
    assert pred.overlay(0.4).size == (200, 120)


def test_explaining_a_named_class_keeps_the_verdict(checkpoint_dir):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    img = person_like(seed=4)
    plain = predictor.predict(img, explain=False)
    for target in CLASSES:
        pred = predictor.predict(img, target=target)
        assert pred.target == target and pred.label == plain.label
        assert pred.probabilities == pytest.approx(plain.probabilities, abs=1e-6)
    with pytest.raises(ValueError, match="normal, turtle_neck"):
        predictor.predict(img, target="slouch")


def test_all_zero_cam_is_reported_not_drawn():
    model = build_model("resnet14")
    with torch.no_grad():
        model.fc.weight.zero_()  # every gradient w.r.t. the layer is zero
    predictor = Predictor(model, ModelInfo("resnet14", CLASSES, 32))
    img = person_like(40, 30)
    pred = predictor.predict(img)
    assert pred.cam_empty and not pred.heatmap.any()
    assert np.array_equal(np.asarray(pred.overlay(0.7)), np.asarray(img))


def test_batch_equals_single(checkpoint_dir):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    images = [person_like(seed=s) for s in range(3)]
    batch = predictor.predict_batch(images)
    for img, b in zip(images, batch):
        single = predictor.predict(img)
        assert b.label == single.label
        assert np.corrcoef(b.heatmap.ravel(), single.heatmap.ravel())[0, 1] > 0.999


def test_cam_covers_the_image_frame_at_the_model_scale(checkpoint_dir):
    """`cam` is the letterbox's content area only (no padding) at the input size; `heatmap` is the
    same map at the image's pixels (equality with Captum on the whole model: test_serving)."""
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    pred = predictor.predict(person_like(200, 120, seed=1))
    _, _, w, h = pred.letterbox.content
    assert pred.cam.shape == (h, w) and w == predictor.info.input_size and h < w
    assert pred.cam.max() == pytest.approx(1.0) and pred.heatmap.shape == (120, 200)
    assert np.corrcoef(resize_map(pred.cam, 120, 200).ravel(), pred.heatmap.ravel())[0, 1] > 0.9999
