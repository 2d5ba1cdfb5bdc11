"""Scoring many images at once: files in, one row per file out, the CSV and overlays written as it goes.

Memory stays bounded whatever the number of files: images are decoded one chunk at a time,
each row and overlay is written as soon as it exists, and nothing but the running counts is
kept. An unreadable file becomes a row with its error; the others are still scored.
The command line (`python -m posture predict DIR_OR_FILES... --csv --cam-dir`) and the app's
Batch tab both use `find_images`, `score_files` and `BatchWriter`.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterable, Iterator, Sequence

from PIL import Image

from posture.errors import PostureError, UsageError
from posture.images import DEFAULT_MAX_SIDE, load_image
from posture.limits import IMAGE_SUFFIXES, is_ignored
from posture.overlay import encode_image
from posture.predict import Prediction, Predictor

__all__ = ["BatchRow", "BatchWriter", "Scored", "csv_columns", "find_images", "score_files"]


@dataclass
class Scored:
    """One file's outcome: its prediction (with Grad-CAM when asked), or why it could not be scored."""

    name: str  # how the user knows the file: the path as given, or the uploaded file's name
    prediction: Prediction | None
    error: str = ""


@dataclass
class BatchRow:
    """One file's row of the table and CSV: no pixels."""

    file: str
    label: str = ""
    probabilities: dict[str, float] = field(default_factory=dict)
    cva_deg: float | None = None
    side_view: bool | None = None
    side_view_prob: float | None = None
    overlay: str = ""  # where its overlay was written (a file, or a name inside the zip), if anywhere
    error: str = ""

    def record(self, class_names: Sequence[str]) -> dict[str, str]:
        """The CSV record: empty cells for outputs the model does not have or the file did not get."""
        out = {"file": self.file, "label": self.label}
        for name in class_names:
            p = self.probabilities.get(name)
            out[f"p_{name}"] = "" if p is None else f"{p:.6f}"
        out["cva_deg"] = "" if self.cva_deg is None else f"{self.cva_deg:.2f}"
        out["side_view"] = "" if self.side_view is None else str(self.side_view)
        out["side_view_prob"] = "" if self.side_view_prob is None else f"{self.side_view_prob:.4f}"
        out["overlay"] = self.overlay
        out["error"] = self.error
        return out


def csv_columns(class_names: Sequence[str]) -> list[str]:
    """The CSV header for a model with these classes."""
    return ["file", "label", *[f"p_{n}" for n in class_names], "cva_deg", "side_view", "side_view_prob",
            "overlay", "error"]


def find_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to the images inside them (recursively, sorted).

    A named file is kept whatever its suffix (scoring it says what is wrong with it); inside
    folders only image suffixes count, without hidden files and OS litter. Raises UsageError
    when nothing is left to score.
    """
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(is_ignored(part) for part in p.relative_to(path).parts))
        else:
            found.append(path)
    if not found:
        raise UsageError(f"no images found in {', '.join(map(str, inputs))}")
    return found


def score_files(
    predictor: Predictor,
    files: Sequence[str | Path],
    names: Sequence[str] | None = None,
    explain: bool = False,
    target: str | None = None,
    layer: str | None = None,
    batch_size: int = 16,
) -> Iterator[Scored]:
    """Predict every file, `batch_size` at a time, yielding results in order as they are ready."""
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    if names is not None and len(names) != len(files):
        raise UsageError("give one name per file")
    labels = [str(f) for f in files] if names is None else list(names)
    max_side = max(DEFAULT_MAX_SIDE, predictor.info.input_size)
    for start in range(0, len(files), batch_size):
        decoded: list[tuple[int, Image.Image]] = []
        errors: dict[int, str] = {}
        for i in range(start, min(start + batch_size, len(files))):
            try:
                decoded.append((i, load_image(files[i], max_side=max_side)))
            except PostureError as exc:
                errors[i] = str(exc)
        predictions = predictor.predict_batch([img for _, img in decoded], target=target, explain=explain,
                                              layer=layer) if decoded else []
        by_index = {i: pred for (i, _), pred in zip(decoded, predictions)}
        for i in range(start, min(start + batch_size, len(files))):
            yield Scored(labels[i], by_index.get(i), errors.get(i, ""))


class BatchWriter:
    """Writes each scored file at once: a CSV row, and its overlay into a folder and/or a zip.

    Use as a context manager; `add` returns the file's row. Overlay names are
    `<stem>_cam.<ext>`, made unique when two files share a stem.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        csv_path: str | Path | None = None,
        cam_dir: str | Path | None = None,
        zip_path: str | Path | None = None,
        alpha: float = 0.5,
        overlay_format: str = "png",
    ) -> None:
        self.class_names = list(class_names)
        self.csv_path = Path(csv_path) if csv_path else None
        self.cam_dir = Path(cam_dir) if cam_dir else None
        self.zip_path = Path(zip_path) if zip_path else None
        self.alpha = alpha
        self.overlay_format = overlay_format
        self.suffix = ".jpg" if overlay_format in ("jpeg", "jpg") else f".{overlay_format}"
        self.scored = 0
        self.failed = 0
        self._names: set[str] = set()
        self._csv_file: IO[str] | None = None
        self._csv: csv.DictWriter | None = None
        self._zip: zipfile.ZipFile | None = None

    @property
    def wants_overlays(self) -> bool:
        """Whether rows need Grad-CAM (an overlay goes somewhere)."""
        return self.cam_dir is not None or self.zip_path is not None

    def __enter__(self) -> "BatchWriter":
        if self.csv_path is not None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            self._csv_file = self.csv_path.open("w", newline="", encoding="utf-8")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=csv_columns(self.class_names))
            self._csv.writeheader()
        if self.cam_dir is not None:
            self.cam_dir.mkdir(parents=True, exist_ok=True)
        if self.zip_path is not None:
            self.zip_path.parent.mkdir(parents=True, exist_ok=True)
            # Overlays are JPEG/PNG already: storing them uncompressed costs nothing and saves time.
            self._zip = zipfile.ZipFile(self.zip_path, "w", zipfile.ZIP_STORED)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._csv_file is not None:
            self._csv_file.close()
        if self._zip is not None:
            self._zip.close()

    def _overlay_name(self, name: str) -> str:
        stem = Path(name.replace("\\", "/")).stem or "image"
        candidate, n = f"{stem}_cam{self.suffix}", 1
        while candidate in self._names:
            n += 1
            candidate = f"{stem}-{n}_cam{self.suffix}"
        self._names.add(candidate)
        return candidate

    def add(self, scored: Scored) -> BatchRow:
        """Write one file's row (and overlay); returns the row."""
        pred = scored.prediction
        if pred is None:
            self.failed += 1
            row = BatchRow(file=scored.name, error=scored.error or "not scored")
        else:
            self.scored += 1
            row = BatchRow(file=scored.name, label=pred.label, probabilities=dict(pred.probabilities),
                           cva_deg=pred.cva_deg, side_view=pred.side_view, side_view_prob=pred.side_view_prob)
            if self.wants_overlays and pred.cam is not None:
                row.overlay = self._write_overlay(scored.name, pred)
        if self._csv is not None:
            self._csv.writerow(row.record(self.class_names))
            self._csv_file.flush()  # type: ignore[union-attr] - a reader (or a crash) sees every finished row
        return row

    def _write_overlay(self, name: str, pred: Prediction) -> str:
        out_name = self._overlay_name(name)
        data = encode_image(pred.overlay(self.alpha), self.overlay_format)
        if self.cam_dir is not None:
            (self.cam_dir / out_name).write_bytes(data)
        if self._zip is not None:
            self._zip.writestr(out_name, data)
        return str(self.cam_dir / out_name) if self.cam_dir is not None else out_name

