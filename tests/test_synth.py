"""Tests for posture.synth: determinism, CVA/label geometry, the CSV, class balance of nuisances, CLI."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from posture.synth import (
    SynthConfig,
    add_synth_arguments,
    cva_from_points,
    generate_dataset,
    iter_samples,
    label_for_cva,
    read_labels,
    render_indexed,
    render_sample,
    sample_cva,
    synth_main,
)
from posture.synth.camera import decode_jpeg

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


def test_geometry_matches_the_cva_and_labels_follow_the_true_cva() -> None:
    infos = [render_indexed(11, i, TINY)[1] for i in range(80)]
    for info in infos:
        measured = cva_from_points(info.c7, info.tragus, info.facing)
        assert measured == pytest.approx(info.image_cva_deg, abs=1e-6)
        # the roll turns the picture counter-clockwise: a right-facing neck looks steeper by the roll
        sign = 1.0 if info.facing == "right" else -1.0
        assert measured - sign * info.roll_deg == pytest.approx(info.cva_deg, abs=0.5)
        assert abs(info.roll_deg) <= TINY.max_roll_deg
        assert info.label == label_for_cva(info.cva_deg, TINY)
        assert info.label == TINY.class_names[info.index % 2]
        assert not (TINY.turtle_range[1] < info.cva_deg < TINY.normal_range[0])  # margin left out
        lo, hi = TINY.normal_range if info.label == "normal" else TINY.turtle_range
        assert lo <= info.cva_deg <= hi
        assert info.neck_length_px > 0.5 * info.head_height_px  # the neck is long enough to see
    assert {i.facing for i in infos} == {"left", "right"}
    assert {i.pose for i in infos} == {"sitting", "standing"}


def test_without_roll_the_image_angle_is_the_true_cva() -> None:
    config = SynthConfig(size_range=(64, 96), max_roll_deg=0.0)
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


def test_csv_matches_the_files_and_boxes_hold_c7_and_tragus(tmp_path: Path) -> None:
    csv_path = generate_dataset(tmp_path, 12, seed=4, config=TINY, workers=2)
    rows = read_labels(csv_path)
    assert len(rows) == 12
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg")) == sorted(r["file"] for r in rows)
    assert [r["label"] for r in rows].count("normal") == 6
    for r in rows:
        assert r["file"].split("/")[0] == r["label"]
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


def test_nuisances_do_not_tell_the_classes_apart() -> None:
    samples = [render_indexed(21, i, TINY) for i in range(200)]
    feats: dict[str, dict[str, list[float]]] = {"normal": {}, "turtle_neck": {}}
    for data, info in samples:
        for k, v in _features(decode_jpeg(data), info).items():
            feats[info.label].setdefault(k, []).append(v)
    for key in feats["normal"]:
        a, b = np.asarray(feats["normal"][key]), np.asarray(feats["turtle_neck"][key])
        se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) <= 3 * se + 1e-9, f"{key}: {a.mean():.4f} vs {b.mean():.4f} (se {se:.4f})"


def test_cli_functions_write_the_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = add_synth_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--out", str(tmp_path / "ds"), "--n", "6", "--seed", "1", "--threshold", "48", "--margin", "4",
         "--min-size", "64", "--max-size", "80", "--workers", "1", "--quiet"]  # fmt: skip
    )
    assert synth_main(args) == 0
    rows = read_labels(tmp_path / "ds" / "labels.csv")
    assert len(rows) == 6 and all((tmp_path / "ds" / r["file"]).is_file() for r in rows)
    for r in rows:
        cva = float(r["cva_deg"])
        assert (cva < 44.0) if r["label"] == "turtle_neck" else (cva > 52.0)
    assert "labels.csv" in capsys.readouterr().out


def test_clean_config_renders_plain_pictures() -> None:
    image, info = render_sample(np.random.default_rng(1), 60.0, SynthConfig(size_range=(64, 80), nuisance=0.0))
    assert info.scene in ("solid", "gradient") and image.size == (info.width, info.height)
