"""Decoding uploads: modes, orientation, animations, reduced-scale JPEGs and refusals."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import person_like
from posture.errors import ImageError
from posture.images import MAX_PIXELS, load_image


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _modes() -> dict[str, Image.Image]:
    base = person_like(48, 32)
    palette_t = base.convert("P", palette=Image.Palette.ADAPTIVE)
    palette_t.info["transparency"] = 0
    i16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    assert i16.mode == "I;16"
    return {
        "L": base.convert("L"), "P": base.convert("P"), "P+transparency": palette_t,
        "RGBA": base.convert("RGBA"), "LA": base.convert("LA"), "CMYK": base.convert("CMYK"),
        "I;16": i16, "1": base.convert("1"), "I": base.convert("I"), "RGB": base,
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_mode_becomes_rgb_with_its_content(mode):
    src = _modes()[mode]
    out = load_image(src)
    assert out.mode == "RGB" and out.size == (48, 32)
    # Grey levels survive (16-bit is scaled down, not clipped to white).
    grey = np.asarray(out.convert("L"), dtype=float)
    assert 20 < grey.mean() < 235 and grey.std() > 5


def test_transparent_pixels_go_onto_white():
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(img).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP", "BMP"])
def test_round_trip_through_common_formats(fmt):
    img = load_image(_encode(person_like(40, 30).convert("RGB"), fmt))
    assert img.size == (40, 30)


def test_exif_orientation_is_applied():
    upright = person_like(60, 40)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(_encode(stored, "JPEG", exif=exif, quality=98))
    assert out.size == (60, 40)
    diff = np.abs(np.asarray(out, float) - np.asarray(upright, float)).mean()
    assert diff < 8, diff


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(250, 0, 0), (0, 0, 250), (0, 250, 0)]]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(data).getpixel((8, 8))
    assert r > 200 and b < 50


def test_large_jpeg_is_decoded_at_reduced_scale_keeping_aspect():
    data = _encode(person_like(3200, 2400), "JPEG", quality=85)
    out = load_image(data, max_side=800)
    assert 800 <= max(out.size) < 1600
    assert abs(out.width / out.height - 4 / 3) < 0.01
    assert load_image(data, max_side=None).size == (3200, 2400)


def test_large_png_is_reduced_too():
    out = load_image(_encode(person_like(2000, 500), "PNG"), max_side=400)
    assert out.size == (400, 100)


def _png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose header claims width x height (a decompression bomb)."""
    data = bytearray(_encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17]))
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("side", [13_000, 40_000])  # over our limit; over PIL's own bomb limit
def test_decompression_bomb_is_refused_before_decoding(side):
    assert side * side > MAX_PIXELS
    with pytest.raises(ImageError, match="(?i)too large|megapixels"):
        load_image(_png_with_size(side, side))


def test_text_renamed_jpg_is_refused(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


@pytest.mark.parametrize("data", [b"", _encode(person_like(), "JPEG")[:300], _encode(person_like(), "PNG")[:200]])
def test_empty_and_truncated_files_are_refused(data):
    with pytest.raises(ImageError):
        load_image(data)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "gone.jpg")


@pytest.mark.parametrize("size", [(1, 1), (10000, 10)])
def test_extreme_shapes_load(size):
    assert load_image(Image.new("RGB", size), max_side=None).size == size
