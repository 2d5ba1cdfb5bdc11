"""What each checkpoint is, in one line per model: the summaries behind `python -m posture models` and the app.

A summary reads only a checkpoint's header (no tensors). `metrics_text` is the one place where
recorded metrics become text, so the command line and the app's Models tab say the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from posture.checkpoints import read_info
from posture.errors import PostureError

__all__ = ["CheckpointSummary", "metrics_text", "summarize_checkpoint"]

_SCORES = ("accuracy", "roc_auc", "ece")


@dataclass
class CheckpointSummary:
    """One model as a user picks it: its name, where it lives, and what its header says."""

    name: str
    path: Path
    arch: str = ""
    class_names: list[str] = field(default_factory=list)
    input_size: int = 0
    init: str = ""  # scratch, imagenet, or the file the weights started from (its name only)
    heads: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    error: str = ""  # why the header could not be read; every other field is empty then

    @property
    def metrics_text(self) -> str:
        """The recorded metrics as one line (see `metrics_text`)."""
        return metrics_text(self.metrics)

    @property
    def accuracy(self) -> float | None:
        """Accuracy on the test set when recorded, else on the validation set, else None."""
        for split in ("test", "val"):
            value = self.metrics.get(split, {}).get("accuracy") if isinstance(self.metrics.get(split), dict) else None
            if isinstance(value, (int, float)):
                return float(value)
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: paths as text, the metric line and headline accuracy included."""
        out = asdict(self)
        out["path"] = str(self.path)
        out["metrics_text"] = self.metrics_text
        out["accuracy"] = self.accuracy
        return out


def summarize_checkpoint(name: str, path: str | Path) -> CheckpointSummary:
    """Read a checkpoint's header into a summary; an unreadable file gives a summary with `error` set."""
    path = Path(path)
    try:
        info = read_info(path)
    except PostureError as exc:
        return CheckpointSummary(name=name, path=path, error=str(exc))
    # A file path as init says where training started, not where it lies on someone's disk.
    init = Path(info.init).name if ("/" in info.init or "\\" in info.init) else info.init
    return CheckpointSummary(name=name, path=path, arch=info.arch, class_names=list(info.class_names),
                             input_size=info.input_size, init=init, heads=list(info.heads),
                             metrics=dict(info.metrics), created_at=info.created_at)


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """'val (n=200): accuracy 0.930, roc_auc 0.981, ece 0.021; test (n=1000): ...' or '-'.

    Every metrics set a checkpoint records (val, test, ...) gets its scores, in the order
    recorded; a flat set of scores (no split name) is shown as it is.
    """
    sets = {k: v for k, v in metrics.items() if isinstance(v, Mapping) and "accuracy" in v}
    if not sets and "accuracy" in metrics:
        sets = {"": metrics}
    parts = []
    for split, scores in sets.items():
        shown = ", ".join(f"{k} {scores[k]:.3f}" for k in _SCORES if isinstance(scores.get(k), (int, float)))
        count = f" (n={scores['n']})" if isinstance(scores.get("n"), int) else ""
        parts.append(f"{split}{count}: {shown}" if split else shown)
    return "; ".join(parts) or "-"
