"""Overlays: input checks, and colours drawn from the model-scale map equal to colouring the full-resolution map."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from posture.errors import UsageError
from posture.overlay import colorize, encode_image, overlay_heatmap
from posture.preprocess import resize_map


def test_overlay_checks_its_inputs():
    img = Image.new("RGB", (4, 3))
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        overlay_heatmap(img, np.full((3, 4), 2.0))
    with pytest.raises(UsageError, match="2-D"):
        overlay_heatmap(img, np.zeros((3, 4, 1)))
    with pytest.raises(UsageError, match="empty"):
        overlay_heatmap(img, np.zeros((0, 4)))
    with pytest.raises(UsageError, match="alpha"):
        overlay_heatmap(img, np.zeros((3, 4)), alpha=1.5)
    hot = np.asarray(overlay_heatmap(img, np.ones((3, 4)), alpha=1.0))
    assert (hot[..., 0] > 100).all() and (hot[..., 2] < 50).all()  # jet's top is red


def test_overlay_from_a_model_scale_map_matches_the_full_resolution_one():
    """Overlays are drawn from the map at the model's scale, resized by Pillow: the colours must be
    those of colouring the full-resolution float map (what the slow path did), up to rounding."""
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    small = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 30, 40), 3, 1, 1)[0, 0].numpy()
    small = small / small.max()
    full = resize_map(small, 300, 400)
    reference = Image.blend(img, Image.fromarray(colorize(full)), 0.5)
    fast = overlay_heatmap(img, small, alpha=0.5)
    diff = np.abs(np.asarray(fast, dtype=int) - np.asarray(reference, dtype=int))
    assert diff.max() <= 4 and diff.mean() < 0.5
    assert np.abs(np.asarray(fast, dtype=int) - np.asarray(img, dtype=int)).mean() > 20  # it did draw


def test_encoding_names_its_formats():
    img = Image.new("RGB", (4, 3), (10, 20, 30))
    assert encode_image(img, "png")[:8] == b"\x89PNG\r\n\x1a\n"
    assert encode_image(img, "jpeg")[:2] == b"\xff\xd8"
    with pytest.raises(UsageError, match="format must be one of"):
        encode_image(img, "bmp")
