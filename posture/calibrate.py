"""After training: probabilities that match how often the model is right, and a side-view flag that
also says no to pictures unlike anything it saw.

`calibrate_` temperature-scales the classifier on validation pictures; `fit_gate_` fits the
side-view flag's familiarity gate (`posture.gate`) on the training side views. Both change the
model in place and leave every verdict and Grad-CAM map as it was.
"""

from __future__ import annotations

import torch

from posture.backends import EXPORT_GUARD
from posture.fit import extract_features
from posture.imagedata import ImageDataset
from posture.models import PostureNet

__all__ = ["calibrate_", "fit_gate_"]


def calibrate_(model: PostureNet, val_ds: ImageDataset, batch_size: int) -> float:
    """Temperature-scale the classifier on validation pictures (folded into its weights); returns T.

    Dividing the logits by one positive number keeps every verdict and every Grad-CAM map (up to
    scale) as it was; only the probabilities change, to match how often the model is right.
    """
    logits, labels = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(val_ds), batch_size):
            batch = [val_ds[i] for i in range(start, min(start + batch_size, len(val_ds)))]
            x = torch.stack([b[0] for b in batch])
            y = torch.stack([b[1]["label"] for b in batch])
            keep = y >= 0
            if keep.any():
                with EXPORT_GUARD.running():  # see posture.backends: no torch.export elsewhere mid-forward
                    logits.append(model(x)[keep])
                labels.append(y[keep])
    if not logits:
        return 1.0
    z, y = torch.cat(logits).float(), torch.cat(labels)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp().clamp(0.05, 20.0))
    with torch.no_grad():
        model.fc.weight /= t
        model.fc.bias /= t
    return t


def fit_gate_(model: PostureNet, train_ds: ImageDataset, val_ds: ImageDataset, batch_size: int,
              workers: int = 0) -> dict[str, float]:
    """Fit the side-view flag's familiarity gate (`posture.gate`) on the training side views' features,
    its threshold on the validation side views'; returns what was fitted (for the checkpoint)."""
    def side_views(ds: ImageDataset) -> ImageDataset:
        plain = ds.subset([i for i, it in enumerate(ds.items) if it.side_view])
        plain.augment = None
        return plain

    fit_on, held = side_views(train_ds), side_views(val_ds)
    features = extract_features(model, fit_on, batch_size, workers=workers)
    held_back = extract_features(model, held, batch_size, workers=workers)
    model.add_heads(["gate"])
    gate = model.heads["gate"]
    gate.fit(features, torch.tensor([it.label for it in fit_on.items]), held_back)
    return {"threshold": float(gate.threshold), "n_fit": len(fit_on), "n_threshold": len(held)}
