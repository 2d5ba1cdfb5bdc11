"""The side-view flag's familiarity gate: far from every known side view means no side view."""

from __future__ import annotations

import pytest
import torch

from posture.checkpoints import ModelInfo, load_checkpoint, save_checkpoint
from posture.gate import FeatureGate
from posture.models import build_model


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    centres = torch.tensor([[3.0] * 8, [-3.0] * 8])
    return centres[labels] + torch.randn(n, 8, generator=g), labels


def test_the_threshold_lets_through_all_but_the_chosen_share_of_held_back_features():
    gate = FeatureGate(8, 2)
    assert not gate.fitted and (gate(torch.randn(3, 8)) == float("inf")).all()  # unfitted: no opinion
    x, y = _clusters(4000, 0)
    held, _ = _clusters(2000, 1)
    gate.fit(x, y, held, quantile=0.99)
    assert (gate(held) < 0).float().mean() == pytest.approx(0.01, abs=0.002)
    fresh, _ = _clusters(2000, 2)
    assert (gate(fresh) < 0).float().mean() < 0.03  # new samples of the same kind pass
    far = torch.randn(200, 8) * 3 + torch.tensor([0.0, 0.0, 0.0, 0.0, 12.0, -12.0, 0.0, 0.0])
    assert (gate(far) < 0).all()  # unlike anything seen: flagged


def test_the_side_view_logit_is_the_smaller_of_head_and_gate(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet14", heads=["side_view", "gate"]).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        pooled = model.pool(model.forward_features(x))
        head = model.heads["side_view"](pooled)[:, 0]
        gate = model.heads["gate"]
        gate.fit(pooled[:2].repeat(20, 1) + 0.01 * torch.randn(40, 64), torch.tensor([0, 1] * 20),
                 pooled[:2].repeat(5, 1) + 0.01 * torch.randn(10, 64))
        out = model.forward_outputs(x).side_view_logit
    torch.testing.assert_close(out, torch.minimum(head, gate(pooled)))
    # stored in float32 even in a float16 checkpoint, and loaded back exactly
    info = ModelInfo("resnet14", ["normal", "turtle_neck"], 32, heads=model.head_names, storage_dtype="float16")
    path = save_checkpoint(tmp_path / "m.safetensors", model, info)
    loaded, _ = load_checkpoint(path)
    for key in ("means", "precision", "threshold", "scale"):
        assert torch.equal(getattr(loaded.heads["gate"], key), getattr(gate, key)), key
