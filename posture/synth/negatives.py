"""Pictures without a side view of a person, for the side-view flag: people seen from the front or
from behind, rooms without anybody, blank, noisy and textured frames, landscapes, still lifes,
extreme strips and tiny images. They are drawn in the same styles as the side views.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image

from posture.synth.camera import apply_camera, apply_style_camera
from posture.synth.canvas import Frame, Group, Painter, Parts, ellipse_points
from posture.synth.config import NEGATIVE_KINDS, SampleInfo, SynthConfig
from posture.synth.person import sample_person
from posture.synth.props import draw_behind, draw_in_front, sample_setup
from posture.synth.render import CLOSEUP_FRACTION, _place, pick_style, pixel_box, sample_image_size
from posture.synth.scene import paint_backdrop, random_wall_color
from posture.synth.styles import STYLE_SPECS, Style, apply_brush, fractal_noise
from posture.synth.views import draw_front_or_back, outline_points

# frontal and back views and empty rooms look most like what the product sees; the rest keep
# the flag honest on anything else a visitor may upload
KIND_WEIGHTS = np.array([0.2, 0.12, 0.2, 0.05, 0.06, 0.08, 0.11, 0.1, 0.05, 0.03])
KINDS = NEGATIVE_KINDS


def _vivid(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.1, 1.0), rng.uniform(0.1, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _scene(rng: np.random.Generator, kind: str, config: SynthConfig, spec: Style,
           size: tuple[int, int]) -> tuple[Image.Image, str, np.ndarray]:
    """A person from the front or back, or a room without anybody, drawn in `spec`'s style; also
    the outline of the head and neck in the picture's pixels (for an empty room: where a head would
    be), around which a training close-up of the picture is cut."""
    width, height = size
    ss = config.supersample
    person = sample_person(rng, 45.0, config)  # the angle is never drawn in these views
    setup = sample_setup(rng, person, config)
    closeup = spec.framing == "closeup"
    fraction = float(rng.uniform(*(CLOSEUP_FRACTION if closeup else config.box_fraction)))
    roll = float(rng.uniform(-1.0, 1.0) * config.max_roll_deg)
    canvas = Image.new("RGB", (width * ss, height * ss))
    parts = Parts(canvas.size)
    scene = paint_backdrop(canvas, rng, spec.backdrop, roll, config.nuisance, None, person.look.skin, parts)
    unit = Frame(1.0, 1 if rng.random() < 0.5 else -1, roll, (0.0, 0.0))
    if kind == "empty":  # the furniture and devices of a side view, nobody in them
        framed = np.array([(-0.6, -1.6), (0.8, 0.4)])
        frame = _place(rng, unit, framed, canvas.size, fraction, closeup)
        painter = Painter(canvas, frame, parts)
        with painter.group(Group.PROPS):
            draw_behind(painter, setup, person)
            draw_in_front(painter, setup)
    else:
        framed = outline_points(person)
        frame = _place(rng, unit, framed, canvas.size, fraction, closeup)
        painter = Painter(canvas, frame, parts)
        with painter.group(Group.PERSON):
            draw_front_or_back(painter, person, kind, arms_up=bool(rng.random() < 0.2))
    image = apply_brush(canvas, parts.array(), spec, rng, ss * min(width, height) / 200.0, ss)
    return image, scene, frame.apply(framed) / ss


def _landscape(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """Sky, two or three ridges of hills and a foreground, with photographic texture."""
    w, h = size
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    sky = np.asarray(_vivid(rng), np.float32) * (1 - yy) + np.asarray(random_wall_color(rng), np.float32) * yy
    arr = np.broadcast_to(sky, (h, w, 3)).copy()
    xs = np.arange(w)
    for layer in range(int(rng.integers(2, 4))):
        ridge = fractal_noise(rng, (w, 8), octaves=4, base=3)[4] * rng.uniform(0.05, 0.2) * h
        top = (rng.uniform(0.35, 0.8) + 0.08 * layer) * h + ridge
        below = np.arange(h)[:, None] >= top[None, xs]
        green = np.asarray((int(rng.uniform(20, 120)), int(rng.uniform(60, 160)), int(rng.uniform(20, 110))), np.float32)
        arr[below] = green * rng.uniform(0.6, 1.2)
    arr *= 1.0 + 0.12 * fractal_noise(rng, (w, h), octaves=5, base=8)[:, :, None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _objects(rng: np.random.Generator, size: tuple[int, int], config: SynthConfig) -> Image.Image:
    """Flowers, fruit and boxes on a table or a wall: round and angular things, no person."""
    w, h = size
    image = Image.new("RGB", size)
    paint_backdrop(image, rng, "photo" if rng.random() < 0.5 else "flat", 0.0, config.nuisance)
    painter = Painter(image, Frame(1.0, 1, float(rng.uniform(-10, 10)), (0.0, 0.0)))
    for _ in range(int(rng.integers(1, 6))):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        kind = rng.integers(3)
        if kind == 0:  # a flower: petals around a heart
            petals, color = int(rng.integers(5, 13)), _vivid(rng)
            for k in range(petals):
                a = 2 * math.pi * k / petals
                painter.ellipse((cx + 0.55 * r * math.cos(a), cy + 0.55 * r * math.sin(a)), 0.45 * r, 0.45 * r, color)
            painter.circle((cx, cy), 0.35 * r, _vivid(rng))
        elif kind == 1:  # fruit or a ball
            painter.polygon(ellipse_points((cx, cy), r, r * rng.uniform(0.7, 1.1), n=32), _vivid(rng))
        else:  # a box or a book
            painter.polygon(np.array([(cx - r, cy - r * 0.6), (cx + r, cy - r * 0.6), (cx + r, cy + r * 0.6),
                                      (cx - r, cy + r * 0.6)]), _vivid(rng))
    return image


def _plain(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> Image.Image:
    """Blank, noisy or textured frames."""
    w, h = size
    if kind == "blank":
        return Image.new("RGB", size, _vivid(rng) if rng.random() < 0.7 else tuple([int(rng.integers(256))] * 3))
    if kind == "noise":
        if rng.random() < 0.5:
            arr = rng.normal(rng.uniform(60, 200), rng.uniform(10, 80), (h, w, 3))
        else:  # blocky noise
            cells = rng.uniform(0, 255, (max(1, h // 8), max(1, w // 8), 3)).astype(np.uint8)
            return Image.fromarray(cells, "RGB").resize(size, Image.Resampling.NEAREST)
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    base = np.asarray(_vivid(rng), np.float32)
    field = fractal_noise(rng, (w, h), octaves=int(rng.integers(2, 6)), base=int(rng.integers(2, 10)))
    tint = np.asarray(_vivid(rng), np.float32) - base
    return Image.fromarray(np.clip(base + field[:, :, None] * tint, 0, 255).astype(np.uint8), "RGB")


def render_negative(
    rng: np.random.Generator, kind: str | None = None, config: SynthConfig = SynthConfig(), style: str | None = None
) -> tuple[Image.Image, SampleInfo]:
    """Render one picture without a side view of a person; `kind` from `KINDS` (default: drawn)."""
    kind = kind or KINDS[int(rng.choice(len(KINDS), p=KIND_WEIGHTS / KIND_WEIGHTS.sum()))]
    if kind not in KINDS:
        raise ValueError(f"unknown negative kind {kind!r}; choose one of {', '.join(KINDS)}")
    spec = STYLE_SPECS[style] if style is not None else pick_style(rng, config)
    size = sample_image_size(rng, config)
    scene, box = kind, (0, 0, 0, 0)
    if kind in ("frontal", "back", "empty"):
        image, scene, outline = _scene(rng, kind, config, spec, size)
    elif kind == "landscape":
        image = _landscape(rng, size)
    elif kind == "objects":
        image = _objects(rng, size, config)
    elif kind in ("blank", "noise", "texture"):
        image = _plain(rng, kind, size)
    else:  # strip or tiny: an extreme shape of any plain content
        longer = int(rng.integers(*config.size_range)) if kind == "strip" else int(rng.integers(1, 17))
        shorter = max(1, int(round(longer / rng.uniform(6.0, 40.0)))) if kind == "strip" else int(rng.integers(1, 17))
        size = (longer, shorter) if rng.random() < 0.5 else (shorter, longer)
        image = _plain(rng, ("blank", "noise", "texture")[int(rng.integers(3))], size)
    quality_range = None
    if kind in ("frontal", "back", "empty"):
        image, quality_range = apply_style_camera(image, rng, spec.camera, config.nuisance)
        box = pixel_box(outline * (image.width / size[0]), image.size)  # the camera may have shrunk the picture
    elif min(image.size) >= 8:
        image = apply_camera(image, rng, config.nuisance * float(rng.uniform(0.0, 1.0)))
    lo, hi = quality_range or config.jpeg_quality
    info = SampleInfo(
        cva_deg=math.nan, label="", facing="", c7=(math.nan, math.nan), tragus=(math.nan, math.nan),
        head_box=box, width=image.width, height=image.height, image_cva_deg=math.nan,
        scene=scene, jpeg_quality=int(rng.integers(lo, hi + 1)), view=kind,
        style=spec.name if kind in ("frontal", "back", "empty") else "",
    )  # fmt: skip
    return image, info
