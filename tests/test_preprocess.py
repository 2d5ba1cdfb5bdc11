"""Letterboxing: never stretched or cropped, and exactly invertible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from posture.preprocess import IMAGENET_MEAN, Letterbox, letterbox, to_input


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (64, 64), (1000, 7)])
def test_letterbox_keeps_aspect_and_pads(size):
    img = Image.new("RGB", size, (255, 0, 0))
    square, box = letterbox(img, 64)
    assert square.size == (64, 64)
    x0, y0, w, h = box.content
    assert max(w, h) == 64 and abs(w / h - size[0] / size[1]) <= max(size) / min(size) * 1 / min(w, h) + 0.02
    arr = np.asarray(square)
    assert (arr[y0 + h // 2, x0 + w // 2] == (255, 0, 0)).all()
    if w < 64:  # padding is the normalisation mean, i.e. zero after normalising
        assert np.abs(arr[32, 0] - np.array(IMAGENET_MEAN) * 255).max() <= 1


@pytest.mark.parametrize("pt", [(0.5, 0.5), (250.2, 40.7), (299.5, 199.5), (10, 190)])
def test_point_round_trip(pt):
    box = Letterbox(300, 200, 96)
    back = box.to_source(*box.to_input(*pt))
    assert back == pytest.approx(pt, abs=1e-9)


def test_heatmap_peak_goes_back_to_the_same_source_pixel():
    src = Image.new("L", (300, 200), 0)
    ImageDraw.Draw(src).ellipse((245, 35, 255, 45), fill=255)  # a dot centred on (250, 40)
    square, box = letterbox(src.convert("RGB"), 64, fill=(0, 0, 0))
    heat = np.asarray(square.convert("L"), dtype=np.float32) / 255
    back = box.unletterbox(heat)
    assert back.shape == (200, 300)
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert abs(x - 250) <= box.src_w / 64 and abs(y - 40) <= box.src_h / 64 + 1


def test_unletterbox_of_a_layer_map_covers_only_the_content():
    box = Letterbox(200, 100, 64)  # content occupies the middle half vertically
    cam = torch.zeros(8, 8)
    cam[:2] = 1.0  # only padding rows are hot
    back = box.unletterbox(cam)
    assert back.shape == (100, 200) and back.max() < 0.5


def test_to_input_normalises_with_given_stats():
    img = Image.new("RGB", (10, 10), (128, 128, 128))
    x, _ = to_input(img, 16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x, torch.full_like(x, (128 / 255 - 0.5) / 0.25), atol=1e-6)
