"""Per-picture annotations from a dataset's `labels.csv`: the angle, the head-and-neck box, the style.

`python -m posture synth` writes one; a user may add one beside their class folders with at least
the columns `file` (path relative to the dataset folder, e.g. `normal/img001.jpg`) and `cva_deg`
(the craniovertebral angle as seen in the picture, in degrees). Pictures with an angle train the
model's angle estimate; a dataset without any gives a model without one.

Synthetic sets also record `image_cva_deg` (the angle in the picture once the camera's roll is
applied; it is what the picture shows, so it is what the estimate learns), the box and the style.
Rows are matched to the files the scan found; rows naming other files are ignored, so the paths
in a CSV are never opened.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from posture.errors import DatasetError

__all__ = ["LABELS_CSV", "Annotation", "read_annotations"]

LABELS_CSV = "labels.csv"
Box = tuple[float, float, float, float]
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Annotation:
    """What labels.csv says about one picture; None where it says nothing."""

    cva_deg: float | None = None  # the angle as seen in the picture
    box: Box | None = None  # head-and-neck box (x0, y0, x1, y1) as fractions of the image size
    size: tuple[float, float] | None = None  # (width, height) of the picture the row describes
    style: str | None = None  # the synthetic rendering style
    view: str | None = None  # "side", or what a picture without a side view shows


def _number(row: dict[str, str], key: str, line: int) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{LABELS_CSV} line {line}: {key} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DatasetError(f"{LABELS_CSV} line {line}: {key} must be a finite number, got {text!r}")
    return value


def _size(row: dict[str, str], line: int) -> tuple[float, float] | None:
    w, h = _number(row, "width", line), _number(row, "height", line)
    if w is None or h is None:
        return None
    if w <= 0 or h <= 0:
        raise DatasetError(f"{LABELS_CSV} line {line}: width and height must be positive")
    return (w, h)


def _box(row: dict[str, str], size: tuple[float, float] | None, line: int) -> Box | None:
    values = [_number(row, k, line) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
    if size is None or any(v is None for v in values):
        return None
    x0, y0, x1, y1 = values  # type: ignore[misc]
    return (x0 / size[0], y0 / size[1], x1 / size[0], y1 / size[1])


def read_annotations(root: str | Path) -> dict[Path, Annotation]:
    """`root / file` -> Annotation for every row of `root/labels.csv`; {} when there is none."""
    root = Path(root)
    path = root / LABELS_CSV
    if not path.is_file():
        return {}
    out: dict[Path, Annotation] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "file" not in reader.fieldnames:
                raise DatasetError(f"{LABELS_CSV} needs a header row with a 'file' column (and 'cva_deg')")
            for line, row in enumerate(reader, start=2):
                if line > MAX_ROWS:
                    raise DatasetError(f"{LABELS_CSV} has more than {MAX_ROWS} rows")
                name = (row.get("file") or "").strip()
                if not name:
                    continue
                cva = _number(row, "image_cva_deg", line)
                cva = cva if cva is not None else _number(row, "cva_deg", line)
                if cva is not None and not 0.0 < cva < 90.0:
                    raise DatasetError(f"{LABELS_CSV} line {line}: cva_deg {cva} is outside 0..90 degrees")
                size = _size(row, line)
                out[root / name] = Annotation(cva, _box(row, size, line), size, row.get("style") or None,
                                              row.get("view") or None)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{LABELS_CSV} is not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DatasetError(f"{LABELS_CSV} is not a readable CSV file ({exc})") from None
    return out
