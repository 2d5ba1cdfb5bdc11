"""Compose one labelled picture: pick a style, frame the shot, draw backdrop, props and person, paint
it in the style's brush, apply the style's camera.

Framing is anchored on the head-and-neck box: its size (sqrt of its area, relative to the shorter
image side) and its centre (relative to the image) are drawn independently of the label, so neither
tells the classes apart; the body hangs below and behind it and may leave the picture. Close-up
styles (webcam) frame the head and shoulders only.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from posture.errors import UsageError
from posture.synth.camera import apply_style_camera
from posture.synth.canvas import Frame, Group, Painter, Parts
from posture.synth.config import SampleInfo, SynthConfig, cva_from_points, label_for_cva
from posture.synth.person import draw_person, head_neck_points, neck_polygon, sample_person, tragus_point
from posture.synth.props import draw_behind, draw_in_front, sample_setup
from posture.synth.scene import paint_backdrop
from posture.synth.styles import STYLE_SPECS, Style, apply_brush

ASPECTS = (1.0, 4.0 / 3.0, 3.0 / 2.0, 16.0 / 9.0)
CLOSEUP_FRACTION = (0.5, 0.8)  # head-and-neck box of a close-up, relative to the shorter side


def sample_image_size(rng: np.random.Generator, config: SynthConfig) -> tuple[int, int]:
    """Draw (width, height): longer side from `size_range`, common aspect ratios, landscape or portrait."""
    longer = int(rng.integers(config.size_range[0], config.size_range[1] + 1))
    shorter = int(round(longer / ASPECTS[rng.integers(len(ASPECTS))]))
    return (longer, shorter) if rng.random() < 0.5 else (shorter, longer)


def pick_style(rng: np.random.Generator, config: SynthConfig) -> Style:
    """Draw one of the config's styles, uniformly."""
    return STYLE_SPECS[config.styles[int(rng.integers(len(config.styles)))]]


def _place(rng: np.random.Generator, frame: Frame, pts: np.ndarray, size: tuple[int, int], fraction: float,
           closeup: bool) -> Frame:
    """Scale and shift `frame` so the box around `pts` has the drawn size and centre and fits inside."""
    w, h = size
    c = frame.apply(pts)  # unit scale, origin at 0
    lo, hi = c.min(axis=0), c.max(axis=0)
    scale = fraction * min(w, h) / math.sqrt(float(np.prod(hi - lo)))
    half = (hi - lo) * scale / 2.0
    if closeup:
        target = np.array([rng.uniform(0.38, 0.62) * w, rng.uniform(0.36, 0.56) * h])
    else:
        target = np.array([rng.uniform(0.28, 0.72) * w, rng.uniform(0.25, 0.52) * h])
    margin = 0.02 * min(w, h)
    target = np.clip(target, half + margin, np.maximum(half + margin, np.array([w, h]) - half - margin))
    origin = target - (lo + hi) / 2.0 * scale
    return Frame(scale, frame.facing, frame.roll_deg, (float(origin[0]), float(origin[1])), frame.squash)


def pixel_box(points: np.ndarray, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The whole-pixel box (x0, y0, x1, y1) around `points` (N, 2), clipped to a picture of `size`."""
    (x0, y0), (x1, y1) = np.floor(points.min(axis=0)), np.ceil(points.max(axis=0))
    return int(max(0, x0)), int(max(0, y0)), int(min(size[0], x1)), int(min(size[1], y1))


def render_sample(
    rng: np.random.Generator, cva_deg: float, config: SynthConfig = SynthConfig(), style: str | None = None
) -> tuple[Image.Image, SampleInfo]:
    """Render one side-view picture of a person whose true CVA is `cva_deg`; return it and its record.

    `style` names one of `STYLE_SPECS`; by default one of `config.styles` is drawn from `rng`.
    """
    if not 0.0 < cva_deg < 90.0:
        raise UsageError(f"cva_deg must lie in (0, 90), got {cva_deg}")
    spec = STYLE_SPECS[style] if style is not None else pick_style(rng, config)
    width, height = sample_image_size(rng, config)
    ss = config.supersample
    facing = "right" if rng.random() < 0.5 else "left"
    roll = float(rng.uniform(-1.0, 1.0) * config.max_roll_deg)
    pitch = float(rng.uniform(-1.0, 1.0) * config.max_pitch_deg)
    person = sample_person(rng, cva_deg, config)
    setup = sample_setup(rng, person, config)
    closeup = spec.framing == "closeup"
    fraction = float(rng.uniform(*(CLOSEUP_FRACTION if closeup else config.box_fraction)))
    unit_frame = Frame(1.0, 1 if facing == "right" else -1, roll, (0.0, 0.0), math.cos(math.radians(pitch)))
    head_pts = head_neck_points(person)
    frame = _place(rng, unit_frame, head_pts, (width * ss, height * ss), fraction, closeup)

    canvas = Image.new("RGB", (width * ss, height * ss))
    parts = Parts(canvas.size)
    box = frame.apply(head_pts)
    centre = (box.min(axis=0) + box.max(axis=0)) / 2.0
    keep_out = (float(centre[0]), float(centre[1]), fraction * min(canvas.size) * 0.75)  # label-blind size
    scene = paint_backdrop(canvas, rng, spec.backdrop, roll, config.nuisance, keep_out, person.look.skin, parts)
    painter = Painter(canvas, frame, parts)
    with painter.group(Group.PROPS):
        draw_behind(painter, setup, person)
    with painter.group(Group.PERSON):
        draw_person(painter, person, setup.hand)
    with painter.group(Group.PROPS):
        draw_in_front(painter, setup)
    image = apply_brush(canvas, parts.array(), spec, rng, ss * min(width, height) / 200.0, ss)
    image, quality_range = apply_style_camera(image, rng, spec.camera, config.nuisance)
    quality_range = quality_range or config.jpeg_quality
    quality = int(rng.integers(quality_range[0], quality_range[1] + 1))

    k = image.width / width  # the camera may have shrunk the picture
    c7, tragus = frame.apply(np.array([(0.0, 0.0), tragus_point(person)])) / ss * k
    # The reported box holds the whole neck band, down to where its front meets the chest. Framing
    # above uses head_neck_points (head and the neck's back edge) alone.
    box = pixel_box(frame.apply(np.concatenate([head_pts, neck_polygon(person)])) / ss * k, image.size)
    w, h = image.size
    info = SampleInfo(
        cva_deg=float(cva_deg),
        label=label_for_cva(cva_deg, config),
        facing=facing,
        c7=(float(c7[0]), float(c7[1])),
        tragus=(float(tragus[0]), float(tragus[1])),
        head_box=box,
        width=w,
        height=h,
        image_cva_deg=cva_from_points(tuple(c7), tuple(tragus), facing),
        roll_deg=roll,
        head_tilt_deg=person.tilt_deg,
        torso_lean_deg=person.lean_deg,
        neck_length_px=float(np.hypot(*(tragus - c7))),
        head_height_px=frame.scale / ss * k,
        pose=setup.pose,
        arms=setup.arms,
        scene=scene,
        props=setup.props(),
        jpeg_quality=quality,
        style=spec.name,
        pitch_deg=pitch,
    )
    return image, info
