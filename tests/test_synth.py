"""Tests for posture.synth: determinism, CVA/label geometry in every style, pictures without a side view,
the CSV, class balance of nuisances per style, brushes, CLI."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posture.errors import UsageError
from posture.synth import (
    NEGATIVE_KINDS,
    NO_SIDE_VIEW,
    STYLES,
    SynthConfig,
    add_synth_arguments,
    cva_from_points,
    generate_dataset,
    iter_samples,
    label_for_cva,
    read_labels,
    render_indexed,
    render_negative,
    render_sample,
    sample_cva,
    synth_main,
)
from posture.synth.camera import decode_jpeg
from posture.synth.canvas import Group
from posture.synth.dataset import csv_row
from posture.synth.styles import STYLE_SPECS, apply_brush

TINY = SynthConfig(size_range=(64, 96))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 8, seed=5, config=TINY, workers=1)
    b = generate_dataset(tmp_path / "b", 8, seed=5, config=TINY, workers=2)
    c = generate_dataset(tmp_path / "c", 8, seed=6, config=TINY, workers=2)
    files_a, files_b, files_c = _files(a.parent), _files(b.parent), _files(c.parent)
    assert len(files_a) == 9 and files_a == files_b
    assert files_a.keys() == files_c.keys()
    assert all(files_a[k] != files_c[k] for k in files_a)


def test_iter_samples_yields_the_pixels_the_dataset_holds(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path, 6, seed=2, config=TINY, workers=1)
    rows = read_labels(csv_path)
    stream = iter_samples(2, TINY, start=1, step=2)
    for k in range(3):
        image, info = next(stream)
        row = rows[1 + 2 * k]
        assert info.index == int(row["index"]) == 1 + 2 * k
        on_disk = np.asarray(Image.open(tmp_path / row["file"]).convert("RGB"))
        assert np.array_equal(np.asarray(image), on_disk)


def test_render_sample_is_deterministic_for_a_seeded_generator() -> None:
    a, info_a = render_sample(np.random.default_rng(7), 40.0, TINY)
    b, info_b = render_sample(np.random.default_rng(7), 40.0, TINY)
    assert np.array_equal(np.asarray(a), np.asarray(b)) and info_a == info_b
    assert a.size == (info_a.width, info_a.height)


def _foreshortened(cva_deg: float, pitch_deg: float) -> float:
    """The angle a camera pitched by `pitch_deg` sees: vertical extents shrink by cos(pitch)."""
    a, squash = math.radians(cva_deg), math.cos(math.radians(pitch_deg))
    return math.degrees(math.atan2(squash * math.sin(a), math.cos(a)))


def test_geometry_matches_the_cva_and_labels_follow_the_true_cva() -> None:
    infos = [render_indexed(11, i, TINY)[1] for i in range(80)]
    for info in infos:
        measured = cva_from_points(info.c7, info.tragus, info.facing)
        assert measured == pytest.approx(info.image_cva_deg, abs=1e-6)
        # the roll turns the picture counter-clockwise: a right-facing neck looks steeper by the roll;
        # the pitch shrinks vertical extents by its cosine (under a degree at 15 degrees)
        sign = 1.0 if info.facing == "right" else -1.0
        assert measured - sign * info.roll_deg == pytest.approx(_foreshortened(info.cva_deg, info.pitch_deg), abs=1e-6)
        assert abs(measured - sign * info.roll_deg - info.cva_deg) < 1.0
        assert abs(info.roll_deg) <= TINY.max_roll_deg
        assert info.label == label_for_cva(info.cva_deg, TINY)
        assert info.label == TINY.class_names[info.index % 2]
        assert not (TINY.turtle_range[1] < info.cva_deg < TINY.normal_range[0])  # margin left out
        lo, hi = TINY.normal_range if info.label == "normal" else TINY.turtle_range
        assert lo <= info.cva_deg <= hi
        assert info.neck_length_px > 0.5 * info.head_height_px  # the neck is long enough to see
    assert {i.facing for i in infos} == {"left", "right"}
    assert {i.pose for i in infos} == {"sitting", "standing"}
    assert {i.style for i in infos} == set(STYLES)


@pytest.mark.parametrize("style", STYLES)
def test_every_style_keeps_the_points_on_the_picture_it_draws(style: str) -> None:
    """c7/tragus/box are in the delivered picture's pixels, also where the camera shrinks it (lowres)."""
    for seed in range(6):
        image, info = render_sample(np.random.default_rng(seed), 38.0 if seed % 2 else 62.0, TINY, style=style)
        assert info.style == style and info.side_view and image.size == (info.width, info.height)
        x0, y0, x1, y1 = info.head_box
        assert 0 <= x0 < x1 <= info.width and 0 <= y0 < y1 <= info.height
        for x, y in (info.c7, info.tragus):
            assert x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1
        assert cva_from_points(info.c7, info.tragus, info.facing) == pytest.approx(info.image_cva_deg, abs=1e-6)
    if style == "lowres":
        assert max(info.width, info.height) <= 128
    if style == "webcam":  # a close-up: the head and neck fill much of the frame
        assert (x1 - x0) * (y1 - y0) > 0.15 * info.width * info.height


def test_without_roll_and_pitch_the_image_angle_is_the_true_cva() -> None:
    config = SynthConfig(size_range=(64, 96), max_roll_deg=0.0, max_pitch_deg=0.0)
    for i in range(20):
        info = render_indexed(3, i, config)[1]
        assert cva_from_points(info.c7, info.tragus, info.facing) == pytest.approx(info.cva_deg, abs=1e-6)


def test_threshold_and_margin_are_configurable() -> None:
    config = SynthConfig.from_margin(threshold=40.0, margin=3.0, low=20.0, high=75.0, size_range=(64, 80))
    assert config.normal_range == (43.0, 75.0) and config.turtle_range == (20.0, 37.0)
    rng = np.random.default_rng(0)
    for label in config.class_names:
        for _ in range(50):
            cva = sample_cva(rng, label, config)
            assert label_for_cva(cva, config) == label
    with pytest.raises(ValueError):
        sample_cva(rng, "slouch", config)
    with pytest.raises(ValueError):
        SynthConfig(threshold=50.0, turtle_range=(25.0, 52.0))
    with pytest.raises(ValueError):
        SynthConfig(nuisance=1.5)
    with pytest.raises(ValueError, match="styles"):
        SynthConfig(styles=("flat", "oil"))
    with pytest.raises(ValueError, match="negatives"):
        SynthConfig(negatives=1.0)


def test_csv_matches_the_files_and_boxes_hold_c7_and_tragus(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path, 40, seed=4, config=SynthConfig(size_range=(64, 96), negatives=0.2),
                                workers=2)
    rows = read_labels(csv_path)
    assert len(rows) == 40
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")) == sorted(r["file"] for r in rows)
    assert [r["label"] for r in rows].count("normal") == [r["label"] for r in rows].count("turtle_neck") == 16
    without = [r for r in rows if r["side_view"] == "0"]
    assert len(without) == 8  # 4 of every 20
    for r in without:  # no class, no angle, no points: only what the picture is (and where a head is)
        assert r["file"].startswith(NO_SIDE_VIEW + "/") and r["view"] in NEGATIVE_KINDS
        assert r["label"] == r["cva_deg"] == r["c7_x"] == ""
        assert (r["box_x0"] != "") == (r["view"] in ("frontal", "back", "empty"))
    rows = [r for r in rows if r["side_view"] == "1"]
    for r in rows:
        assert r["file"].split("/")[0] == r["label"] and r["view"] == "side" and r["style"] in STYLES
        w, h = int(r["width"]), int(r["height"])
        with Image.open(tmp_path / r["file"]) as im:
            assert im.size == (w, h) and im.format == "JPEG"
        x0, y0, x1, y1 = (int(r[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        for x, y in ((float(r["c7_x"]), float(r["c7_y"])), (float(r["tragus_x"]), float(r["tragus_y"]))):
            assert x0 <= x <= x1 and y0 <= y <= y1
        assert max(x1 - x0, y1 - y0) <= max(w, h)  # head never fills more than the picture
        assert float(r["image_cva_deg"]) == pytest.approx(
            cva_from_points((float(r["c7_x"]), float(r["c7_y"])), (float(r["tragus_x"]), float(r["tragus_y"])), r["facing"]),
            abs=0.01,
        )


def _features(image: Image.Image, info) -> dict[str, float]:
    arr = np.asarray(image, dtype=np.float64) / 255.0
    x0, y0, x1, y1 = info.head_box
    short = min(info.width, info.height)
    return {
        "red": arr[..., 0].mean(),
        "green": arr[..., 1].mean(),
        "blue": arr[..., 2].mean(),
        "brightness": arr.mean(),
        "width": info.width,
        "height": info.height,
        "aspect": info.width / info.height,
        "box_size": math.sqrt((x1 - x0) * (y1 - y0)) / short,
        "box_cx": (x0 + x1) / 2 / info.width,
        "box_cy": (y0 + y1) / 2 / info.height,
        "head_px": info.head_height_px / short,
    }


@pytest.mark.parametrize("style", STYLES)
def test_nuisances_do_not_tell_the_classes_apart(style: str) -> None:
    """In every style, colour, size, framing and box statistics do not differ between the classes."""
    config = SynthConfig(size_range=(64, 96), styles=(style,))
    samples = [render_indexed(21, i, config) for i in range(160)]
    feats: dict[str, dict[str, list[float]]] = {"normal": {}, "turtle_neck": {}}
    for data, info in samples:
        for k, v in _features(decode_jpeg(data), info).items():
            feats[info.label].setdefault(k, []).append(v)
    for key in feats["normal"]:
        a, b = np.asarray(feats["normal"][key]), np.asarray(feats["turtle_neck"][key])
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) <= 3.5 * se + 1e-9, f"{style} {key}: {a.mean():.4f} vs {b.mean():.4f} (se {se:.4f})"


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_pictures_without_a_side_view_have_no_label_and_their_own_shapes(kind: str) -> None:
    for seed in range(3):
        image, info = render_negative(np.random.default_rng(seed), kind, TINY)
        assert not info.side_view and info.view == kind and info.label == ""
        assert math.isnan(info.cva_deg) and image.size == (info.width, info.height)
        w, h = image.size
        if kind == "strip":
            assert max(w, h) >= 6 * min(w, h)
        elif kind == "tiny":
            assert max(w, h) <= 16
        elif kind in ("frontal", "back", "empty"):
            assert info.style in STYLES


def test_brushes_repaint_from_the_part_map() -> None:
    """Silhouettes fill the figure with one colour; line art keeps only outlines on paper."""
    ids = np.zeros((64, 64), dtype=np.int32)
    ids[16:48, 20:44] = Group.PERSON + 1  # the figure
    ids[30:40, 26:38] = Group.PERSON + 2  # a part inside it
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.uniform(0, 255, (64, 64, 3)).astype(np.uint8), "RGB")
    sil = np.asarray(apply_brush(picture, ids, STYLE_SPECS["silhouette"], np.random.default_rng(1), 2.0, 1))
    figure = sil[ids >= Group.PERSON]
    assert (figure == figure[0]).all()  # one colour, whatever the parts
    assert not np.array_equal(sil[ids == 0], figure[: (ids == 0).sum()])
    line = np.asarray(apply_brush(picture, ids, STYLE_SPECS["lineart"], np.random.default_rng(3), 1.0, 1))
    outline = np.zeros(ids.shape, dtype=bool)  # where the parts meet, with a margin for the pen's width
    outline[:, 1:] |= ids[:, 1:] != ids[:, :-1]
    outline[1:, :] |= ids[1:, :] != ids[:-1, :]
    near = np.zeros_like(outline)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near |= np.roll(np.roll(outline, dy, 0), dx, 1)
    paper = line[~near].astype(float)
    assert paper.std(axis=0).mean() < 0.5 * np.asarray(picture).reshape(-1, 3).std(axis=0).mean()  # not the noise
    assert line[outline].astype(float).mean() < paper.mean() - 40  # ink along the outlines


def test_cli_functions_write_the_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--out", str(tmp_path / "ds"), "--n", "6", "--seed", "1", "--threshold", "48", "--margin", "4",
         "--min-size", "64", "--max-size", "80", "--workers", "1", "--quiet", "--style", "lineart,photo"]  # fmt: skip
    )
    assert synth_main(args) == 0
    rows = read_labels(tmp_path / "ds" / "labels.csv")
    assert len(rows) == 6 and all((tmp_path / "ds" / r["file"]).is_file() for r in rows)
    assert {r["style"] for r in rows} <= {"lineart", "photo"}
    with pytest.raises(UsageError, match="unknown style"):
        synth_main(parser.parse_args(["--out", str(tmp_path / "x"), "--style", "oil"]))
    for r in rows:
        cva = float(r["cva_deg"])
        assert (cva < 44.0) if r["label"] == "turtle_neck" else (cva > 52.0)
    assert "labels.csv" in capsys.readouterr().out


def test_clean_config_renders_plain_pictures() -> None:
    image, info = render_sample(np.random.default_rng(1), 60.0, SynthConfig(size_range=(64, 80), nuisance=0.0),
                                style="flat")
    assert info.scene in ("solid", "gradient") and image.size == (info.width, info.height)


@pytest.mark.parametrize("style", ["flat", "webcam", "lowres"])
def test_frontal_and_back_views_record_the_box_around_the_drawn_head(monkeypatch: pytest.MonkeyPatch, style: str) -> None:
    """The box a frontal or back view records (for training close-ups) lies where its head was
    drawn, in the finished picture's pixels, also after a camera that shrinks the picture."""
    from posture.synth import negatives
    from posture.synth.canvas import ellipse_points
    from posture.synth.views import HEAD_CENTRE, HEAD_RX, HEAD_RY

    def red_head(painter, person, view, arms_up):  # type: ignore[no-untyped-def]
        painter.polygon(ellipse_points(HEAD_CENTRE, HEAD_RX, HEAD_RY, n=40), (255, 0, 0))

    monkeypatch.setattr(negatives, "draw_front_or_back", red_head)
    for seed in range(4):
        kind = ("frontal", "back")[seed % 2]
        image, info = render_negative(np.random.default_rng(seed), kind, SynthConfig(size_range=(96, 160)), style)
        arr = np.asarray(image).astype(int)
        red = arr[:, :, 0] - arr[:, :, 1:].max(axis=2) > 120
        ys, xs = np.nonzero(red)
        assert len(xs) > 4, (style, seed)
        x0, y0, x1, y1 = info.head_box
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        inside = (xs >= x0 - 1) & (xs <= x1) & (ys >= y0 - 1) & (ys <= y1)
        assert inside.mean() > 0.95, (style, seed, info.head_box, (xs.min(), ys.min(), xs.max(), ys.max()))
        assert (x1 - x0) < 2.0 * (xs.max() - xs.min() + 1)  # around the head, not the whole picture


def test_only_views_of_a_person_or_a_room_record_a_box_in_labels_csv() -> None:
    for kind in NEGATIVE_KINDS:
        row = csv_row(render_negative(np.random.default_rng(1), kind, TINY)[1])
        has_box = all(row[k] != "" for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        assert has_box == (kind in ("frontal", "back", "empty")), kind
        assert row["label"] == "" and row["cva_deg"] == "" and row["side_view"] == "0"
