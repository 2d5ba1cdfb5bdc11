"""Compose one labelled picture: frame the shot, draw backdrop, props and person, apply the camera.

Framing is anchored on the head-and-neck box: its size (sqrt of its area, relative to the shorter
image side) and its centre (relative to the image) are drawn independently of the label, so neither
tells the classes apart; the body hangs below and behind it and may leave the picture.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from posture.synth.camera import apply_camera
from posture.synth.canvas import Frame, Painter
from posture.synth.config import SampleInfo, SynthConfig, cva_from_points, label_for_cva
from posture.synth.person import draw_person, head_neck_points, neck_polygon, sample_person, tragus_point
from posture.synth.props import draw_behind, draw_in_front, sample_setup
from posture.synth.scene import draw_backdrop

ASPECTS = (1.0, 4.0 / 3.0, 3.0 / 2.0, 16.0 / 9.0)


def sample_image_size(rng: np.random.Generator, config: SynthConfig) -> tuple[int, int]:
    """Draw (width, height): longer side from `size_range`, common aspect ratios, landscape or portrait."""
    longer = int(rng.integers(config.size_range[0], config.size_range[1] + 1))
    shorter = int(round(longer / ASPECTS[rng.integers(len(ASPECTS))]))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def _place(rng: np.random.Generator, frame: Frame, pts: np.ndarray, size: tuple[int, int], fraction: float) -> Frame:
    """Scale and shift `frame` so the box around `pts` has the drawn size and centre and fits inside."""
    w, h = size
    c = frame.apply(pts)  # unit scale, origin at 0
    lo, hi = c.min(axis=0), c.max(axis=0)
    scale = fraction * min(w, h) / math.sqrt(float(np.prod(hi - lo)))
    half = (hi - lo) * scale / 2.0
    target = np.array([rng.uniform(0.32, 0.68) * w, rng.uniform(0.28, 0.5) * h])
    margin = 0.02 * min(w, h)
    target = np.clip(target, half + margin, np.array([w, h]) - half - margin)  # rarely active
    origin = target - (lo + hi) / 2.0 * scale
    return Frame(scale, frame.facing, frame.roll_deg, (float(origin[0]), float(origin[1])))


def render_sample(
    rng: np.random.Generator, cva_deg: float, config: SynthConfig = SynthConfig()
) -> tuple[Image.Image, SampleInfo]:
    """Render one side-view picture of a person whose true CVA is `cva_deg`; return it and its record."""
    if not 0.0 < cva_deg < 90.0:
        raise ValueError(f"cva_deg must lie in (0, 90), got {cva_deg}")
    width, height = sample_image_size(rng, config)
    ss = config.supersample
    facing = "right" if rng.random() < 0.5 else "left"
    roll = float(rng.uniform(-1.0, 1.0) * config.max_roll_deg)
    person = sample_person(rng, cva_deg, config)
    setup = sample_setup(rng, person, config)
    fraction = float(rng.uniform(*config.box_fraction))
    unit_frame = Frame(1.0, 1 if facing == "right" else -1, roll, (0.0, 0.0))
    head_pts = head_neck_points(person)
    frame = _place(rng, unit_frame, head_pts, (width * ss, height * ss), fraction)

    canvas = Image.new("RGB", (width * ss, height * ss))
    box = frame.apply(head_pts)
    centre = (box.min(axis=0) + box.max(axis=0)) / 2.0
    keep_out = (float(centre[0]), float(centre[1]), fraction * min(canvas.size) * 0.75)  # label-blind size
    scene = draw_backdrop(canvas, rng, roll, config.nuisance, keep_out, avoid=person.look.skin)
    painter = Painter(canvas, frame)
    draw_behind(painter, setup, person)
    draw_person(painter, person, setup.hand)
    draw_in_front(painter, setup)
    image = canvas.reduce(ss) if ss > 1 else canvas
    image = apply_camera(image, rng, config.nuisance)
    quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))

    c7, tragus = frame.apply(np.array([(0.0, 0.0), tragus_point(person)])) / ss
    # The reported box holds the whole neck band, down to where its front meets the chest. Framing
    # above still uses head_neck_points (head and the neck's back edge), so pictures are unchanged.
    box = frame.apply(np.concatenate([head_pts, neck_polygon(person)])) / ss
    x0, y0 = (int(max(0, math.floor(v))) for v in box.min(axis=0))
    x1, y1 = int(min(width, math.ceil(box[:, 0].max()))), int(min(height, math.ceil(box[:, 1].max())))
    info = SampleInfo(
        cva_deg=float(cva_deg),
        label=label_for_cva(cva_deg, config),
        facing=facing,
        c7=(float(c7[0]), float(c7[1])),
        tragus=(float(tragus[0]), float(tragus[1])),
        head_box=(x0, y0, x1, y1),
        width=width,
        height=height,
        image_cva_deg=cva_from_points(tuple(c7), tuple(tragus), facing),
        roll_deg=roll,
        head_tilt_deg=person.tilt_deg,
        torso_lean_deg=person.lean_deg,
        neck_length_px=float(np.hypot(*(tragus - c7))),
        head_height_px=frame.scale / ss,
        pose=setup.pose,
        arms=setup.arms,
        scene=scene,
        props=setup.props(),
        jpeg_quality=quality,
    )
    return image, info
