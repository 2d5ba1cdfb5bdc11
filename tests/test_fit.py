"""The training paths' pieces: the Grad-CAM the box term trains is the one the product shows."""

from __future__ import annotations

import math

import pytest
import torch

from posture.explain import grad_cam
from posture.fit import _forward, one_cycle
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
    cells = expected.shape[-2] * expected.shape[-1]  # the training map is per cell, not averaged over cells
    torch.testing.assert_close(cam.detach(), expected * cells, rtol=1e-4, atol=1e-5)
    assert cam.requires_grad  # it trains


def test_a_softplus_map_still_moves_when_the_class_has_no_positive_evidence():
    """With ReLU, a map whose evidence is negative everywhere is all zero, and the box term
    gives it no gradient; the softplus map gives one, towards the box."""
    from posture.losses import LossWeights, multitask_loss

    torch.manual_seed(0)
    model = build_model("resnet14").train()
    with torch.no_grad():
        model.fc.weight[0] = -model.fc.weight[0].abs()  # class 0: every (non-negative) feature counts against it
    x = torch.randn(4, 3, 32, 32)
    targets = _targets([0, 0, 0, 0])
    targets["box"] = torch.tensor([[0.25, 0.25, 0.5, 0.5]]).repeat(4, 1)
    grads = {}
    for cam_map in ("relu", "softplus"):
        model.zero_grad()
        out, cam = _forward(model, x, targets, "layer3", cam_map)
        if cam_map == "relu":
            assert cam.max() == 0  # nothing to show, nothing to train
        loss, stats = multitask_loss(out, targets, torch.ones(2), LossWeights(cva=0, side_view=0, cam=1.0), cam)
        ce = torch.nn.functional.cross_entropy(out.logits, targets["label"])
        (loss - ce).backward()  # the box term alone
        grads[cam_map] = model.layer3[1].conv2.weight.grad.abs().sum().item()
    assert grads["relu"] == 0 and grads["softplus"] > 0
    before = stats["cam_outside"]
    torch.optim.SGD(model.parameters(), lr=0.05).step()  # one step on the softplus box term's gradient
    out, cam = _forward(model, x, targets, "layer3", "softplus")
    _, after = multitask_loss(out, targets, torch.ones(2), LossWeights(cva=0, side_view=0, cam=1.0), cam)
    assert after["cam_outside"] < before


@pytest.mark.parametrize("total_steps", range(1, 41))
def test_the_learning_rate_schedule_runs_for_any_number_of_steps(total_steps):
    """Short runs too: five epochs of one batch each is a small upload's whole run."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched = one_cycle(opt, 0.01, total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()  # once per batch, as training does
    assert max(lrs) <= 0.01 + 1e-12 and lrs[-1] < 0.01
