"""Synthetic labelled side-view pictures of people with a known craniovertebral angle (CVA).

The CVA is the angle at C7 between the horizontal and the line C7 -> tragus; the label is
`turtle_neck` when it is below `SynthConfig.threshold`, else `normal`. Only the neck geometry
depends on the label; every nuisance (looks, pose, props, backdrop, lighting, camera) is drawn
independently of it. Same seed and index -> the same picture, whatever the number of workers.

Angles: `SampleInfo.cva_deg` is the body's true CVA and the label follows it. A small camera roll
(`SynthConfig.max_roll_deg`, default 4 deg, less than the 5 deg margin) turns the whole picture, so
the angle measured from the reported pixel coordinates `c7`/`tragus` is `SampleInfo.image_cva_deg`
(= cva_deg + roll_deg when facing right, cva_deg - roll_deg when facing left).

Typical use: `generate_dataset(out, n, seed)` for a folder data set (labels.csv + class folders),
`iter_samples(seed, config, start=epoch * n)` for fresh pictures every epoch (the same pixels a
data set of that seed holds), `render_indexed(seed, index)` for map-style access.

Modules: config (settings, record, CVA rules), canvas (drawing in body coordinates), head, person,
props (furniture, devices), scene (backdrops), camera (lighting, noise, JPEG), render (one picture),
dataset (seeded streams, writing a data set), cli (the `synth` sub-command).
"""

from posture.synth.config import SampleInfo, SynthConfig, cva_from_points, label_for_cva, sample_cva
from posture.synth.cli import add_synth_arguments, synth_main
from posture.synth.dataset import generate_dataset, iter_samples, read_labels, render_indexed
from posture.synth.render import render_sample

__all__ = [
    "SampleInfo",
    "add_synth_arguments",
    "generate_dataset",
    "iter_samples",
    "read_labels",
    "render_indexed",
    "synth_main",
    "SynthConfig",
    "cva_from_points",
    "label_for_cva",
    "render_sample",
    "sample_cva",
]
