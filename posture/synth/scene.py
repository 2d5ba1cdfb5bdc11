"""Backdrops behind the person: solid walls, gradients, blotchy textures, simple rooms with clutter,
plain skies (for silhouettes), photographic-looking surfaces with out-of-focus lights, and rooms
out of focus (webcam distance).

Everything here is placed relative to the picture frame (never to the person), drawn before the
person (so it cannot hide the neck or ear) and turned by the camera roll like the rest of the scene.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from PIL import ImageFilter

from posture.synth.canvas import Color, Frame, Painter, Parts, mix, shade
from posture.synth.styles import fractal_noise

BACKDROPS = ("solid", "gradient", "texture", "room")


def random_wall_color(rng: np.random.Generator) -> Color:
    """Return a muted colour typical of walls and backdrops."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.25, 0.97))
    return int(r * 255), int(g * 255), int(b * 255)


def _luma(color: Color) -> float:
    return 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]


def _random_vivid(rng: np.random.Generator) -> Color:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.9), rng.uniform(0.2, 0.95))
    return int(r * 255), int(g * 255), int(b * 255)


def _resized_grid(rng: np.random.Generator, size: tuple[int, int], cells: int, base: Color, spread: float) -> Image.Image:
    """Upsample a tiny random colour grid: gradients for 2 cells, soft blotches for more."""
    # mostly light/dark variation with a little hue drift: real walls and fabrics are not rainbows
    shade_noise = rng.normal(0.0, spread, (cells, cells, 1)) + rng.normal(0.0, spread * 0.35, (cells, cells, 3))
    grid = np.asarray(base, dtype=np.float32) + shade_noise.astype(np.float32)
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BILINEAR if cells <= 2 else Image.Resampling.BICUBIC)


def _rect(cx: float, cy: float, w: float, h: float) -> np.ndarray:
    return np.array([(cx - w / 2, cy - h / 2), (cx + w / 2, cy - h / 2), (cx + w / 2, cy + h / 2), (cx - w / 2, cy + h / 2)])


def _draw_clutter_item(p: Painter, rng: np.random.Generator, cx: float, cy: float, unit: float, wall: Color) -> None:
    """Draw one background object centred near (cx, cy), sized by `unit` pixels."""
    kind = rng.integers(6)
    if kind == 0:  # picture frame
        w, h = unit * rng.uniform(0.3, 0.8), unit * rng.uniform(0.3, 0.8)
        p.polygon(_rect(cx, cy, w, h), _random_vivid(rng) if rng.random() < 0.5 else (40, 35, 30))
        p.polygon(_rect(cx, cy, w * 0.8, h * 0.8), _random_vivid(rng))
    elif kind == 1:  # window
        w, h = unit * rng.uniform(0.5, 1.0), unit * rng.uniform(0.6, 1.2)
        p.polygon(_rect(cx, cy, w, h), (235, 235, 230))
        p.polygon(_rect(cx, cy, w * 0.88, h * 0.9), mix((185, 215, 240), (250, 250, 250), rng.random()))
        p.line(np.array([(cx, cy - h / 2), (cx, cy + h / 2)]), unit * 0.03, (235, 235, 230), round_ends=False)
    elif kind == 2:  # shelf with books
        w = unit * rng.uniform(0.6, 1.4)
        p.polygon(_rect(cx, cy, w, unit * 0.05), shade(wall, 0.6))
        x = cx - w / 2 + unit * 0.03
        while x < cx + w / 2 - unit * 0.1:
            bw, bh = unit * rng.uniform(0.04, 0.1), unit * rng.uniform(0.15, 0.3)
            p.polygon(_rect(x + bw / 2, cy - unit * 0.025 - bh / 2, bw, bh), _random_vivid(rng))
            x += bw + unit * 0.01
    elif kind == 3:  # potted plant
        p.polygon(_rect(cx, cy + unit * 0.25, unit * 0.22, unit * 0.25), _random_vivid(rng))
        green = (int(rng.uniform(30, 90)), int(rng.uniform(90, 160)), int(rng.uniform(30, 80)))
        for _ in range(5):
            p.ellipse((cx + rng.normal(0, unit * 0.1), cy + rng.normal(-unit * 0.05, unit * 0.1)),
                      unit * 0.12, unit * 0.08, shade(green, rng.uniform(0.7, 1.2)))  # fmt: skip
    elif kind == 4:  # floor lamp
        p.line(np.array([(cx, cy - unit * 0.4), (cx, cy + unit * 2)]), unit * 0.025, (60, 60, 60), round_ends=False)
        p.polygon(np.array([(cx - unit * 0.12, cy - unit * 0.6), (cx + unit * 0.12, cy - unit * 0.6),
                            (cx + unit * 0.2, cy - unit * 0.35), (cx - unit * 0.2, cy - unit * 0.35)]),
                  mix((250, 240, 210), _random_vivid(rng), 0.3))  # fmt: skip
    else:  # door
        w = unit * rng.uniform(0.6, 0.9)
        p.polygon(_rect(cx, cy + unit, w, unit * 3.0), shade(wall, rng.uniform(0.6, 1.2)))
        p.circle((cx + w * 0.38, cy + unit * 0.9), unit * 0.03, (180, 170, 120))


def draw_backdrop(
    image: Image.Image,
    rng: np.random.Generator,
    roll_deg: float,
    nuisance: float,
    keep_out: tuple[float, float, float] | None = None,
    avoid: Color | None = None,
    parts: Parts | None = None,
) -> str:
    """Paint the whole canvas with a backdrop (plus clutter, scaled by `nuisance`); return its kind.

    `keep_out` = (x, y, radius) in canvas pixels: a disc (around the head) that clutter stays out of.
    `avoid`: a colour (the skin) whose brightness the wall should not match, so the profile stands out.
    """
    w, h = image.size
    kinds = BACKDROPS if nuisance > 0 else BACKDROPS[:2]
    weights = np.array([1.0, 1.0, 1.5 * nuisance, 2.5 * nuisance])[: len(kinds)]
    kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
    wall = random_wall_color(rng)
    for _ in range(4):
        if avoid is None or abs(_luma(wall) - _luma(avoid)) >= 30.0:
            break
        wall = random_wall_color(rng)
    if kind == "solid":
        image.paste(wall, (0, 0, w, h))
    elif kind == "gradient":
        image.paste(_resized_grid(rng, (w, h), 2, wall, 40.0), (0, 0))
    elif kind == "texture":
        image.paste(_resized_grid(rng, (w, h), int(rng.integers(4, 20)), wall, 30.0), (0, 0))
    else:
        image.paste(_resized_grid(rng, (w, h), 2, wall, 15.0), (0, 0))
    # room clutter lives in a frame centred on the canvas and turned by the camera roll
    painter = Painter(image, Frame(1.0, 1, roll_deg, (w / 2.0, h / 2.0)), parts)
    unit = min(w, h) * 0.35
    if kind == "room":
        if rng.random() < 0.5:  # corner where two walls meet
            x = rng.uniform(-0.5, 0.5) * w
            side = 1.0 if rng.random() < 0.5 else -1.0
            far = side * 2.0 * max(w, h)
            p = np.array([(x, -2 * h), (far, -2 * h), (far, 2 * h), (x, 2 * h)])
            painter.polygon(p, shade(wall, rng.uniform(0.75, 0.92)))
        if rng.random() < 0.4:  # floor at the bottom of the picture
            y = rng.uniform(0.3, 0.5) * h
            painter.polygon(np.array([(-2 * w, y), (2 * w, y), (2 * w, 2 * h), (-2 * w, 2 * h)]), random_wall_color(rng))
    n_items = int(rng.poisson(2.5 * nuisance)) if kind in ("room", "texture") else int(rng.poisson(0.7 * nuisance))
    for _ in range(n_items):
        cx, cy = rng.uniform(-0.55, 0.55) * w, rng.uniform(-0.55, 0.55) * h
        size = unit * rng.uniform(0.6, 1.3)
        if keep_out is not None:
            at = painter.frame.apply(np.array([(cx, cy)]))[0]
            if np.hypot(at[0] - keep_out[0], at[1] - keep_out[1]) < keep_out[2] + 0.6 * size:
                continue  # clutter right behind the face would blur the profile
        _draw_clutter_item(painter, rng, cx, cy, size, wall)
    return kind


def _sky(image: Image.Image, rng: np.random.Generator) -> str:
    """A light plain or graded sky, sometimes over a darker ground: what silhouettes stand against."""
    w, h = image.size
    top = tuple(int(v) for v in rng.uniform(150, 255, 3))
    bottom = tuple(int(v) for v in rng.uniform(170, 255, 3))
    grid = np.array([[top, top], [bottom, bottom]], dtype=np.uint8)
    image.paste(Image.fromarray(grid, "RGB").resize((w, h), Image.Resampling.BILINEAR), (0, 0))
    return "sky"


def _photographic(image: Image.Image, rng: np.random.Generator, roll_deg: float, nuisance: float,
                  keep_out: tuple[float, float, float] | None, avoid: Color | None, parts: Parts | None) -> str:
    """A room or wall with surface texture and out-of-focus lights (bokeh), then a defocus blur."""
    kind = draw_backdrop(image, rng, roll_deg, nuisance, keep_out, avoid, parts)
    w, h = image.size
    arr = np.asarray(image, dtype=np.float32)
    grain = fractal_noise(rng, (w, h), octaves=5, base=int(rng.integers(3, 12)))
    arr *= (1.0 + rng.uniform(0.08, 0.22) * grain)[:, :, None]
    for _ in range(int(rng.poisson(6 * nuisance))):  # bokeh: soft discs of light
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.02, 0.08) * min(w, h)
        x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
        y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        disc = np.clip(1.0 - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r, 0.0, 1.0) ** 0.5
        light = rng.uniform(30, 90) * np.asarray(_random_vivid(rng), dtype=np.float32) / 255.0
        arr[y0:y1, x0:x1] += disc[:, :, None] * light
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    image.paste(out.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 3.0) * min(w, h) / 300.0)), (0, 0))
    return f"photo-{kind}"


def paint_backdrop(
    image: Image.Image,
    rng: np.random.Generator,
    kind: str,
    roll_deg: float,
    nuisance: float,
    keep_out: tuple[float, float, float] | None = None,
    avoid: Color | None = None,
    parts: Parts | None = None,
) -> str:
    """Paint a style's backdrop (`Style.backdrop`) over the whole canvas; return what was drawn."""
    if kind == "flat":
        return draw_backdrop(image, rng, roll_deg, nuisance, keep_out, avoid, parts)
    if kind == "plain":
        return _sky(image, rng)
    if kind == "photo":
        return _photographic(image, rng, roll_deg, nuisance, keep_out, avoid, parts)
    if kind == "blurred":  # a room at the far side of a desk, out of focus at webcam distance
        drawn = draw_backdrop(image, rng, roll_deg, nuisance, None, avoid, parts)
        radius = rng.uniform(2.0, 6.0) * min(image.size) / 300.0
        image.paste(image.filter(ImageFilter.GaussianBlur(radius)), (0, 0))
        return f"blurred-{drawn}"
    raise ValueError(f"unknown backdrop {kind!r}")
