"""Classification and explanation metrics from arrays: pure functions, no I/O."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

__all__ = ["cam_box_scores", "classification_metrics", "expected_calibration_error"]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by count."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def classification_metrics(
    probs: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, ROC-AUC, ECE and the confusion matrix.

    `probs` is (N, K) softmax output, `labels` (N,) true class indices. ROC-AUC is
    the positive (second) class's for two classes, macro one-vs-rest otherwise, and
    None when the labels hold a single class.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k or len(labels) != len(probs):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} do not fit {k} classes")
    if len(labels) == 0:
        raise ValueError("no predictions to score")
    pred = probs.argmax(axis=1)
    p, r, f1, support = precision_recall_fscore_support(
        labels, pred, labels=list(range(k)), zero_division=0
    )
    auc = None
    if len(np.unique(labels)) > 1:
        auc = (
            roc_auc_score(labels, probs[:, 1])
            if k == 2
            else roc_auc_score(labels, probs, multi_class="ovr", labels=list(range(k)))
        )
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "roc_auc": None if auc is None else float(auc),
        "ece": expected_calibration_error(probs, labels),
        "per_class": {
            name: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion": confusion_matrix(labels, pred, labels=list(range(k))).tolist(),
    }


def cam_box_scores(heatmap: np.ndarray, box: Sequence[float]) -> tuple[float, bool]:
    """Share of heatmap mass inside `box` (x0, y0, x1, y1) and whether its peak lies inside."""
    h, w = heatmap.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, x0), min(w, x1)
    y0, y1 = max(0, y0), min(h, y1)
    total = float(heatmap.sum())
    inside = float(heatmap[y0:y1, x0:x1].sum()) if x1 > x0 and y1 > y0 else 0.0
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    hit = bool(x0 <= px < x1 and y0 <= py < y1)
    return (inside / total if total > 0 else 0.0), hit
