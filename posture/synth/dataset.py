"""Seeded streams of samples and writing a labelled data set (class folders + labels.csv) in parallel.

Sample `index` of seed `seed` is drawn from its own generator, SeedSequence([seed, index]), so every
picture depends only on (seed, index, config): not on the worker count, the start position or the
order of work. What a sample shows follows its index: in every run of 20 indices the last
`2 * round(10 * config.negatives)` are pictures without a side view (written to `no_side_view/`),
and the others alternate between the classes (even: normal, odd: turtle_neck), so any run of 20
is balanced.
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from posture.errors import UsageError
from posture.limits import NO_SIDE_VIEW  # the folder of pictures without a side view of a person
from posture.synth.camera import decode_jpeg, encode_jpeg
from posture.synth.config import SampleInfo, SynthConfig, sample_cva
from posture.synth.negatives import render_negative
from posture.synth.render import render_sample

CSV_COLUMNS = (
    "file", "label", "cva_deg", "facing", "box_x0", "box_y0", "box_x1", "box_y1", "width", "height",
    "c7_x", "c7_y", "tragus_x", "tragus_y", "image_cva_deg", "roll_deg", "head_tilt_deg", "torso_lean_deg",
    "pose", "arms", "scene", "props", "jpeg_quality", "index", "style", "view", "side_view", "pitch_deg",
)  # fmt: skip
_CYCLE = 20


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """Return the generator of sample `index` in the stream of `seed`."""
    if seed < 0 or index < 0:
        raise UsageError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def label_for_index(index: int, config: SynthConfig) -> str | None:
    """Return the class of sample `index`, or None for a picture without a side view."""
    position = index % _CYCLE
    if position >= _CYCLE - 2 * round(_CYCLE / 2 * config.negatives):
        return None
    return config.class_names[position % 2]


def render_indexed(seed: int, index: int, config: SynthConfig = SynthConfig()) -> tuple[bytes, SampleInfo]:
    """Render sample `index` of the stream of `seed` and return its JPEG bytes and record."""
    rng = sample_rng(seed, index)
    label = label_for_index(index, config)
    if label is None:
        image, info = render_negative(rng, None, config)
    else:
        image, info = render_sample(rng, sample_cva(rng, label, config), config)
    info.index = index
    return encode_jpeg(image, info.jpeg_quality), info


def iter_samples(
    seed: int, config: SynthConfig = SynthConfig(), start: int = 0, step: int = 1
) -> Iterator[tuple[Image.Image, SampleInfo]]:
    """Yield samples start, start+step, ... forever, decoded from the same JPEG bytes a data set holds.

    Use `step` to share one stream between data-loader workers (worker k: start=k, step=n_workers).
    """
    if step < 1:
        raise UsageError(f"step must be at least 1, got {step}")
    index = start
    while True:
        data, info = render_indexed(seed, index, config)
        yield decode_jpeg(data), info
        index += step


def relative_path(info: SampleInfo) -> str:
    """Return the file name of a sample inside a data set folder, e.g. 'normal/000012.jpg'."""
    return f"{info.label if info.side_view else NO_SIDE_VIEW}/{info.index:06d}.jpg"


_SIDE_ONLY = ("label", "cva_deg", "facing", "box_x0", "box_y0", "box_x1", "box_y1", "c7_x", "c7_y", "tragus_x",
              "tragus_y", "image_cva_deg", "roll_deg", "head_tilt_deg", "torso_lean_deg", "pose", "arms", "props",
              "pitch_deg")  # fmt: skip


def csv_row(info: SampleInfo) -> dict[str, str]:
    """Return the labels.csv row of a sample with fixed number formatting (side-view fields empty
    for pictures without a side view, but for the head-and-neck box of a frontal or back view or an
    empty room, from which training cuts close-ups)."""
    x0, y0, x1, y1 = info.head_box
    values = {
        "file": relative_path(info), "label": info.label, "cva_deg": f"{info.cva_deg:.3f}",
        "facing": info.facing, "box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1,
        "width": info.width, "height": info.height, "c7_x": f"{info.c7[0]:.3f}", "c7_y": f"{info.c7[1]:.3f}",
        "tragus_x": f"{info.tragus[0]:.3f}", "tragus_y": f"{info.tragus[1]:.3f}",
        "image_cva_deg": f"{info.image_cva_deg:.3f}", "roll_deg": f"{info.roll_deg:.3f}",
        "head_tilt_deg": f"{info.head_tilt_deg:.3f}", "torso_lean_deg": f"{info.torso_lean_deg:.3f}",
        "pose": info.pose, "arms": info.arms, "scene": info.scene, "props": info.props,
        "jpeg_quality": info.jpeg_quality, "index": info.index, "style": info.style, "view": info.view,
        "side_view": int(info.side_view), "pitch_deg": f"{info.pitch_deg:.3f}",
    }  # fmt: skip
    row = {k: str(v) for k, v in values.items()}
    if not info.side_view:
        row.update(dict.fromkeys(_SIDE_ONLY, ""))
        if x1 > x0 and y1 > y0:  # a person from the front or back, or an empty room: where the head is or would be
            row.update(box_x0=str(x0), box_y0=str(y0), box_x1=str(x1), box_y1=str(y1))
    return row


def _write_one(task: tuple[str, int, int, SynthConfig]) -> dict[str, str]:
    """Render one sample and write its JPEG (runs in a worker process)."""
    out_dir, seed, index, config = task
    data, info = render_indexed(seed, index, config)
    Path(out_dir, relative_path(info)).write_bytes(data)
    return csv_row(info)


def _pool_context() -> multiprocessing.context.BaseContext:
    # fork starts workers in milliseconds and does not re-import torch; workers only use numpy and PIL
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    config: SynthConfig = SynthConfig(),
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Writes out_dir/<class>/<index>.jpg for each class + out_dir/labels.csv; returns the csv path."""
    if n < 1:
        raise UsageError(f"n must be at least 1, got {n}")
    workers = min(n, workers if workers is not None else (os.cpu_count() or 1))
    if workers < 1:
        raise UsageError(f"workers must be at least 1, got {workers}")
    out = Path(out_dir)
    for name in (*config.class_names, *([NO_SIDE_VIEW] if config.negatives > 0 else [])):
        (out / name).mkdir(parents=True, exist_ok=True)
    tasks = [(str(out), seed, i, config) for i in range(n)]
    rows: list[dict[str, str]] = []
    if workers == 1:
        results: Iterator[dict[str, str]] = map(_write_one, tasks)
        for row in results:
            rows.append(row)
            if progress is not None:
                progress(len(rows), n)
    else:
        with _pool_context().Pool(workers) as pool:
            for row in pool.imap(_write_one, tasks, chunksize=max(1, min(32, n // (workers * 8)))):
                rows.append(row)
                if progress is not None:
                    progress(len(rows), n)
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def read_labels(csv_path: str | Path) -> list[dict[str, str]]:
    """Return the rows of a labels.csv written by `generate_dataset`."""
    with Path(csv_path).open(newline="") as f:
        return list(csv.DictReader(f))
