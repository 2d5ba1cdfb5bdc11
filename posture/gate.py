"""A familiarity gate for the side-view flag: is this picture like the side views the model knows?

The side-view head learns from the pictures without a side view it was shown (frontal views,
empty rooms, textures). Pictures unlike all of those, real photographs of landscapes or animals
for instance, can fall anywhere for it. The gate adds what the head cannot learn from examples:
a picture whose pooled features lie far from every side view in training is no side view either.

Distance is the Mahalanobis distance to the nearest class mean under one shared covariance
(Ledoit-Wolf shrinkage), the classic feature-density test for unfamiliar inputs. The threshold is
a high quantile of the distances of held-back side views, so it flags few real side views by
construction. The gate gives a logit, (threshold - distance) / scale, and the side-view logit is
the smaller of the head's and the gate's: a side view must both look like one and be familiar.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["FeatureGate"]


class FeatureGate(nn.Module):
    """Mahalanobis distance of pooled features to the nearest class mean, as a logit (> 0: familiar)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(num_classes, dim))  # (K, D)
        self.register_buffer("precision", torch.eye(dim))  # (D, D) inverse shrunk covariance
        self.register_buffer("threshold", torch.tensor(float("inf")))  # squared distance; inf: not fitted
        self.register_buffer("scale", torch.tensor(1.0))

    @property
    def fitted(self) -> bool:
        return bool(torch.isfinite(self.threshold))

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B,) squared Mahalanobis distance to the nearest class mean."""
        diff = pooled.float()[:, None, :] - self.means[None]  # (B, K, D)
        return torch.einsum("bkd,de,bke->bk", diff, self.precision, diff).min(dim=1).values

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, D) pooled features -> (B,) logit: positive within the threshold, negative beyond."""
        # No branch on the buffers' values, so the gate can be exported (torch.export, ONNX);
        # an unfitted gate (threshold inf) passes every picture.
        logit = (self.threshold - self.distance(pooled)) / self.scale
        return torch.where(torch.isfinite(self.threshold), logit, torch.full_like(logit, float("inf")))

    @torch.no_grad()
    def fit(self, features: torch.Tensor, labels: torch.Tensor, held_back: torch.Tensor,
            quantile: float = 0.995) -> None:
        """Fit means and shrunk covariance on side views' features (N, D) with class `labels` (N,),
        and the threshold at `quantile` of the distances of `held_back` side views (M, D)."""
        from sklearn.covariance import LedoitWolf

        x = features.double().numpy()
        y = labels.numpy()
        means = np.stack([x[y == c].mean(axis=0) if (y == c).any() else x.mean(axis=0)
                          for c in range(self.means.shape[0])])  # a class without examples: the overall mean
        centred = x - means[y]
        covariance = LedoitWolf(assume_centered=True).fit(centred).covariance_
        self.means = torch.tensor(means, dtype=torch.float32)
        self.precision = torch.tensor(np.linalg.inv(covariance), dtype=torch.float32)
        held = self.distance(held_back)
        self.threshold = torch.quantile(held, quantile).float()
        self.scale = (self.threshold * 0.05).clamp_min(1e-6)
