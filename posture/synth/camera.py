"""What the camera adds after the scene: lighting (exposure, contrast, colour cast, side light), blur,
sensor noise and JPEG compression, and what a style's camera adds on top (a scanner's mildness,
a photo's vignette, a webcam's flat colours, a small sensor's low resolution and shake).
All strengths scale with `nuisance` in [0, 1]."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from posture.errors import UsageError


def apply_camera(image: Image.Image, rng: np.random.Generator, nuisance: float) -> Image.Image:
    """Return the picture as a camera would deliver it: lit, slightly blurred and noisy."""
    if not 0.0 <= nuisance <= 1.0:
        raise UsageError(f"nuisance must lie in [0, 1], got {nuisance}")
    blur = rng.uniform(0.3, 1.1) * nuisance if rng.random() < 0.35 else 0.0
    if blur > 0.05:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    gain = float(np.exp(rng.normal(0.0, 0.18 * nuisance)))
    contrast = float(np.exp(rng.normal(0.0, 0.15 * nuisance)))
    cast = np.exp(rng.normal(0.0, 0.06 * nuisance, 3)).astype(np.float32)  # (3,)
    side = rng.uniform(0.0, 0.3 * nuisance)  # light falling off across the picture
    angle = rng.uniform(0.0, 2.0 * np.pi)
    sigma = rng.uniform(0.0, 7.0 * nuisance)
    w, h = image.size
    arr = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    ramp = (np.cos(angle) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
            + np.sin(angle) * np.linspace(-0.5, 0.5, h, dtype=np.float32)[:, None])  # fmt: skip
    scale = (contrast * gain) * cast  # (3,): contrast about mid-grey, then exposure and colour cast
    offset = (128.0 * (1.0 - contrast) * gain) * cast
    arr *= scale
    arr += offset
    arr *= (1.0 + side * ramp)[:, :, None]
    if sigma > 0.2:
        arr += rng.standard_normal(arr.shape, dtype=np.float32) * np.float32(sigma)
    arr += 0.5
    return Image.fromarray(np.clip(arr, 0, 255, out=arr).astype(np.uint8), "RGB")


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    """Return the JPEG bytes of an RGB picture (deterministic for the same pixels and quality)."""
    if not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be within 1..100, got {quality}")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def decode_jpeg(data: bytes) -> Image.Image:
    """Return the RGB picture stored in JPEG bytes."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _vignette(image: Image.Image, strength: float) -> Image.Image:
    w, h = image.size
    yy, xx = np.ogrid[:h, :w]
    r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
    arr = np.asarray(image, dtype=np.float32) * (1.0 - strength * np.clip(r2 / 2.0, 0, 1))[:, :, None]
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def apply_style_camera(
    image: Image.Image, rng: np.random.Generator, camera: str, nuisance: float
) -> tuple[Image.Image, tuple[int, int] | None]:
    """Apply a style's camera (`Style.camera`); return the picture and its JPEG quality range (None: default)."""
    from posture.synth.styles import motion_blur  # styles -> canvas only; kept local to keep this module light

    if camera == "mild":
        return apply_camera(image, rng, nuisance), None
    if camera == "scan":
        return apply_camera(image, rng, 0.3 * nuisance), None
    if camera == "photo":
        image = apply_camera(image, rng, nuisance)
        return _vignette(image, rng.uniform(0.1, 0.45) * nuisance), None
    if camera == "webcam":  # flat contrast, washed colours, visible sensor noise
        arr = np.asarray(image, dtype=np.float32)
        grey = arr.mean(axis=2, keepdims=True)
        arr = grey + (arr - grey) * rng.uniform(0.6, 0.95)
        arr = 128.0 + (arr - 128.0) * rng.uniform(0.7, 0.95) + rng.uniform(-10, 25)
        image = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
        return apply_camera(image, rng, nuisance), (45, 85)
    if camera == "lowres":  # a small, shaky sensor: few pixels, motion blur
        image = apply_camera(image, rng, nuisance)
        longer = int(rng.integers(64, 129))
        w, h = image.size
        scale = longer / max(w, h)
        image = image.resize((max(8, round(w * scale)), max(8, round(h * scale))), Image.Resampling.BOX)
        return motion_blur(image, rng, rng.uniform(0.5, 2.5)), (35, 75)
    raise UsageError(f"unknown camera {camera!r}")
