"""Render the demo pictures in this folder and their labels.csv (deterministic: same files every run).

Side views in several styles, a frontal view and an empty room (no side view: the model should say
so), and one portrait stored sideways with an EXIF orientation tag, as a phone writes it. Seed 7 is
used by neither the training (seed 1) nor the test set (seed 2) of the bundled models; each picture
is the first of its kind in that stream, not a hand-picked one.

    python examples/make_examples.py
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from posture.synth import SynthConfig, render_negative, render_sample, sample_cva
from posture.synth.dataset import sample_rng

HERE = Path(__file__).resolve().parent
SEED = 7
CONFIG = SynthConfig(size_range=(480, 560))
SIDE_VIEWS = [("flat", "turtle_neck"), ("photo", "normal"), ("webcam", "turtle_neck"), ("lineart", "normal"),
              ("shaded", "turtle_neck"), ("silhouette", "normal")]  # fmt: skip
WITHOUT = ["frontal", "empty"]


def main() -> None:
    """Write the pictures and labels.csv next to this script."""
    for old in HERE.glob("*.jpg"):
        old.unlink()
    rows = []
    for index, (style, label) in enumerate(SIDE_VIEWS):
        rng = sample_rng(SEED, index)
        image, info = render_sample(rng, sample_cva(rng, label, CONFIG), CONFIG, style=style)
        name = f"{label}_cva{info.image_cva_deg:.0f}_{style}.jpg"
        image.save(HERE / name, quality=92)
        rows.append({"file": name, "label": label, "cva_deg": f"{info.image_cva_deg:.1f}", "note": f"{style} style"})
    for k, kind in enumerate(WITHOUT):
        image, info = render_negative(sample_rng(SEED, 100 + k), kind, CONFIG, style="photo")
        name = f"no_side_view_{kind}.jpg"
        image.save(HERE / name, quality=92)
        rows.append({"file": name, "label": "", "cva_deg": "", "note": "frontal view" if kind == "frontal"
                     else "empty scene"})
    rng = sample_rng(SEED, 200)
    image, info = render_sample(rng, sample_cva(rng, "turtle_neck", CONFIG), CONFIG, style="photo")
    sideways = image.transpose(Image.Transpose.ROTATE_90)  # stored turned, shown upright by orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways.save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    name = f"exif_rotated_turtle_neck_cva{info.image_cva_deg:.0f}.jpg"
    (HERE / name).write_bytes(buf.getvalue())
    rows.append({"file": name, "label": "turtle_neck", "cva_deg": f"{info.image_cva_deg:.1f}",
                 "note": "portrait stored sideways (EXIF orientation 6)"})
    with (HERE / "labels.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "label", "cva_deg", "note"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert np.isfinite([float(r["cva_deg"]) for r in rows if r["cva_deg"]]).all()


if __name__ == "__main__":
    main()
