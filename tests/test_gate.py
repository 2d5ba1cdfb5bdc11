"""The side-view flag's familiarity gate: far from every known side view means no side view."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

from posture.checkpoints import ModelInfo, load_checkpoint, save_checkpoint
from posture.errors import CheckpointError
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
    for key in ("means", "components", "variances", "residual", "threshold", "scale"):
        assert torch.equal(getattr(loaded.heads["gate"], key), getattr(gate, key)), key


def _mahalanobis(x: torch.Tensor, mean: torch.Tensor, covariance: np.ndarray) -> torch.Tensor:
    diff = (x - mean).double().numpy()
    return torch.tensor(np.einsum("bd,de,be->b", diff, np.linalg.inv(covariance), diff))


@pytest.mark.parametrize("rank", [16, 4])
def test_the_distance_is_mahalanobis_under_the_shrunk_covariance_or_its_probabilistic_pca(rank):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 16, generator=g) * torch.linspace(0.2, 3.0, 16)  # one class, unequal spreads
    gate = FeatureGate(16, 1, rank=rank)
    gate.fit(x, torch.zeros(500, dtype=torch.long), x[:50])
    covariance = LedoitWolf(assume_centered=True).fit((x - x.mean(0)).double().numpy()).covariance_
    values, vectors = np.linalg.eigh(covariance)
    # rank R keeps the R largest eigenvalues and gives every other direction their mean
    rest = values[: 16 - rank]
    kept = np.concatenate([np.full(len(rest), rest.mean() if len(rest) else 0.0), values[16 - rank:]])
    expected = _mahalanobis(x[50:80], x.mean(0), vectors @ np.diag(kept) @ vectors.T)
    assert gate.components.shape == (1, rank, 16)
    torch.testing.assert_close(gate.distance(x[50:80]).double(), expected, rtol=1e-4, atol=1e-4)


def test_groups_that_spread_differently_each_get_their_own_covariance():
    g = torch.Generator().manual_seed(1)
    wide = torch.tensor([4.0] * 4 + [0.3] * 4)  # group 0 varies in the first four directions,
    narrow = torch.tensor([0.3] * 4 + [4.0] * 4)  # group 1 in the last four
    x = torch.cat([torch.randn(1000, 8, generator=g) * wide, torch.randn(1000, 8, generator=g) * narrow])
    held = torch.cat([torch.randn(300, 8, generator=g) * wide, torch.randn(300, 8, generator=g) * narrow])
    labels, groups = torch.arange(2000) % 2, torch.arange(2000) // 1000
    pooled, grouped = FeatureGate(8, 2), FeatureGate(8, 2)
    pooled.fit(x, labels, held, quantile=0.99)
    grouped.fit(x, labels, held, quantile=0.99, groups=groups)
    assert grouped.means.shape == (2, 2, 8) and grouped.components.shape == (2, 8, 8)
    # a point off both groups' axes: within the one shared covariance, far from either group
    off_axes = torch.randn(300, 8, generator=g) * 2.5
    assert (grouped(off_axes) < 0).float().mean() > 0.9
    assert (pooled(off_axes) < 0).float().mean() < 0.5
    fresh = torch.cat([torch.randn(500, 8, generator=g) * wide, torch.randn(500, 8, generator=g) * narrow])
    assert (grouped(fresh) < 0).float().mean() < 0.03  # both kinds of side view still pass


def test_a_gate_kept_to_some_groups_is_the_gate_fitted_on_those_alone():
    g = torch.Generator().manual_seed(3)
    x = torch.cat([torch.randn(600, 8, generator=g) + 4, torch.randn(600, 8, generator=g) - 4])
    labels, groups = torch.arange(1200) % 2, torch.arange(1200) // 600
    held = torch.cat([torch.randn(200, 8, generator=g) + 4, torch.randn(200, 8, generator=g) - 4])
    both, first = FeatureGate(8, 2), FeatureGate(8, 2)
    both.fit(x, labels, held, quantile=0.99, groups=groups)
    first.fit(x[:600], labels[:600], held[:200], quantile=0.99)
    both.keep_groups([0])
    both.set_threshold(held[:200], quantile=0.99)
    probe = torch.randn(50, 8, generator=g) * 3
    torch.testing.assert_close(both.distance(probe), first.distance(probe), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(both.threshold, first.threshold, rtol=1e-4, atol=1e-3)
    assert (both(held[200:]) < 0).all()  # the dropped group's side views are unfamiliar now


def test_a_gate_saved_as_one_precision_matrix_loads_with_the_same_distances(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(2)
    model = build_model("resnet14", heads=["side_view", "gate"]).eval()
    x, y = torch.randn(400, 64) * torch.linspace(0.5, 2.0, 64), torch.arange(400) % 2
    means = torch.stack([x[y == 0].mean(0), x[y == 1].mean(0)])
    covariance = LedoitWolf(assume_centered=True).fit((x - means[y]).double().numpy()).covariance_
    info = ModelInfo("resnet14", ["normal", "turtle_neck"], 32, heads=model.head_names)
    path = save_checkpoint(tmp_path / "m.safetensors", model, info)
    state = {k: v for k, v in load_file(path).items() if not k.startswith("heads.gate.")}
    state.update({"heads.gate.means": means, "heads.gate.precision": torch.tensor(np.linalg.inv(covariance)).float(),
                  "heads.gate.threshold": torch.tensor(70.0), "heads.gate.scale": torch.tensor(3.5)})
    metadata = __import__("safetensors").safe_open(str(path), framework="pt").metadata()
    save_file(state, str(path), metadata=metadata)  # the earlier layout of the gate's tensors
    loaded, _ = load_checkpoint(path)
    gate = loaded.heads["gate"]
    expected = torch.minimum(*[_mahalanobis(x[:50], m, covariance) for m in means])
    torch.testing.assert_close(gate.distance(x[:50]).double(), expected, rtol=1e-4, atol=1e-3)
    assert gate.threshold == 70.0 and gate.fitted
    state["heads.gate.precision"] = torch.eye(3)  # does not match the means: a damaged checkpoint
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="precision"):
        load_checkpoint(path)
    state["heads.gate.precision"] = -torch.eye(64)  # no covariance has this inverse
    save_file(state, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="positive definite"):
        load_checkpoint(path)
