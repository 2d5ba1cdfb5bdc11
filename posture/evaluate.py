"""Evaluating a model on labelled images: metrics, per-image rows, and a report folder.

Every prediction comes with its Grad-CAM, angle estimate and side-view flag (one forward serves
them all), so one pass scores the verdict (accuracy, calibration), the angle (mean absolute
error where labels.csv gives angles), the side-view flag (how many side views it wrongly flags,
how many pictures without one it catches, per kind) and where the model looked (the share of
Grad-CAM mass inside the head-and-neck box, the pointing game). With synthetic data, whose
labels.csv records each picture's style, every figure is also broken down per style.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from posture.errors import DatasetError, UsageError
from posture.imagedata import Box, Item, annotate
from posture.labels import read_annotations
from posture.metrics import cam_box_scores, classification_metrics
from posture.predict import Prediction, Predictor

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL import Image

__all__ = ["CamExample", "EvalReport", "cam_grid_figure", "choose_cam_layer", "evaluate_folder", "evaluate_items",
           "learning_curves_figure", "plot_learning_curves", "summarise", "write_report"]

CAM_EXAMPLES = 3  # side views per style and class shown in a report's cam_grid.jpg


@dataclass
class CamExample:
    """One side view as a report shows it: its Grad-CAM overlay (a thumbnail), box and verdict."""

    overlay: "Image.Image"
    box: Box  # head-and-neck box, fractions of the picture (NaN when unknown)
    caption: str
    correct: bool


@dataclass
class EvalReport:
    """Metrics over a labelled set, one row per image, and the misclassified rows."""

    metrics: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    cam_examples: dict[str, list[CamExample]] = field(default_factory=dict)  # first side views per style and class

    @property
    def misclassified(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["label"] and r["label"] != r["predicted"]]


def _row(item: Item, true: str, pred: Prediction) -> dict[str, Any]:
    row: dict[str, Any] = {"file": str(item.path), "style": item.style, "view": item.view, "label": true,
                           "predicted": pred.label, **{f"p_{n}": round(p, 6) for n, p in pred.probabilities.items()}}
    if math.isfinite(item.cva_deg):
        row["cva_true"] = round(item.cva_deg, 3)
    if pred.cva_deg is not None:
        row["cva_pred"] = round(pred.cva_deg, 3)
    if pred.side_view_prob is not None:
        row["side_view_prob"] = round(pred.side_view_prob, 6)
    if item.side_view and not math.isnan(item.box[0]) and pred.heatmap is not None:
        h, w = pred.heatmap.shape
        b = item.box
        mass, hit = cam_box_scores(pred.heatmap, (b[0] * w, b[1] * h, b[2] * w, b[3] * h))
        row.update(cam_mass_in_box=round(mass, 4), pointing_hit=hit)
    return row


def _with_angle(label: str, deg: float | None) -> str:
    return label.replace("_", " ") + (f" {deg:.0f}°" if deg is not None and math.isfinite(deg) else "")


def _cam_example(item: Item, true: str, pred: Prediction) -> CamExample:
    overlay = pred.overlay(0.5)
    overlay.thumbnail((256, 256))
    caption = f"{_with_angle(true, item.cva_deg)} → {_with_angle(pred.label, pred.cva_deg)}"
    if pred.side_view is False:
        caption += ", no side view"
    return CamExample(overlay, item.box, caption, pred.label == true and pred.side_view is not False)


def summarise(rows: Sequence[dict[str, Any]], class_names: Sequence[str]) -> dict[str, Any]:
    """Metrics of a set of evaluation rows: the verdict on side views, the angle, the flag, Grad-CAM."""
    side = [r for r in rows if r["label"]]
    out: dict[str, Any] = {"n_images": len(rows)}
    if side:
        probs = np.array([[r[f"p_{n}"] for n in class_names] for r in side])
        labels = np.array([list(class_names).index(r["label"]) for r in side])
        out.update(classification_metrics(probs, labels, class_names))
    errors = [abs(r["cva_pred"] - r["cva_true"]) for r in side if "cva_pred" in r and "cva_true" in r]
    if errors:
        out["cva_mae"] = float(np.mean(errors))
        out["cva_within_5"] = float(np.mean(np.array(errors) <= 5.0))
        out["cva_n"] = len(errors)
    if any("side_view_prob" in r for r in rows):
        negatives = [r for r in rows if not r["label"]]
        flag = {"side_views_flagged": float(np.mean([r["side_view_prob"] < 0.5 for r in side])) if side else None,
                "n_side_views": len(side), "n_without": len(negatives)}
        if negatives:
            flag["without_flagged"] = float(np.mean([r["side_view_prob"] < 0.5 for r in negatives]))
            kinds = sorted({r["view"] for r in negatives})
            flag["without_flagged_by_kind"] = {
                k: float(np.mean([r["side_view_prob"] < 0.5 for r in negatives if r["view"] == k])) for k in kinds}
        out["side_view"] = flag
    cams = [r for r in side if "cam_mass_in_box" in r]
    if cams:
        out["cam_mass_in_box"] = float(np.mean([r["cam_mass_in_box"] for r in cams]))
        out["pointing_game"] = float(np.mean([r["pointing_hit"] for r in cams]))
    return out


def evaluate_items(
    predictor: Predictor,
    items: Sequence[Item | tuple[Path, int]],
    class_names: Sequence[str],
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    misclassified_dir: Path | None = None,
    layer: str | None = None,
    cam_examples: int = 0,
) -> EvalReport:
    """Predict (with Grad-CAM at `layer`) every item (class index into `class_names`, -1 for a
    picture without a side view) and score it; per style too when the items know their style.

    Labels are matched to the model's classes by name. Overlays of misclassified images go to
    `misclassified_dir` when given; the first `cam_examples` side views of each style and class
    (in the items' order, right or wrong) are kept as `EvalReport.cam_examples` (a report's grid;
    none by default).
    """
    items = [it if isinstance(it, Item) else Item(Path(it[0]), int(it[1]), view="side") for it in items]
    unknown = sorted(set(class_names) - set(predictor.class_names))
    if unknown:
        raise UsageError(f"the model does not know the classes {unknown}; it knows {predictor.class_names}")
    rows: list[dict[str, Any]] = []
    examples: dict[str, list[CamExample]] = {}
    taken: dict[tuple[str, str], int] = {}
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        for item, pred in zip(chunk, predictor.predict_batch([it.path for it in chunk], layer=layer)):
            true = class_names[item.label] if item.side_view else ""
            rows.append(_row(item, true, pred))
            key = (item.style or "all", true)
            if true and taken.get(key, 0) < cam_examples:
                taken[key] = taken.get(key, 0) + 1
                examples.setdefault(key[0], []).append(_cam_example(item, true, pred))
            if misclassified_dir is not None and true and pred.label != true:
                misclassified_dir.mkdir(parents=True, exist_ok=True)
                overlay = misclassified_dir / f"{item.path.stem}_{true}_as_{pred.label}.png"
                pred.overlay(0.5).save(overlay)
                rows[-1]["overlay"] = str(overlay)
        if progress is not None:
            progress(min(start + batch_size, len(items)), len(items))
    metrics = summarise(rows, predictor.class_names)
    metrics["layer"] = layer or predictor.cam_layer
    metrics["mirror"] = predictor.mirror  # answers averaged with the mirror image's
    styles = sorted({r["style"] for r in rows if r["style"]})
    if styles:
        metrics["by_style"] = {s: summarise([r for r in rows if r["style"] == s], predictor.class_names)
                               for s in styles}
    return EvalReport(metrics=metrics, rows=rows, cam_examples={k: examples[k] for k in sorted(examples)})


def write_report(
    report: EvalReport, report_dir: Path, class_names: Sequence[str], history: Sequence[dict] = ()
) -> None:
    """metrics.json, predictions.csv, confusion.png, cam_grid.jpg (and learning_curves.png) into `report_dir`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "metrics.json").write_text(json.dumps(report.metrics, indent=2))
    with (report_dir / "predictions.csv").open("w", newline="", encoding="utf-8") as f:
        fields = list(dict.fromkeys(k for row in report.rows for k in row))
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(report.rows)
    if "confusion" not in report.metrics:
        return
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
    if report.cam_examples:
        cam_grid_figure(report.cam_examples, str(report.metrics.get("layer", ""))).savefig(
            report_dir / "cam_grid.jpg", dpi=100, pil_kwargs={"quality": 85})


def cam_grid_figure(examples: dict[str, list[CamExample]], layer: str = "") -> "Figure":
    """One row per style: each side view's Grad-CAM overlay, its head-and-neck box (white) where
    known, and "true angle -> predicted angle" below it (red when wrong)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    rows, cols = len(examples), max(len(v) for v in examples.values())
    fig = Figure(figsize=(1.9 * cols + 0.9, 2.1 * rows + 0.4))
    axes = np.array(fig.subplots(rows, cols, squeeze=False))
    for r, (style, shown) in enumerate(examples.items()):
        axes[r, 0].set_ylabel(style, fontsize=11)
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(shown):
                ax.set_axis_off()
                continue
            ex = shown[c]
            w, h = ex.overlay.size
            ax.imshow(ex.overlay)
            if not math.isnan(ex.box[0]):
                x0, y0, x1, y1 = ex.box[0] * w, ex.box[1] * h, ex.box[2] * w, ex.box[3] * h
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linewidth=1.2))
            ax.set_xlabel(ex.caption, fontsize=7.5, color="black" if ex.correct else "red")
    at = f" at {layer}" if layer else ""
    title = f"Grad-CAM{at}: the first side views of each style and class, white box = head and neck"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # room for the title
    return fig


def plot_learning_curves(history: Sequence[dict], path: Path) -> None:
    """Train vs validation loss and accuracy per epoch (and angle error when recorded), saved as an image."""
    learning_curves_figure(history).savefig(path, dpi=110)


def learning_curves_figure(history: Sequence[dict], size: tuple[float, float] | None = None,
                           stacked: bool = False) -> "Figure":
    """Loss, accuracy (and angle error when recorded) per epoch, train and validation, side by side
    (or `stacked`): whole epochs on the x axis, a marker on every point (one finished epoch is
    still visible), a legend naming both lines."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [("loss", "loss"), ("acc", "accuracy")]
    if any(h.get("val_cva_mae") is not None for h in history):
        panels.append(("cva_mae", "angle error (deg)"))
    n = len(panels)
    fig = Figure(figsize=size or ((4.5, 2.8 * n) if stacked else (4.5 * n, 3.4)))
    axes = np.atleast_1d(fig.subplots(n, 1) if stacked else fig.subplots(1, n))
    for ax, (key, title) in zip(axes, panels):
        for split, prefix, style in (("train", "train", "-"), ("validation", "val", "--")):
            points = [(h["epoch"], h[f"{prefix}_{key}"]) for h in history if h.get(f"{prefix}_{key}") is not None]
            if points:
                ax.plot(*zip(*points), style, marker="o", ms=4, label=split)
        ax.set(xlabel="epoch", ylabel=title, title=title)
        if key == "acc":
            ax.set_ylim(0.0, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    return fig


def folder_items(data: str | Path) -> tuple[list[Item], list[str]]:
    """Every picture of a class-per-folder tree (and its no_side_view/ folder) with its annotations."""
    from posture.data import UploadLimits, scan_dataset

    scan = scan_dataset(data, UploadLimits.local())
    pairs = [(p, i) for i, c in enumerate(scan.class_names) for p in scan.files[c]]
    if scan.val_files:
        pairs += [(p, i) for i, c in enumerate(scan.class_names) for p in scan.val_files[c]]
    pairs += [(p, -1) for p in (*scan.negatives, *scan.val_negatives)]
    return annotate(pairs, read_annotations(scan.root)), list(scan.class_names)


def evaluate_folder(
    predictor: Predictor,
    data: str | Path,
    report_dir: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    layer: str | None = None,
) -> EvalReport:
    """Evaluate on a class-per-folder tree (angles, boxes and styles from its labels.csv when present)."""
    items, class_names = folder_items(data)
    report_dir = Path(report_dir) if report_dir is not None else None
    report = evaluate_items(
        predictor, items, class_names, progress=progress, layer=layer,
        misclassified_dir=report_dir / "misclassified" if report_dir else None,
        cam_examples=CAM_EXAMPLES if report_dir else 0,
    )
    if report_dir is not None:
        write_report(report, report_dir, predictor.class_names, predictor.info.history)
    return report


def choose_cam_layer(
    checkpoint: str | Path, data: str | Path, progress: Callable[[int, int], None] | None = None
) -> tuple[str, dict[str, dict[str, float]]]:
    """Measure where Grad-CAM of every layer falls on `data` (side views with boxes) and record the
    layer whose map lands best on the head and neck as the checkpoint's default; return it and the
    per-layer scores (also recorded, under metrics["cam_layers"]).

    "Best" is the larger of mass inside the box plus pointing-game hit rate: both should be high.
    Choose on data the reported figures do not come from (a validation set, not the test set).
    """
    from posture.checkpoints import load_checkpoint, save_checkpoint

    items, class_names = folder_items(data)
    items = [it for it in items if it.side_view and not math.isnan(it.box[0])]
    if not items:
        raise DatasetError("choosing a layer needs side views with head-and-neck boxes (a synthetic labels.csv)")
    model, info = load_checkpoint(checkpoint)
    predictor = Predictor(model, info)
    scores = {}
    for k, layer in enumerate(predictor.cam_layers):
        m = evaluate_items(predictor, items, class_names, layer=layer,
                           progress=None if progress is None else (lambda d, t, k=k: progress(k * t + d, t * len(predictor.cam_layers))))
        scores[layer] = {"cam_mass_in_box": m.metrics["cam_mass_in_box"], "pointing_game": m.metrics["pointing_game"]}
    best = max(scores, key=lambda name: scores[name]["cam_mass_in_box"] + scores[name]["pointing_game"])
    info.cam_layer = best
    info.metrics = {**info.metrics, "cam_layers": {**scores, "data": str(data), "chosen": best}}
    save_checkpoint(checkpoint, model, info)
    return best, scores
