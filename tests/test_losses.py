"""The multi-task loss: each head learns only where its target is known; the Grad-CAM box term."""

from __future__ import annotations

import math

import pytest
import torch

from posture.losses import LossWeights, add_stats, epoch_row, multitask_loss, outside_mass
from posture.models import ModelOutput, cva_to_head

NAN = math.nan


def _targets(labels, cva, boxes=None):
    n = len(labels)
    return {
        "label": torch.tensor(labels),
        "cva_deg": torch.tensor(cva, dtype=torch.float32),
        "side_view": torch.tensor([float(l >= 0) for l in labels]),
        "box": torch.tensor(boxes if boxes is not None else [[NAN] * 4] * n, dtype=torch.float32),
    }


def test_pictures_without_a_side_view_teach_only_the_side_view_head():
    logits = torch.randn(3, 2, requires_grad=True)
    cva = torch.tensor([60.0, 40.0, 10.0], requires_grad=True)
    side = torch.randn(3, requires_grad=True)
    targets = _targets([0, 1, -1], [62.0, NAN, NAN])
    loss, stats = multitask_loss(ModelOutput(logits, cva, side), targets, torch.ones(2), LossWeights())
    loss.backward()
    assert logits.grad[2].abs().sum() == 0 and logits.grad[:2].abs().sum() > 0  # no class for the third
    assert cva.grad[0] != 0 and cva.grad[1] == 0 and cva.grad[2] == 0  # an angle only where it is known
    assert (side.grad != 0).all()
    assert stats["n"] == 2 and stats["cva_n"] == 1 and stats["cva_abs_err"] == pytest.approx(2.0)
    assert stats["side_n"] == 3


def test_heads_the_model_lacks_add_nothing():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    plain, stats = multitask_loss(ModelOutput(logits), _targets([0, 1], [60.0, 40.0]), torch.ones(2), LossWeights())
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1]))
    assert float(plain) == pytest.approx(float(ce)) and stats["correct"] == 2 and "cva_n" not in stats


def test_angle_loss_is_in_head_units_and_weighted():
    logits = torch.zeros(1, 2)
    out = ModelOutput(logits, torch.tensor([65.0]))
    base, _ = multitask_loss(ModelOutput(logits), _targets([0], [50.0]), torch.ones(2), LossWeights())
    loss, _ = multitask_loss(out, _targets([0], [50.0]), torch.ones(2), LossWeights(cva=2.0))
    gap = float(cva_to_head(torch.tensor(65.0)) - cva_to_head(torch.tensor(50.0)))  # 1.0 head unit
    assert float(loss - base) == pytest.approx(2.0 * (gap - 0.05), abs=1e-5)  # smooth L1, beta 0.1


def test_outside_mass_is_the_share_of_the_map_outside_the_box():
    cam = torch.zeros(2, 4, 4)
    cam[0, 0, 0] = 1.0  # all mass top-left
    cam[1] = 1.0  # uniform
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    torch.testing.assert_close(outside_mass(cam, box), torch.tensor([0.0, 0.75]))


def test_the_box_term_counts_only_with_a_weight_and_a_box():
    logits = torch.zeros(1, 2)
    cam = torch.ones(1, 4, 4, requires_grad=True)
    t = _targets([0], [NAN], [[0.0, 0.0, 0.5, 0.5]])
    off, _ = multitask_loss(ModelOutput(logits), t, torch.ones(2), LossWeights(), cam)
    on, _ = multitask_loss(ModelOutput(logits), t, torch.ones(2), LossWeights(cam=1.0), cam)
    assert float(on - off) == pytest.approx(0.75)
    unknown, _ = multitask_loss(ModelOutput(logits), _targets([0], [NAN]), torch.ones(2), LossWeights(cam=1.0), cam)
    assert float(unknown) == pytest.approx(float(off))


def test_the_epoch_row_reports_the_mass_outside_the_box_when_the_box_term_is_on():
    logits = torch.zeros(2, 2)
    cam = torch.zeros(2, 4, 4)
    cam[0, 0, 0] = 1.0  # inside its box
    cam[1] = 1.0  # uniform: 0.75 outside
    t = _targets([0, 1], [NAN, NAN], [[0.0, 0.0, 0.5, 0.5]] * 2)
    sums: dict[str, float] = {}
    for _ in range(2):  # two batches
        _, stats = multitask_loss(ModelOutput(logits), t, torch.ones(2), LossWeights(cam=0.5), cam)
        add_stats(sums, stats)
    row = epoch_row("train", sums, 1.0)
    assert row["train_cam_outside"] == pytest.approx(0.375)
    _, stats = multitask_loss(ModelOutput(logits), t, torch.ones(2), LossWeights(), cam)
    assert "train_cam_outside" not in epoch_row("train", stats, 1.0)  # box term off: nothing to report
