"""A familiarity gate for the side-view flag: is this picture like the side views the model knows?

The side-view head learns from the pictures without a side view it was shown (frontal views,
empty rooms, textures). Pictures unlike all of those, real photographs of landscapes or animals
for instance, can fall anywhere for it. The gate adds what the head cannot learn from examples:
a picture whose pooled features lie far from every side view in training is no side view either.

Distance is a Mahalanobis distance to the nearest class mean, the classic feature-density test
for unfamiliar inputs. Side views can come in groups that spread differently (the synthetic
styles: a webcam close-up varies in other directions than a full-body line drawing), so each
group has its own class means and covariance, and a picture's distance is the one to its nearest
group. Each covariance is Ledoit-Wolf shrunk and kept as a probabilistic PCA: its `rank` leading
eigenvectors and eigenvalues plus one variance for the rest, which stays small in the checkpoint
for 512-wide features and is exact when the features have at most `rank` dimensions. The
threshold is a high quantile of the distances of held-back side views, so it flags few real
side views by construction. The gate gives a logit, (threshold - distance) / scale, and the
side-view logit is the smaller of the head's and the gate's: a side view must both look like one
and be familiar.

Gates saved with one full precision matrix (`precision`, no groups) load into this form exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["FeatureGate", "DEFAULT_RANK"]

DEFAULT_RANK = 64  # covariance directions kept per group; the rest share one variance


class FeatureGate(nn.Module):
    """Mahalanobis distance of pooled features to the nearest class mean of the nearest group,
    as a logit (> 0: familiar)."""

    def __init__(self, dim: int, num_classes: int, groups: int = 1, rank: int | None = None) -> None:
        super().__init__()
        r = min(rank or DEFAULT_RANK, dim)
        self.register_buffer("means", torch.zeros(groups, num_classes, dim))  # (G, K, D)
        self.register_buffer("components", torch.eye(dim)[:r].repeat(groups, 1, 1))  # (G, R, D) orthonormal rows
        self.register_buffer("variances", torch.ones(groups, r))  # (G, R) variance along each component
        self.register_buffer("residual", torch.ones(groups))  # (G,) variance of every other direction
        self.register_buffer("threshold", torch.tensor(float("inf")))  # squared distance; inf: not fitted
        self.register_buffer("scale", torch.tensor(1.0))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) squared Mahalanobis distance to the nearest class mean of the nearest group."""
        diff = pooled.float()[:, None, None, :] - self.means[None]  # (B, G, K, D)
        proj = diff @ self.components.transpose(1, 2)[None]  # (B, G, K, R); einsum would fix B in an export
        along = (proj.square() / self.variances[None, :, None, :]).sum(-1)  # (B, G, K)
        if self.components.shape[1] == self.components.shape[2]:  # full rank: nothing is left over
            return along.flatten(1).min(dim=1).values
        rest = (diff.square().sum(-1) - proj.square().sum(-1)).clamp_min(0)  # (B, G, K)
        return (along + rest / self.residual[None, :, None]).flatten(1).min(dim=1).values

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features -> (B,) logit: positive within the threshold, negative beyond."""
        # No branch on the buffers' values, so the gate can be exported (torch.export, ONNX);
        # an unfitted gate (threshold inf) passes every picture.
        logit = (self.threshold - self.distance(pooled)) / self.scale
        return torch.where(torch.isfinite(self.threshold), logit, torch.full_like(logit, float("inf")))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor, held_back: torch.Tensor,
            quantile: float = 0.995, groups: torch.Tensor | None = None) -> None:
        """Fit each group's class means and covariance on side views' features (N, D) with class
        `labels` (N,) and group indices `groups` (N,; default one group), and the threshold at
        `quantile` of the distances of `held_back` side views (M, D)."""
        from sklearn.covariance import LedoitWolf

        x = features.double().numpy()
        y = labels.numpy()
        g = np.zeros(len(x), dtype=np.int64) if groups is None else groups.numpy()
        n_groups, k, dim = int(g.max()) + 1, self.means.shape[1], x.shape[1]
        r = self.components.shape[1]  # <= dim, set when the gate was built
        means = np.zeros((n_groups, k, dim))
        components = np.zeros((n_groups, r, dim))
        variances = np.ones((n_groups, r))
        residual = np.ones(n_groups)
        for j in range(n_groups):
            xg, yg = x[g == j], y[g == j]
            if len(xg) == 0:
                raise ValueError(f"group {j} has no features to fit")
            means[j] = [xg[yg == c].mean(axis=0) if (yg == c).any() else xg.mean(axis=0)
                        for c in range(k)]  # a class without examples: the group's mean
            covariance = LedoitWolf(assume_centered=True).fit(xg - means[j][yg]).covariance_
            eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
            eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
            eigenvalues = np.maximum(eigenvalues, max(eigenvalues[0], 1e-12) * 1e-9)  # a degenerate group stays finite
            components[j], variances[j] = eigenvectors[:, :r].T, eigenvalues[:r]
            residual[j] = eigenvalues[r:].mean() if r < dim else 1.0
        self.means = torch.tensor(means, dtype=torch.float32)
        self.components = torch.tensor(components, dtype=torch.float32)
        self.variances = torch.tensor(variances, dtype=torch.float32)
        self.residual = torch.tensor(residual, dtype=torch.float32)
        self.set_threshold(held_back, quantile)

    @torch.no_grad()
    def set_threshold(self, held_back: torch.Tensor, quantile: float = 0.995) -> None:
        """The threshold at `quantile` of the distances of `held_back` side views' features (M, D)."""
        self.threshold = torch.quantile(self.distance(held_back), quantile).float()
        self.scale = (self.threshold * 0.05).clamp_min(1e-6)

    def keep_groups(self, groups: list[int]) -> None:
        """Keep only these groups (indices); the threshold is then to be set again."""
        for name in ("means", "components", "variances", "residual"):
            setattr(self, name, getattr(self, name)[groups])

    def _resize(self, groups: int, rank: int) -> None:
        dim = self.means.shape[-1]
        self.means = self.means.new_zeros(groups, self.means.shape[1], dim)
        self.components = self.components.new_zeros(groups, rank, dim)
        self.variances = self.variances.new_ones(groups, rank)
        self.residual = self.residual.new_ones(groups)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the group count and rank from the stored buffers; turn a single full precision
        matrix (the gate's earlier form) into its eigen-decomposition."""
        legacy = state_dict.pop(prefix + "precision", None)
        if legacy is not None and prefix + "components" not in state_dict:
            means = state_dict.get(prefix + "means")
            if means is None or means.dim() != 2 or legacy.shape != (means.shape[1], means.shape[1]):
                raise ValueError(f"{prefix}precision does not match {prefix}means")
            # precision = V diag(1 / variance) V^T; float64 keeps the round trip exact to float32
            inverse_variances, vectors = torch.linalg.eigh(legacy.double())
            if not bool((inverse_variances > 0).all()):
                raise ValueError(f"{prefix}precision is not positive definite")
            state_dict[prefix + "means"] = means[None]
            state_dict[prefix + "components"] = vectors.T.float()[None]
            state_dict[prefix + "variances"] = (1.0 / inverse_variances).float()[None]
            state_dict[prefix + "residual"] = torch.ones(1)
        components = state_dict.get(prefix + "components")
        if components is not None and components.dim() == 3 and components.shape[-1] == self.means.shape[-1]:
            self._resize(components.shape[0], components.shape[1])  # other shapes fail in the strict load
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
