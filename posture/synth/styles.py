"""Rendering styles: the same scene drawn in visibly different ways.

A `Style` names a brush (how the drawn shapes are painted), a framing (how close the camera is),
a backdrop and a camera. The scene is always drawn the same way first: flat colours into the
picture and every shape's id into a part map (`posture.synth.canvas.Parts`). A brush then
repaints the picture from that map:

- `flat`: the flat drawing as it is;
- `lineart`: ink outlines where parts meet, on paper, sometimes lightly tinted;
- `shaded`: rounded parts (darker rims), a directional light and a soft drop shadow;
- `silhouette`: the person and props as one dark (or light) shape against a plain sky;
- `photo`: textured surfaces, soft shading and light, over a photographic-looking backdrop;
- `soft`: smooth light from one side with a cool screen glow (the webcam style).

Nothing here depends on the label: brushes see ids and colours, never the angle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from posture.synth.canvas import Group

__all__ = ["STYLE_SPECS", "Style", "apply_brush", "fractal_noise", "motion_blur"]


@dataclass(frozen=True)
class Style:
    """How one style draws: brush, framing ("scene" or "closeup"), backdrop and camera."""

    name: str
    brush: str
    framing: str
    backdrop: str  # "flat" (walls, rooms, clutter), "plain" (sky), "photo", "blurred" (a room out of focus)
    camera: str  # "mild", "scan", "photo", "webcam", "lowres"


STYLE_SPECS: dict[str, Style] = {
    "flat": Style("flat", "flat", "scene", "flat", "mild"),
    "lineart": Style("lineart", "lineart", "scene", "flat", "scan"),
    "shaded": Style("shaded", "shaded", "scene", "flat", "mild"),
    "silhouette": Style("silhouette", "silhouette", "scene", "plain", "mild"),
    "photo": Style("photo", "photo", "scene", "photo", "photo"),
    "webcam": Style("webcam", "soft", "closeup", "blurred", "webcam"),
    "lowres": Style("lowres", "flat", "scene", "flat", "lowres"),
}


def fractal_noise(rng: np.random.Generator, size: tuple[int, int], octaves: int = 4, base: int = 3) -> np.ndarray:
    """(H, W) float32 noise in about [-1, 1]: random grids of doubling resolution, summed coarse to
    fine (each octave at its own resolution), then brought to `size` in one bicubic resize."""
    w, h = size
    aspect = h / max(w, h), w / max(w, h)
    acc: Image.Image | None = None
    amp, total = 1.0, 0.0
    for k in range(octaves):
        cells = base * 2**k
        shape = (max(2, round(cells * aspect[0])), max(2, round(cells * aspect[1])))  # (rows, cols)
        grid = Image.fromarray(rng.uniform(-amp, amp, shape).astype(np.float32), "F")
        if acc is not None:
            grid = Image.fromarray(np.asarray(acc.resize(grid.size, Image.Resampling.BICUBIC)) + np.asarray(grid), "F")
        acc = grid
        total += amp
        amp *= 0.55
    assert acc is not None
    return np.asarray(acc.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) / total


def _edges(ids: np.ndarray) -> np.ndarray:
    """(H, W) bool: where a pixel's part differs from its right or lower neighbour's."""
    e = np.zeros(ids.shape, dtype=bool)
    e[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    e[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return e


def _blur(mask: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a [0, 1] float map, through an 8-bit image at half resolution (fast; a
    blurred map has no detail that half the pixels would lose)."""
    h, w = mask.shape
    img = Image.fromarray(np.clip(mask * 255.0, 0, 255).astype(np.uint8), "L")
    small = img.reduce(2).filter(ImageFilter.GaussianBlur(radius / 2.0))
    return np.asarray(small.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow a boolean mask by `px` pixels (a diamond; cheap boolean shifts)."""
    out = mask.copy()
    for _ in range(max(0, px)):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp in [-0.5, 0.5] across the picture, in a random direction: light from one side."""
    a = rng.uniform(0.0, 2.0 * np.pi)
    return (np.cos(a) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
            + np.sin(a) * np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None])  # fmt: skip


def _lineart(arr: np.ndarray, ids: np.ndarray, rng: np.random.Generator, unit: float) -> np.ndarray:
    paper = np.array([rng.uniform(225, 255), rng.uniform(220, 252), rng.uniform(205, 248)], dtype=np.float32)
    tint = rng.uniform(0.15, 0.45) if rng.random() < 0.5 else 0.0
    out = np.broadcast_to(paper, arr.shape) * (1.0 - tint) + arr * tint
    ink = np.array([(20, 20, 22), (30, 40, 90), (70, 45, 30), (60, 60, 60)][rng.integers(4)], dtype=np.float32)
    lines = _dilate(_edges(ids), int(round(rng.uniform(0.3, 1.2) * unit)))
    out[lines] = ink
    return out


def _silhouette(arr: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fg = ids >= Group.PROPS
    if rng.random() < 0.8:  # dark figure against the light
        color = np.array([rng.uniform(0, 60), rng.uniform(0, 55), rng.uniform(0, 70)], dtype=np.float32)
    else:  # a light figure against a dark backdrop
        color = np.array([rng.uniform(200, 255), rng.uniform(200, 255), rng.uniform(190, 255)], dtype=np.float32)
        arr = 255.0 - arr * rng.uniform(0.7, 0.9)
    out = arr.copy()
    out[fg] = color
    return out


def _shading(arr: np.ndarray, ids: np.ndarray, rng: np.random.Generator, unit: float, rim: float,
             light: float, shadow: float) -> np.ndarray:
    """Darker rims where parts meet, a directional light on what is drawn, a drop shadow behind it."""
    h, w = ids.shape
    drawn = ids > 0
    fg = (ids >= Group.PROPS).astype(np.float32)
    rims = _blur(_edges(ids).astype(np.float32), 1.5 * unit)
    rims /= max(float(rims.max()), 1e-6)
    factor = 1.0 - rim * rims * drawn
    factor *= 1.0 + light * _ramp(rng, h, w) * fg
    if shadow > 0.0:
        dx, dy = (int(round(v * 4.0 * unit)) for v in rng.uniform(-1.0, 1.0, 2))
        cast = np.roll(np.roll(fg, dy, axis=0), dx, axis=1)
        factor *= 1.0 - shadow * _blur(cast, 3.0 * unit) * (1.0 - fg)
    return arr * factor[:, :, None]


def _photo(arr: np.ndarray, ids: np.ndarray, rng: np.random.Generator, unit: float) -> np.ndarray:
    h, w = ids.shape
    fg = (ids >= Group.PROPS).astype(np.float32)[:, :, None]
    grain = fractal_noise(rng, (w, h), octaves=5, base=int(rng.integers(6, 24)))[:, :, None]
    arr = arr * (1.0 + rng.uniform(0.05, 0.16) * grain * fg)
    return _shading(arr, ids, rng, unit, rim=rng.uniform(0.1, 0.25), light=rng.uniform(0.2, 0.5),
                    shadow=rng.uniform(0.1, 0.35))


def _soft(arr: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = ids.shape
    fg = (ids >= Group.PROPS).astype(np.float32)[:, :, None]
    ramp = _ramp(rng, h, w)[:, :, None]
    glow = np.array([rng.uniform(0.8, 0.95), rng.uniform(0.9, 1.0), 1.0], dtype=np.float32)  # screen light
    lit = arr * (1.0 + rng.uniform(0.25, 0.5) * ramp) * (1.0 + (glow - 1.0) * (ramp + 0.5))
    return arr * (1.0 - fg) + lit * fg


def apply_brush(
    image: Image.Image, ids: np.ndarray, style: Style, rng: np.random.Generator, unit: float, supersample: int
) -> Image.Image:
    """Repaint a supersampled flat drawing in `style`'s brush and bring it to the output size.

    `ids` is the drawing's part map, `unit` a line width in the drawing's pixels. Outlines and
    silhouettes are drawn at the supersampled size (crisp, anti-aliased edges); shading, light and
    texture vary slowly, so they are painted after the reduction, on a quarter of the pixels.
    """
    if style.brush in ("flat", "shaded", "photo", "soft") and supersample > 1:
        image = image.reduce(supersample)
        ids = ids[supersample // 2 :: supersample, supersample // 2 :: supersample][: image.height, : image.width]
        unit, supersample = unit / supersample, 1
    if style.brush == "flat":
        return image
    arr = np.asarray(image, dtype=np.float32)
    if style.brush == "lineart":
        out = _lineart(arr, ids, rng, unit)
    elif style.brush == "silhouette":
        out = _silhouette(arr, ids, rng)
    elif style.brush == "shaded":
        out = _shading(arr, ids, rng, unit, rim=rng.uniform(0.2, 0.4), light=rng.uniform(0.15, 0.4),
                       shadow=rng.uniform(0.25, 0.5))
    elif style.brush == "photo":
        out = _photo(arr, ids, rng, unit)
    elif style.brush == "soft":
        out = _soft(arr, ids, rng)
    else:
        raise ValueError(f"unknown brush {style.brush!r}")
    out = Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
    return out.reduce(supersample) if supersample > 1 else out


def motion_blur(image: Image.Image, rng: np.random.Generator, length: float) -> Image.Image:
    """Smear the picture along a random direction over about `length` pixels (camera shake)."""
    steps = max(2, int(round(length)) + 1)
    a = rng.uniform(0.0, np.pi)
    arr = np.asarray(image, dtype=np.float32)
    pad = steps
    padded = np.pad(arr, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    h, w = arr.shape[:2]
    acc = np.zeros_like(arr)
    for t in np.linspace(-0.5, 0.5, steps):
        dx, dy = int(round(t * length * np.cos(a))), int(round(t * length * np.sin(a)))
        acc += padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return Image.fromarray(np.clip(acc / steps + 0.5, 0, 255).astype(np.uint8), "RGB")
