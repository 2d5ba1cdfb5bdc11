"""The training paths' pieces: the Grad-CAM the box term trains is the one the product shows."""

from __future__ import annotations

import math

import pytest
import torch

from posture.explain import grad_cam
from posture.fit import _forward
from posture.models import build_model

NAN = math.nan


def _targets(labels):
    n = len(labels)
    return {"label": torch.tensor(labels), "cva_deg": torch.full((n,), NAN), "side_view": torch.ones(n),
            "box": torch.full((n, 4), NAN)}


@pytest.mark.parametrize("layer", ["layer2", "layer3"])
def test_the_training_cam_is_the_grad_cam_the_product_shows(layer):
    """The box term trains the very map Captum computes (at the last stage, and before it)."""
    torch.manual_seed(0)
    model = build_model("resnet14").eval()
    x = torch.randn(2, 3, 48, 48)
    labels = [1, 0]
    _, cam = _forward(model, x, _targets(labels), layer)
    expected = grad_cam(model, x, target=labels, layer=model.cam_layer(layer)).cams
    torch.testing.assert_close(cam.detach(), expected, rtol=1e-4, atol=1e-6)
    assert cam.requires_grad  # it trains
