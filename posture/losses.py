"""The training objective shared by both paths: one loss for every head, each where it applies.

Cross-entropy on pictures with a class, a smooth L1 on the angle where it is known, binary
cross-entropy on "is this a side view" when the model has that head, and optionally a penalty on
Grad-CAM mass outside the head-and-neck box. `epoch_row` turns the batches' sums into the
per-epoch metrics the history records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from posture.models import ModelOutput, cva_to_head

__all__ = ["LossWeights", "Targets", "add_stats", "epoch_row", "multitask_loss", "outside_mass"]

Targets = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LossWeights:
    """How much each head's loss counts next to the classifier's."""

    cva: float = 1.0
    side_view: float = 0.5
    cam: float = 0.0  # Grad-CAM mass outside the head-and-neck box, at the layer the model explains


def multitask_loss(
    out: ModelOutput,
    targets: Targets,
    class_weights: torch.Tensor,
    weights: LossWeights,
    cam: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one batch and its sums for metrics (counts, errors), each head where it applies.

    `cam`: (B, h, w) non-negative class activation maps of the true class, when the box term is on.
    """
    label = targets["label"]
    has_class = label >= 0
    total = out.logits.new_zeros(())
    stats: dict[str, float] = {"n": float(has_class.sum())}
    if has_class.any():
        logits = out.logits[has_class].float()
        total = total + F.cross_entropy(logits, label[has_class], weight=class_weights)
        stats["correct"] = float((logits.argmax(1) == label[has_class]).sum())
    cva = targets["cva_deg"]
    known = torch.isfinite(cva) & has_class
    if out.cva_deg is not None and known.any():
        pred = out.cva_deg[known].float()
        total = total + weights.cva * F.smooth_l1_loss(cva_to_head(pred), cva_to_head(cva[known]), beta=0.1)
        stats["cva_n"] = float(known.sum())
        stats["cva_abs_err"] = float((pred.detach() - cva[known]).abs().sum())
    if out.side_view_logit is not None:
        side = targets["side_view"]
        logit = out.side_view_logit.float()
        total = total + weights.side_view * F.binary_cross_entropy_with_logits(logit, side)
        stats["side_n"] = float(len(side))
        stats["side_correct"] = float(((logit > 0).float() == side).sum())
    if cam is not None and weights.cam > 0:
        box = targets["box"]
        inside = torch.isfinite(box[:, 0]) & has_class
        if inside.any():
            outside = outside_mass(cam[inside], box[inside])
            total = total + weights.cam * outside.mean()
            stats["cam_n"] = float(inside.sum())
            stats["cam_outside"] = float(outside.detach().sum())
    return total, stats


def outside_mass(cam: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps and (B, 4) boxes in [0, 1] -> (B,) share of each map's mass outside its box."""
    b, h, w = cam.shape
    ys = (torch.arange(h, device=cam.device, dtype=cam.dtype) + 0.5) / h
    xs = (torch.arange(w, device=cam.device, dtype=cam.dtype) + 0.5) / w
    in_x = (xs[None, :] >= box[:, 0:1]) & (xs[None, :] <= box[:, 2:3])  # (B, w)
    in_y = (ys[None, :] >= box[:, 1:2]) & (ys[None, :] <= box[:, 3:4])  # (B, h)
    mask = (in_y[:, :, None] & in_x[:, None, :]).to(cam.dtype)
    mass = cam.flatten(1).sum(1).clamp_min(1e-6)
    return 1.0 - (cam * mask).flatten(1).sum(1) / mass


def epoch_row(prefix: str, sums: dict[str, float], loss: float) -> dict[str, float]:
    """Per-epoch metrics from batch sums: loss, accuracy, angle error, side-view accuracy, and the
    Grad-CAM mass outside the head-and-neck box when the box term is on."""
    row = {f"{prefix}_loss": loss, f"{prefix}_acc": sums.get("correct", 0.0) / max(sums.get("n", 0.0), 1.0)}
    if sums.get("cva_n"):
        row[f"{prefix}_cva_mae"] = sums["cva_abs_err"] / sums["cva_n"]
    if sums.get("side_n"):
        row[f"{prefix}_side_acc"] = sums["side_correct"] / sums["side_n"]
    if sums.get("cam_n"):
        row[f"{prefix}_cam_outside"] = sums["cam_outside"] / sums["cam_n"]
    return row


def add_stats(sums: dict[str, float], stats: dict[str, float]) -> None:
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + v
