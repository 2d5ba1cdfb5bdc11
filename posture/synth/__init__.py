"""Synthetic labelled side-view pictures of people with a known craniovertebral angle (CVA).

The CVA is the angle at C7 between the horizontal and the line C7 -> tragus; the label is
`turtle_neck` when it is below `SynthConfig.threshold`, else `normal`. Only the neck geometry
depends on the label; every nuisance (looks, pose, props, backdrop, lighting, camera) is drawn
independently of it. Same seed and index -> the same picture, whatever the number of workers.

Angles: `SampleInfo.cva_deg` is the body's true CVA and the label follows it. A small camera roll
(`SynthConfig.max_roll_deg`, default 4 deg, less than the 5 deg margin) turns the whole picture, so
the angle measured from the reported pixel coordinates `c7`/`tragus` is `SampleInfo.image_cva_deg`
(= cva_deg + roll_deg when facing right, cva_deg - roll_deg when facing left).

Styles (`SynthConfig.styles`, see posture.synth.styles): flat, lineart, shaded, silhouette, photo,
webcam and lowres draw the same kind of scene in visibly different ways; `labels.csv` records each
picture's style. With `SynthConfig.negatives` > 0 a share of the pictures hold no side view of a
person (people seen from the front or behind, empty rooms, blank, noisy and textured frames,
landscapes, still lifes, strips and tiny images); they go to `no_side_view/` with no label.

Typical use: `generate_dataset(out, n, seed)` for a folder data set (labels.csv + class folders),
`iter_samples(seed, config, start=epoch * n)` for fresh pictures every epoch (the same pixels a
data set of that seed holds), `render_indexed(seed, index)` for map-style access.

Modules: config (settings, record, CVA rules), canvas (drawing in body coordinates, part map), head,
person, props (furniture, devices), views (front and back views), scene (backdrops), styles (brushes),
camera (lighting, noise, JPEG, style cameras), render (one side view), negatives (pictures without a
side view), dataset (seeded streams, writing a data set), cli (the `synth` sub-command).
"""

from posture.synth.config import (
    NEGATIVE_KINDS,
    STYLES,
    SampleInfo,
    SynthConfig,
    cva_from_points,
    label_for_cva,
    sample_cva,
)
from posture.synth.cli import add_synth_arguments, synth_main
from posture.synth.dataset import NO_SIDE_VIEW, generate_dataset, iter_samples, read_labels, render_indexed
from posture.synth.negatives import render_negative
from posture.synth.render import render_sample

__all__ = [
    "NEGATIVE_KINDS",
    "NO_SIDE_VIEW",
    "STYLES",
    "SampleInfo",
    "add_synth_arguments",
    "generate_dataset",
    "iter_samples",
    "read_labels",
    "render_indexed",
    "render_negative",
    "synth_main",
    "SynthConfig",
    "cva_from_points",
    "label_for_cva",
    "render_sample",
    "sample_cva",
]
