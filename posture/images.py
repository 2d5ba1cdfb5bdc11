"""Turning whatever a user hands us into an upright RGB image, or a clear error.

Accepts a path, raw bytes, a file object, a PIL image or a uint8 array. Applies
the EXIF orientation, converts every mode (L, P, RGBA, CMYK, I;16, ...) to RGB,
keeps only the first frame of animations, refuses decompression bombs before
decoding them, and decodes large JPEGs at reduced scale: the model sees a few
hundred pixels and the overlay is shown at screen size, so a 12 MP decode is waste.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from posture.errors import ImageError

__all__ = ["DEFAULT_MAX_SIDE", "MAX_PIXELS", "ImageSource", "load_image", "to_rgb"]

ImageSource = Union[str, Path, bytes, BinaryIO, Image.Image, np.ndarray]

# Working images are at least this long on their longer side where the source allows,
# and less than twice it (JPEG draft scales and Image.reduce step by powers of two).
DEFAULT_MAX_SIDE = 800
# Larger than any camera (a 12000x9000 panorama passes); a PNG claiming more is a bomb.
MAX_PIXELS = 150_000_000


def _open(source: ImageSource) -> Image.Image:
    """Open lazily (header only), turning every way of failing into ImageError."""
    name = _name(source)
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise ImageError(f"{source}: no such file")
    if isinstance(source, (str, Path)) and Path(source).stat().st_size == 0:
        raise ImageError(f"{source}: the file is empty (0 bytes)")
    if isinstance(source, bytes):
        if not source:
            raise ImageError("the upload is empty (0 bytes)")
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below, so PIL's global one is only a backstop.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: refused: {_TOO_MANY_PIXELS}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name}: not an image this app can read (JPEG, PNG, WebP, BMP, GIF, TIFF are supported)"
        ) from exc
    except OSError as exc:
        raise ImageError(f"{name}: the image is damaged or truncated and cannot be read") from exc


def _name(source: ImageSource) -> str:
    """How messages name the source: its path, else "upload"."""
    return str(source) if isinstance(source, (str, Path)) else "upload"


_TOO_MANY_PIXELS = f"more than {MAX_PIXELS / 1e6:.0f} megapixels, too large to decode safely (a decompression bomb?)"


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB: transparency onto white, 16-bit scaled, CMYK converted."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def load_image(source: ImageSource, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Decode `source` to an upright RGB image, reduced by powers of two towards `max_side`.

    `max_side=None` keeps full resolution. Raises ImageError with a readable
    message for anything that is not a usable image.
    """
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise ImageError(f"arrays must be uint8 HxW or HxWxC, got {source.dtype} {source.shape}")
        source = Image.fromarray(source)
    img = source if isinstance(source, Image.Image) else _open(source)
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError("the image has no pixels")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{_name(source)}: refused: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than the "
            f"{MAX_PIXELS / 1e6:.0f} MP limit (a decompression bomb or a scan); resize it first"
        )
    try:
        if max_side and img.format == "JPEG" and max(width, height) > max_side:
            scale = max_side / max(width, height)
            img.draft("RGB", (int(width * scale + 1), int(height * scale + 1)))
        img.seek(0) if getattr(img, "is_animated", False) else None
        img.load()
        img = ImageOps.exif_transpose(img)
        img = to_rgb(img)
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow's own words ("8 bytes not processed") help nobody; say what it means, and which file.
        raise ImageError(f"{_name(source)}: the image is damaged or truncated and cannot be decoded") from exc
    if max_side:
        factor = max(img.size) // max_side
        if factor >= 2:
            img = img.reduce(factor)
    return img
