"""Training in the app: one job at a time for the whole server, a visible line for the others, and the results.

`TrainingSlot` hands the one training slot to waiting jobs first come, first served. A waiting
job is an ordinary running handler that says where it stands in line every second, so its
visitor sees it waiting and can cancel it; Gradio's own queue would hide it instead. The
slot is given back by the training thread when it really stops, never before.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd

from posture.checkpoints import save_checkpoint
from posture.evaluate import learning_curves_figure
from posture.fit import TrainEvent
from posture.predict import Predictor
from posture.train import TrainResult
from webapp.render import pretty
from webapp.session import Session

__all__ = ["CancelledRun", "TrainingJob", "TrainingSlot", "curves_svg", "kept_metrics", "results_tables",
           "save_trained", "status_line"]

MAX_MISCLASSIFIED_SHOWN = 12


@dataclass(eq=False)
class TrainingJob:
    """A visitor's training run, from the moment it asks for the slot; `cancel` stops it wherever it is."""

    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class CancelledRun:
    """A cancelled run's best finished epoch, offered to the visitor to keep."""

    result: TrainResult
    arch: str


class TrainingSlot:
    """The server's one training slot, handed out first come, first served."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._line: list[TrainingJob] = []  # waiting jobs, in arrival order
        self._holder: TrainingJob | None = None

    def join(self, job: TrainingJob) -> None:
        """Stand in line for the slot."""
        with self._changed:
            if job is not self._holder and job not in self._line:
                self._line.append(job)

    def ahead_of(self, job: TrainingJob) -> int:
        """How many jobs train or wait before `job` (0: it holds the slot)."""
        with self._changed:
            if job is self._holder:
                return 0
            return (self._holder is not None) + (self._line.index(job) if job in self._line else len(self._line))

    def acquire(self, job: TrainingJob, timeout: float) -> bool:
        """Take the slot when it is free and `job` is first in line; wait up to `timeout` seconds."""
        with self._changed:
            ready = self._changed.wait_for(
                lambda: job.cancel.is_set() or (self._holder is None and self._line[:1] == [job]), timeout)
            if ready and not job.cancel.is_set():
                self._line.remove(job)
                self._holder = job
                return True
            return False

    def release(self, job: TrainingJob) -> None:
        """Leave the line, or give the slot back; harmless when `job` holds neither."""
        with self._changed:
            if job in self._line:
                self._line.remove(job)
            if self._holder is job:
                self._holder = None
            self._changed.notify_all()

    def wake(self) -> None:
        """Let waiting jobs look at their cancel flags now."""
        with self._changed:
            self._changed.notify_all()


def status_line(event: TrainEvent) -> str:
    """A progress event as one line: epoch, message, losses and accuracies, time left."""
    parts = [event.message] if event.message else []
    if event.kind in ("step", "epoch"):
        parts.insert(0, f"Epoch {event.epoch}/{event.epochs}")
    if event.kind == "epoch":
        for label, value in (("loss", event.loss), ("accuracy", event.acc),
                             ("validation loss", event.val_loss), ("validation accuracy", event.val_acc)):
            if value is not None:
                parts.append(f"{label} {value:.3f}")
    if event.eta_s is not None:
        parts.append(f"about {event.eta_s:.0f} s left")
    return " · ".join(parts)


def curves_svg(history: list[dict[str, Any]]) -> str:
    """Loss and accuracy per epoch as inline SVG, side by side on wide screens and stacked on phones;
    their text (legend, ticks) stays text, sharp at any size."""
    if not history:
        return ""
    wide = _svg(learning_curves_figure(history, size=(9, 3.2)))
    tall = _svg(learning_curves_figure(history, size=(4.6, 5.6), stacked=True))
    return f'<div class="curves-wide">{wide}</div><div class="curves-tall">{tall}</div>'


def _svg(fig) -> str:
    from matplotlib import rc_context

    out = StringIO()
    with rc_context({"svg.fonttype": "none", "font.size": 11}):
        fig.savefig(out, format="svg")
    svg = out.getvalue()
    svg = svg[svg.index("<svg"):]
    # A fixed size in points would overflow a phone: keep the viewBox, let the width follow the page.
    head, rest = svg.split(">", 1)
    head = " ".join(part for part in head.split(" ") if not part.startswith(("width=", "height=")))
    return f'{head} width="100%" preserveAspectRatio="xMidYMid meet">{rest}'


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch training keeps: the lowest validation loss (as the training loop chooses it)."""
    scored = [h for h in history if h.get("val_loss") is not None]
    return min(scored, key=lambda h: h["val_loss"]) if scored else None


def kept_metrics(history: list[dict[str, Any]]) -> dict[str, Any]:
    """What a cancelled run's checkpoint records: the best finished epoch's validation scores."""
    best = best_epoch(history)
    if best is None:
        return {}
    val = {name: best[key] for name, key in (("accuracy", "val_acc"), ("loss", "val_loss"))
           if best.get(key) is not None}
    return {"val": val, "best_epoch": best["epoch"], "cancelled_after_epoch": history[-1]["epoch"]}


def save_trained(session: Session, result: TrainResult, arch: str, models_taken: list[str],
                 mirror: bool = True) -> tuple[str, Predictor]:
    """Save a run's model in the session under the next free `<arch>-trained-<n>`; -> name, predictor
    (averaging each answer with the mirror image's unless `mirror` is off, as the bundled models are served)."""
    name = next(n for i in range(1, 10_000) if (n := f"{arch}-trained-{i}") not in models_taken)
    path = session.workdir() / f"{name}.safetensors"
    save_checkpoint(path, result.model, result.info)
    session.models[name] = path
    predictor = session.predictors[name] = Predictor(result.model, result.info, name=name, mirror=mirror)
    session.last_trained = name
    return name, predictor


def results_tables(result: TrainResult) -> tuple[str, pd.DataFrame | None, pd.DataFrame | None, list]:
    """Validation summary, per-class table, confusion matrix and misclassified overlays of a finished run."""
    report = result.val_report
    if report is None:
        return "", None, None, []
    m = report.metrics
    names = list(result.info.class_names)
    n = sum(v.get("support", 0) for v in m.get("per_class", {}).values())
    text = (f"Validation accuracy **{m['accuracy']:.1%}**"
            + (f", ROC AUC {m['roc_auc']:.3f}" if isinstance(m.get("roc_auc"), (int, float)) else "")
            + (f", calibration error (ECE) {m['ece']:.3f}" if isinstance(m.get("ece"), (int, float)) else "")
            + f" on {n} validation images.")
    per_class = pd.DataFrame(
        [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
         for c, v in m.get("per_class", {}).items()],
        columns=["class", "precision", "recall", "F1", "images"],
    ).round(3)
    confusion = pd.DataFrame(m.get("confusion", []), columns=[f"predicted {c}" for c in names])
    confusion.insert(0, "true class", names[: len(confusion)])
    gallery = []
    for row in report.misclassified[:MAX_MISCLASSIFIED_SHOWN]:
        overlay = row.get("overlay")
        if not overlay or not Path(overlay).is_file():
            continue
        p = row.get(f"p_{row['predicted']}")
        chance = f" {100 * p:.0f}%" if isinstance(p, (int, float)) else ""
        caption = f"{pretty(row['label'])} → {pretty(row['predicted'])}{chance}: {Path(row['file']).name}"
        gallery.append((overlay, caption))
    return text, per_class, confusion, gallery


def cancelled_text(run: CancelledRun) -> str:
    """What the visitor reads after a cancel: what could be kept, and that it is not kept yet."""
    best = best_epoch(run.result.history) or {}
    acc = best.get("val_acc")
    score = f" (validation accuracy {acc:.1%})" if isinstance(acc, (int, float)) else ""
    return (f"Cancelled after epoch {run.result.history[-1]['epoch']}. The best finished epoch, "
            f"epoch {best.get('epoch', '?')}{score}, is **not kept**: press **Keep this model** to save it "
            f"as a model of this session.")

