"""Hostile and odd inputs through `Predictor.predict`: a clear ImageError or a valid prediction, never a crash.

After every case the same Predictor must still answer. Checkpoint cases cover only what
tests/test_checkpoints.py does not (truncated tensor data, a non-JSON header, missing or
extra tensors, duplicate class names).
"""

from __future__ import annotations

import io
import json
import resource
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from conftest import CLASSES, make_checkpoint, person_like
from posture.checkpoints import ModelInfo, load_checkpoint
from posture.errors import CheckpointError, ImageError
from posture.images import MAX_PIXELS
from posture.models import build_model
from posture.predict import Predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = make_checkpoint(tmp_path_factory.mktemp("hardening") / "resnet14.safetensors", "resnet14", 64)
    return Predictor.from_checkpoint(path)


@pytest.fixture(autouse=True)
def still_answers(request):
    """After each test, the shared Predictor still gives the same answer for a normal photo."""
    yield
    if "predictor" in request.fixturenames:
        p: Predictor = request.getfixturevalue("predictor")
        img = person_like(seed=9)
        assert p.predict(img).probabilities == pytest.approx(p.predict(img, explain=False).probabilities, abs=1e-6)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _check_valid(pred, size: tuple[int, int] | None = None) -> None:
    assert set(pred.probabilities) == set(CLASSES)
    assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert pred.heatmap.shape == (pred.image.height, pred.image.width)
    assert np.isfinite(pred.heatmap).all() and pred.image.mode == "RGB"
    if size is not None:
        assert pred.image.size == size


MINIMAL_PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]/Count 0>>"
               b"endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
HEIC_LIKE = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00mif1heic" + b"\x00" * 200


@pytest.mark.parametrize("name,data", [
    ("text", b"hello, this is a note, not a photo\n" * 10),
    ("pdf", MINIMAL_PDF),
    ("heic", HEIC_LIKE),
    ("zero-bytes", b""),
    ("truncated-jpeg", _encode(person_like(), "JPEG")[:400]),
    ("truncated-png", _encode(person_like(), "PNG")[:300]),
    ("jpeg-header-only", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
])
def test_unusable_files_renamed_jpg_get_a_clear_error(predictor, tmp_path, name, data):
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as err:
        predictor.predict(path)
    assert str(path) in str(err.value) or "upload" in str(err.value) or "empty" in str(err.value) \
        or "damaged" in str(err.value)
    with pytest.raises(ImageError):
        predictor.predict(data)  # the same bytes as an upload


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming width x height, then one empty IDAT and IEND."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_png_is_refused(predictor):
    with pytest.raises(ImageError, match="(?i)too large|megapixels"):
        predictor.predict(_png_header(50_000, 50_000))


def test_legal_huge_png_is_accepted_and_reduced_with_sane_memory(predictor, tmp_path):
    width, height = 12_000, 9_000
    assert width * height <= MAX_PIXELS
    path = tmp_path / "panorama.png"
    Image.new("L", (width, height), 128).save(path, compress_level=1)  # small on disk
    assert path.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    pred = predictor.predict(path)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    _check_valid(pred)
    assert max(pred.image.size) < 1600 and pred.image.width / pred.image.height == pytest.approx(4 / 3, rel=0.01)
    assert grown_mib < 1024, f"peak memory grew {grown_mib:.0f} MiB for a 108 MP image"


@pytest.mark.parametrize("fmt,kw", [("PNG", {}), ("JPEG", {"quality": 100, "subsampling": 0})])
def test_exif_orientation_6_gives_the_upright_verdict(predictor, fmt, kw):
    upright = person_like(200, 120, seed=5)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6: rotate 90° clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = predictor.predict(_encode(stored, fmt, exif=exif.tobytes(), **kw))
    plain = predictor.predict(_encode(upright, fmt, **kw))
    assert rotated.image.size == (200, 120)
    assert rotated.label == plain.label
    assert list(rotated.probabilities.values()) == pytest.approx(list(plain.probabilities.values()), abs=1e-3)
    assert np.corrcoef(rotated.heatmap.ravel(), plain.heatmap.ravel())[0, 1] > 0.99


def _modes() -> dict[str, bytes]:
    rgb = person_like(96, 72, seed=2)
    arr16 = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (72, 1))))
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "cmyk-jpeg": _encode(rgb.convert("CMYK"), "JPEG"),
        "16bit-png": _encode(Image.fromarray(arr16), "PNG"),
        "palette-transparent-png": _encode(palette, "PNG", transparency=0),
        "palette-transparent-gif": _encode(palette, "GIF", transparency=0),
        "rgba-png": _encode(rgba, "PNG"),
        "grayscale-jpeg": _encode(rgb.convert("L"), "JPEG"),
        "la-png": _encode(rgb.convert("LA"), "PNG"),
    }


@pytest.mark.parametrize("name", list(_modes()))
def test_every_mode_gives_a_valid_prediction(predictor, name):
    _check_valid(predictor.predict(_modes()[name]), size=(96, 72))


def test_500_frame_gif_uses_its_first_frame(predictor):
    frames = [Image.new("RGB", (64, 48), (i % 256, (i * 7) % 256, i // 256 * 99)) for i in range(500)]
    frames[0] = person_like(64, 48, seed=1).convert("P", palette=Image.Palette.ADAPTIVE)  # distinct frames: none merged
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=20)
    assert Image.open(io.BytesIO(data)).n_frames == 500
    pred = predictor.predict(data)
    _check_valid(pred, size=(64, 48))
    assert np.array_equal(np.asarray(pred.image), np.asarray(frames[0].convert("RGB")))


@pytest.mark.parametrize("size", [(1, 1), (10_000, 10), (10, 10_000)])
def test_degenerate_shapes_give_a_prediction(predictor, size):
    pred = predictor.predict(_encode(person_like(*size, seed=3) if min(size) > 1 else Image.new("RGB", size), "PNG"))
    _check_valid(pred)
    assert pred.image.width / pred.image.height == pytest.approx(size[0] / size[1], rel=0.2)


def test_arrays_of_the_wrong_kind_are_refused(predictor):
    with pytest.raises(ImageError, match="uint8"):
        predictor.predict(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ImageError):
        predictor.predict(np.zeros((2, 2, 2, 2), dtype=np.uint8))


# Checkpoints: what tests/test_checkpoints.py does not already cover.

def _meta() -> dict[str, str]:
    return ModelInfo(arch="resnet14", class_names=list(CLASSES), input_size=64).to_metadata()


def test_truncated_tensor_data_is_refused(tmp_path):
    good = make_checkpoint(tmp_path / "good.safetensors", "resnet14")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_checkpoint(cut)


def test_header_that_is_not_json_is_refused(tmp_path):
    path = tmp_path / "garbage.safetensors"
    body = b"\x00\xff not json at all " * 10
    path.write_bytes(struct.pack("<Q", len(body)) + body + b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(path)


@pytest.mark.parametrize("change", ["missing", "extra", "wrong-shape-head"])
def test_tensors_that_do_not_fit_are_refused(tmp_path, change):
    import torch

    state = {k: v.contiguous() for k, v in build_model("resnet14").state_dict().items()}
    if change == "missing":
        state.pop("layer2.0.conv1.weight")
    elif change == "extra":
        state["backdoor.weight"] = torch.zeros(3)
    else:
        state["fc.weight"] = torch.zeros(5, 64)  # a 5-class head under a 2-class header
    save_file(state, tmp_path / "m.safetensors", metadata=_meta())
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_duplicate_class_names_are_refused(tmp_path):
    meta = _meta()
    meta["class_names"] = json.dumps(["normal", "normal"])
    save_file({k: v.contiguous() for k, v in build_model("resnet14").state_dict().items()},
              tmp_path / "m.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="distinct"):
        load_checkpoint(tmp_path / "m.safetensors")
