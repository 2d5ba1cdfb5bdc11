"""Predictor: probabilities, heatmaps on the original frame, targets, empty CAMs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import ImageOps

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


def _log_odds(pred) -> float:
    return float(np.log(pred.probabilities["turtle_neck"] / pred.probabilities["normal"]))


def test_mirror_averaging_is_the_mean_of_the_picture_and_its_mirror():
    """The default answer is the mean of the single-view answers on the picture and its mirror
    image (logits, angle, side-view logit), so a person facing left or right gets the same one."""
    torch.manual_seed(5)
    model = build_model("resnet14", len(CLASSES)).add_heads(["cva", "side_view"])
    info = ModelInfo("resnet14", CLASSES, 64)
    both = Predictor(model, info, precision="fp32")
    one = Predictor(model, info, precision="fp32", mirror=False)
    assert both.mirror and not one.mirror
    img = person_like(200, 120, seed=2)  # letterboxed top and bottom: the mirror is exact
    flipped = ImageOps.mirror(img)
    a, b = one.predict_batch([img, flipped])
    m, mf = both.predict_batch([img, flipped])
    assert _log_odds(a) != pytest.approx(_log_odds(b), abs=1e-4)  # one view alone depends on the facing
    assert _log_odds(m) == pytest.approx((_log_odds(a) + _log_odds(b)) / 2, abs=1e-4)
    assert m.cva_deg == pytest.approx((a.cva_deg + b.cva_deg) / 2, abs=1e-3)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert logit(m.side_view_prob) == pytest.approx((logit(a.side_view_prob) + logit(b.side_view_prob)) / 2, abs=1e-3)
    assert mf.probabilities == pytest.approx(m.probabilities, abs=1e-5) and mf.cva_deg == pytest.approx(m.cva_deg)
    # The map of the mirror image is the mirror of the map: both explain the same mean answer.
    assert np.abs(mf.cam[:, ::-1] - m.cam).max() < 1e-4
    assert np.abs(b.cam[:, ::-1] - a.cam).max() > 1e-2  # one view's map alone is not symmetric in this way
    plain = both.predict(img, explain=False)  # the fast path without Grad-CAM averages alike
    assert plain.probabilities == pytest.approx(m.probabilities, abs=1e-5)
    assert plain.cva_deg == pytest.approx(m.cva_deg, abs=1e-3)
