"""Evaluating a model on labelled images: metrics, per-image rows, and a report folder.

Grad-CAM comes with every prediction (one forward serves both), so the report
can say where the model looked: when the data's labels.csv has head-and-neck
boxes, the share of heatmap mass inside the box and the pointing-game hit rate.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from posture.metrics import cam_box_scores, classification_metrics
from posture.predict import Predictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "EvalReport",
    "evaluate_folder",
    "evaluate_items",
    "learning_curves_figure",
    "plot_learning_curves",
    "read_boxes",
    "write_report",
]

Box = tuple[float, float, float, float]


@dataclass
class EvalReport:
    """Metrics over a labelled set, one row per image, and the misclassified rows."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def misclassified(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["label"] != r["predicted"]]


def read_boxes(labels_csv: Path) -> dict[str, Box]:
    """Relative file path -> head-and-neck box from a synthetic set's labels.csv, as fractions
    (x0, y0, x1, y1) of the image's width and height, so it fits any decoded size."""
    with labels_csv.open(newline="", encoding="utf-8") as f:
        return {
            row["file"]: (
                float(row["box_x0"]) / float(row["width"]),
                float(row["box_y0"]) / float(row["height"]),
                float(row["box_x1"]) / float(row["width"]),
                float(row["box_y1"]) / float(row["height"]),
            )
            for row in csv.DictReader(f)
            if row.get("box_x0") not in (None, "")
        }


def evaluate_items(
    predictor: Predictor,
    items: Sequence[tuple[Path, int]],
    class_names: Sequence[str],
    boxes: dict[Path, Box] | None = None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    misclassified_dir: Path | None = None,
) -> EvalReport:
    """Predict (with Grad-CAM) every (path, index into `class_names`) item and score it.

    Labels are matched to the model's classes by name; `boxes` are fractions of the image
    size (see `read_boxes`). Overlays of misclassified
    images go to `misclassified_dir` when given.
    """
    model_index = {n: i for i, n in enumerate(predictor.class_names)}
    unknown = sorted(set(class_names) - set(model_index))
    if unknown:
        raise ValueError(f"the model does not know the classes {unknown}; it knows {predictor.class_names}")
    rows, probs, labels, masses, hits = [], [], [], [], []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        for (path, label), pred in zip(chunk, predictor.predict_batch([p for p, _ in chunk])):
            true = class_names[label]
            row = {"file": str(path), "label": true, "predicted": pred.label, **{
                f"p_{n}": round(p, 6) for n, p in pred.probabilities.items()}}
            box = boxes.get(Path(path)) if boxes else None
            if box is not None and pred.heatmap is not None:
                sx, sy = pred.image.width, pred.image.height
                mass, hit = cam_box_scores(pred.heatmap, (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy))
                row.update(cam_mass_in_box=round(mass, 4), pointing_hit=hit)
                masses.append(mass)
                hits.append(hit)
            if misclassified_dir is not None and pred.label != true:
                misclassified_dir.mkdir(parents=True, exist_ok=True)
                overlay = misclassified_dir / f"{Path(path).stem}_{true}_as_{pred.label}.png"
                pred.overlay(0.5).save(overlay)
                row["overlay"] = str(overlay)
            rows.append(row)
            probs.append([pred.probabilities[n] for n in predictor.class_names])
            labels.append(model_index[true])
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    metrics = classification_metrics(np.array(probs), np.array(labels), predictor.class_names)
    if masses:
        metrics["cam_mass_in_box"] = float(np.mean(masses))
        metrics["pointing_game"] = float(np.mean(hits))
    return EvalReport(metrics=metrics, rows=rows)


def write_report(
    report: EvalReport, report_dir: Path, class_names: Sequence[str], history: Sequence[dict] = ()
) -> None:
    """metrics.json, predictions.csv, confusion.png (and learning_curves.png) into `report_dir`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(report.metrics, indent=2))
    with (report_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        fields = list(dict.fromkeys(k for row in report.rows for k in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(report.rows)
    cm = np.array(report.metrics["confusion"])
    fig = Figure(figsize=(1.6 + 1.1 * len(class_names), 1.2 + 1.1 * len(class_names)))
    ax = fig.subplots()
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(class_names)), class_names, rotation=30, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {report.metrics['accuracy']:.3f} (n={report.metrics['n']})")
    fig.tight_layout()
    fig.savefig(report_dir / "confusion.png", dpi=120)
    if history:
        plot_learning_curves(history, report_dir / "learning_curves.png")


def plot_learning_curves(history: Sequence[dict], path: Path) -> None:
    """Train vs validation loss and accuracy per epoch, from a checkpoint's history, saved as an image."""
    learning_curves_figure(history).savefig(path, dpi=110)


def learning_curves_figure(
    history: Sequence[dict], size: tuple[float, float] = (9, 3.4), stacked: bool = False
) -> "Figure":
    """Loss and accuracy per epoch, train and validation, side by side (or `stacked`): whole epochs
    on the x axis, a marker on every point (one finished epoch is still visible), a legend naming both lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=size)
    ax_loss, ax_acc = fig.subplots(2, 1) if stacked else fig.subplots(1, 2)
    for split, key, style in (("train", "train", "-"), ("validation", "val", "--")):
        for ax, metric in ((ax_loss, "loss"), (ax_acc, "acc")):
            points = [(h["epoch"], h[f"{key}_{metric}"]) for h in history if h.get(f"{key}_{metric}") is not None]
            if points:
                ax.plot(*zip(*points), style, marker="o", ms=4, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0.0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def evaluate_folder(
    predictor: Predictor,
    data: str | Path,
    report_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Evaluate on a class-per-folder tree (boxes from its labels.csv when present)."""
    from posture.data import UploadLimits, scan_dataset

    scan = scan_dataset(data, UploadLimits.local())
    items = [(p, i) for i, c in enumerate(scan.class_names) for p in scan.files[c]]
    labels_csv = scan.root / "labels.csv"
    boxes = None
    if labels_csv.is_file():
        boxes = {scan.root / rel: box for rel, box in read_boxes(labels_csv).items()}
    report_dir = Path(report_dir) if report_dir is not None else None
    report = evaluate_items(
        predictor, items, scan.class_names, boxes, progress=progress,
        misclassified_dir=report_dir / "misclassified" if report_dir else None,
    )
    if report_dir is not None:
        write_report(report, report_dir, predictor.class_names, predictor.info.history)
    return report
