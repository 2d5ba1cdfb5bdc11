"""Training examples: targets, angle-preserving augmentation that moves the box with the picture,
preloading, low-quality captures, changes of drawing style, and placing a picture's box in its letterboxed square."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posture.imagedata import (CLOSEUP_SHARE, LEGACY_CLOSEUP_LARGEST, RESTYLE_OPS, RESTYLE_OPS_ALL, Augment, ImageDataset, Item,
                               annotate, augment_image, closeup_crop, degrade_image, restyle_image, square_box)
from posture.labels import Annotation

NAN = math.nan
# every default augmentation off, so that only the option under test changes a picture
ONLY_THE_OPTION = dict(flip=0, brightness=0, contrast=0, saturation=0, hue=0, scale=0, translate=0, grey=0)


def _bright_box_picture(path: Path, size=(120, 80), box=(0.5, 0.25, 0.75, 0.75)) -> Path:
    """A dark picture with one white rectangle where `box` (fractions) says."""
    w, h = size
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    arr[int(box[1] * h):int(box[3] * h), int(box[0] * w):int(box[2] * w)] = 255
    Image.fromarray(arr).save(path)
    return path


def _white_extent(img: Image.Image) -> tuple[float, float, float, float]:
    a = np.asarray(img.convert("L")) > 200
    ys, xs = np.nonzero(a)
    return xs.min() / a.shape[1], ys.min() / a.shape[0], (xs.max() + 1) / a.shape[1], (ys.max() + 1) / a.shape[0]


def test_square_box_places_a_picture_box_in_the_letterboxed_square():
    # a 2:1 landscape picture fills the square's width and the middle half of its height
    assert square_box((0.0, 0.0, 1.0, 1.0), 200, 100) == pytest.approx((0.0, 0.25, 1.0, 0.75))
    assert square_box((0.5, 0.5, 1.0, 1.0), 100, 200) == pytest.approx((0.5, 0.5, 0.75, 1.0))


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_the_box_with_the_picture(tmp_path, seed):
    path = _bright_box_picture(tmp_path / "p.png")
    item = Item(path, 0, 50.0, (0.5, 0.25, 0.75, 0.75), aspect=1.5)
    ds = ImageDataset([item], 64, augment=Augment(brightness=0, contrast=0, saturation=0, hue=0, grey=0,
                                                   flip=0.5, scale=0.15, translate=0.1), seed=seed)
    square = ds.load_square(0)
    box = square_box(item.box, 1.5, 1.0)
    assert _white_extent(square) == pytest.approx(box, abs=2 / 64)
    moved, moved_box = augment_image(square, ds.augment, np.random.default_rng([seed, 0, 0]), box)
    assert _white_extent(moved) == pytest.approx(moved_box, abs=3 / 64)


def test_targets_and_preloading(tmp_path):
    a = _bright_box_picture(tmp_path / "a.png")
    b = _bright_box_picture(tmp_path / "b.png", box=(0.1, 0.1, 0.3, 0.9))
    items = [Item(a, 1, 41.5, (0.5, 0.25, 0.75, 0.75), 1.5, "flat", "side"), Item(b, -1, view="empty")]
    ds = ImageDataset(items, 32)
    x, t = ds[0]
    assert x.shape == (3, 32, 32) and int(t["label"]) == 1 and float(t["cva_deg"]) == pytest.approx(41.5)
    assert float(t["side_view"]) == 1.0 and torch.isfinite(t["box"]).all()
    _, t = ds[1]
    assert int(t["label"]) == -1 and float(t["side_view"]) == 0.0 and torch.isnan(t["cva_deg"])
    assert torch.isnan(t["box"]).all()
    streamed = [ds[i][0] for i in range(2)]
    ds.preload()
    assert ds.squares.shape == (2, 32, 32, 3)
    for i in range(2):
        torch.testing.assert_close(ds[i][0], streamed[i])
    sub = ds.subset([1])
    assert len(sub) == 1 and np.array_equal(sub.squares[0], ds.squares[1])


def test_flipping_keeps_the_angle_target(tmp_path):
    """The angle is measured toward the face, so a mirrored person has the same angle."""
    path = _bright_box_picture(tmp_path / "p.png")
    ds = ImageDataset([Item(path, 0, 33.0)], 32, augment=Augment(flip=1.0), seed=0)
    assert float(ds[0][1]["cva_deg"]) == 33.0


def test_annotate_uses_what_labels_csv_says(tmp_path):
    p, q, r = tmp_path / "n/a.jpg", tmp_path / "t/b.jpg", tmp_path / "no_side_view/c.jpg"
    notes = {p: Annotation(60.0, (0.1, 0.2, 0.3, 0.4), (200.0, 100.0), "photo", "side"),
             r: Annotation(None, None, (50.0, 50.0), "", "frontal")}
    a, b, c = annotate([(p, 0), (q, 1), (r, -1)], notes)
    assert (a.cva_deg, a.box, a.aspect, a.style, a.view) == (60.0, (0.1, 0.2, 0.3, 0.4), 2.0, "photo", "side")
    assert math.isnan(b.cva_deg) and b.view == "side" and math.isnan(b.box[0])
    assert c.label == -1 and not c.side_view and c.view == "frontal" and math.isnan(c.cva_deg)


def _sharpness(img: Image.Image) -> float:
    """Mean absolute difference between neighbouring pixels: high for crisp edges."""
    a = np.asarray(img.convert("L"), dtype=np.float32)
    return float(np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean())


def test_degraded_capture_keeps_size_and_geometry_but_loses_detail():
    """A low-quality capture: same size, the figure where it was, fewer and softer edges;
    the same generator state gives the same picture."""
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: the finest detail a picture can hold
    stripes[:16] = 0
    crisp = Image.fromarray(stripes)
    for seed in range(8):
        out = degrade_image(crisp, np.random.default_rng(seed))
        assert out.size == crisp.size and out.mode == "RGB"
        assert _sharpness(out) < 0.6 * _sharpness(crisp)
        assert np.asarray(out)[:12].max() < 60  # the dark band stays dark: nothing moved
        assert np.array_equal(np.asarray(out), np.asarray(degrade_image(crisp, np.random.default_rng(seed))))


def test_degrade_probability_decides_how_often_training_sees_a_degraded_capture(tmp_path):
    path = _bright_box_picture(tmp_path / "p.png", size=(64, 64))
    item = Item(path, 0, 50.0)
    plain = ImageDataset([item], 64, augment=Augment(**ONLY_THE_OPTION, degrade=0.0), seed=0)
    always = ImageDataset([item], 64, augment=Augment(**ONLY_THE_OPTION, degrade=1.0), seed=0)
    assert not plain.augment or not plain.augment.active  # degrade 0 with everything else off: no augmentation
    torch.testing.assert_close(plain[0][0], ImageDataset([item], 64)[0][0])
    changed = []
    for epoch in range(4):
        always.epoch = epoch
        changed.append(not torch.equal(always[0][0], plain[0][0]))
    assert all(changed)


@pytest.mark.parametrize("name", ["degrade", "restyle", "closeup"])
def test_degrade_and_restyle_must_be_probabilities(name):
    from posture.errors import UsageError
    from posture.train import TrainConfig

    assert getattr(TrainConfig(arch="resnet14", **{name: 0.3}).augmentation(), name) == 0.3
    assert not TrainConfig(arch="resnet14", augment=False, **{name: 0.3}).augmentation().active
    with pytest.raises(UsageError, match=f"{name} is a probability"):
        TrainConfig(arch="resnet14", **{name: 1.5}).resolved()


def test_the_largest_closeup_reaches_the_augmentation_and_must_lie_between_the_smallest_and_the_whole_side():
    from posture.errors import UsageError
    from posture.train import TrainConfig

    assert TrainConfig(arch="resnet14", closeup=0.3).augmentation().closeup_largest == CLOSEUP_SHARE[1]
    assert TrainConfig(arch="resnet14", closeup=0.3, closeup_largest=0.8).augmentation().closeup_largest == 0.8
    for wrong in (0.3, 1.2):
        with pytest.raises(UsageError, match="largest box share"):
            TrainConfig(arch="resnet14", closeup_largest=wrong).resolved()


def _figure_extent(img: Image.Image) -> tuple[int, int, int, int]:
    """The bounding box of the pixels that differ from the top-left corner's: the drawn figure."""
    a = np.asarray(img.convert("L"), dtype=np.int16)
    ys, xs = np.nonzero(np.abs(a - a[0, 0]) > 20)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("op", RESTYLE_OPS_ALL)
def test_restyling_changes_the_drawing_but_keeps_the_figure_where_it_was(op):
    arr = np.full((64, 64, 3), 100, dtype=np.uint8)
    arr[20:50, 24:40] = (230, 200, 170)  # a light figure on a mid-grey ground
    arr[30:34, 28:36] = 40  # with a dark detail inside
    img = Image.fromarray(arr)
    out = restyle_image(img, np.random.default_rng(0), op)
    assert out.size == img.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), arr)
    assert _figure_extent(out) == pytest.approx((24, 20, 40, 50), abs=1)
    again = restyle_image(img, np.random.default_rng(0), op)
    assert np.array_equal(np.asarray(out), np.asarray(again))


def test_otsus_threshold_splits_two_tones_between_them_whatever_their_shares():
    from posture.imagedata import otsu_threshold

    for dark_share in (0.05, 0.5, 0.9):
        grey = np.full(1000, 200, dtype=np.uint8)
        grey[: int(1000 * dark_share)] = 60
        assert 60 <= otsu_threshold(grey) < 200
    three = np.repeat(np.array([40, 100, 205], dtype=np.uint8), [32, 3616, 448])  # a small dark mark, ground, figure
    assert 100 <= otsu_threshold(three) < 205  # the figure splits from the ground, not the mark


def test_a_silhouette_is_the_figure_in_one_flat_colour_on_the_other_without_its_small_marks():
    arr = np.full((64, 64, 3), (200, 215, 230), dtype=np.uint8)  # a light sky
    arr[12:56, 24:40] = (90, 60, 50)  # a dark figure
    arr[18:20, 34:36] = 250  # with a light eye and an ear mark
    arr[20:22, 28:30] = (200, 160, 140)
    rng = np.random.default_rng(3)
    for _ in range(8):
        out = np.asarray(restyle_image(Image.fromarray(arr), rng, "silhouette"))
        colours = np.unique(out.reshape(-1, 3), axis=0)
        assert len(colours) == 2 and colours.max(axis=1).min() < 110 and colours.min(axis=1).max() >= 146
        figure, ground = out[13:55, 25:39], np.concatenate([out[:, :20], out[:, 44:]], axis=1)
        assert (figure == figure[0, 0]).all() and (ground == ground[0, 0]).all()  # the marks are gone
        assert not np.array_equal(figure[0, 0], ground[0, 0])


def test_restyle_draws_only_from_the_ops_asked_for_and_silhouette_only_when_asked():
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    assert "silhouette" not in RESTYLE_OPS and Augment().restyle_ops == RESTYLE_OPS
    inverted = np.asarray(restyle_image(img, np.random.default_rng(1), "invert"))
    for seed in range(5):
        assert np.array_equal(np.asarray(restyle_image(img, np.random.default_rng(seed), ops=("invert",))), inverted)
        assert len(np.unique(np.asarray(restyle_image(img, np.random.default_rng(seed), ops=("silhouette",)))
                             .reshape(-1, 3), axis=0)) == 2


def test_the_restyle_ops_reach_the_augmentation_and_an_unknown_or_empty_list_is_a_clear_error():
    from posture.errors import UsageError
    from posture.train import TrainConfig

    assert TrainConfig(arch="resnet14").augmentation().restyle_ops == RESTYLE_OPS
    cfg = TrainConfig(arch="resnet14", restyle=0.3, restyle_ops=["outline", "silhouette"])  # as a checkpoint's JSON holds it
    assert cfg.augmentation().restyle_ops == ("outline", "silhouette")
    assert cfg.resolved().restyle_ops == ("outline", "silhouette")
    with pytest.raises(UsageError, match="got 'oil'"):
        TrainConfig(arch="resnet14", restyle_ops=("outline", "oil")).resolved()
    with pytest.raises(UsageError, match="got none"):
        TrainConfig(arch="resnet14", restyle_ops=()).resolved()


def _three_tone_picture(path: Path) -> Path:
    """Mid, light and dark tones, so that every degrade or restyle change has something to change."""
    arr = np.full((64, 64, 3), 100, dtype=np.uint8)
    arr[16:48, 20:44] = 200
    arr[24:40, 28:36] = 30
    Image.fromarray(arr).save(path)
    return path


def test_restyle_probability_decides_how_often_training_sees_another_drawing_style(tmp_path):
    item = Item(_three_tone_picture(tmp_path / "p.png"), 0, 50.0)
    plain = ImageDataset([item], 64)
    always = ImageDataset([item], 64, augment=Augment(**ONLY_THE_OPTION, restyle=1.0), seed=0)
    changed = []
    for epoch in range(6):
        always.epoch = epoch
        changed.append(not torch.equal(always[0][0], plain[0][0]))
    assert all(changed)
    with pytest.raises(ValueError, match="unknown restyle op"):
        restyle_image(Image.new("RGB", (8, 8)), np.random.default_rng(0), "oil")


@pytest.mark.parametrize("name", ["degrade", "restyle", "closeup"])
def test_a_share_between_none_and_all_changes_about_that_share_of_the_pictures(name, tmp_path):
    # a close-up needs a head-and-neck box: the dark patch, in fractions of the 64 x 64 picture
    item = Item(_three_tone_picture(tmp_path / "p.png"), 0, 50.0, box=(28 / 64, 24 / 64, 36 / 64, 40 / 64), aspect=1.0)
    plain = ImageDataset([item], 64)[0][0]
    shared = ImageDataset([item], 64, augment=Augment(**ONLY_THE_OPTION, **{name: 0.3}), seed=0)
    changed = []
    for epoch in range(200):
        shared.epoch = epoch
        changed.append(not torch.equal(shared[0][0], plain))
    assert 0.2 < np.mean(changed) < 0.4  # 0.3 +- 3.3 standard deviations of 200 draws


@pytest.mark.parametrize("largest", [CLOSEUP_SHARE[1], LEGACY_CLOSEUP_LARGEST])
def test_a_closeup_enlarges_the_head_and_neck_box_and_keeps_it_whole(largest):
    """The box's longer side becomes 45% to `largest` of the picture, wholly inside it, and the
    pixels move with it."""
    arr = np.full((128, 128, 3), 90, dtype=np.uint8)
    arr[40:60, 70:82] = 220  # the head and neck: 12 x 20 px
    img = Image.fromarray(arr)
    box = (70 / 128, 40 / 128, 82 / 128, 60 / 128)
    shares = []
    for seed in range(20):
        out, moved = closeup_crop(img, box, np.random.default_rng(seed), largest)
        assert out.size == img.size
        assert 0.0 <= moved[0] < moved[2] <= 1.0 and 0.0 <= moved[1] < moved[3] <= 1.0
        longer = max(moved[2] - moved[0], moved[3] - moved[1])
        shares.append(longer)
        assert CLOSEUP_SHARE[0] - 1e-6 <= longer <= largest + 1e-6
        assert (moved[2] - moved[0]) / (moved[3] - moved[1]) == pytest.approx(12 / 20)  # nothing stretched
        x0, y0, x1, y1 = (round(v * 128) for v in moved)
        bright = np.asarray(out.convert("L"))[y0 + 2:y1 - 2, x0 + 2:x1 - 2]
        assert bright.min() > 180  # the bright patch is where the box says
        assert np.array_equal(np.asarray(out), np.asarray(closeup_crop(img, box, np.random.default_rng(seed), largest)[0]))
    assert max(shares) > largest - 0.05  # the range is used up to its end


def test_a_closeup_leaves_a_picture_that_is_already_one_and_refuses_a_non_square():
    img = Image.new("RGB", (64, 64), (50, 60, 70))
    big = (0.05, 0.0, 0.95, 0.9)  # a box as large as a close-up makes it
    out, moved = closeup_crop(img, big, np.random.default_rng(0))
    assert out is img and moved == big
    with pytest.raises(ValueError, match="letterboxed square"):
        closeup_crop(Image.new("RGB", (64, 32)), (0.4, 0.4, 0.5, 0.5), np.random.default_rng(0))


def test_a_closeup_needs_a_box_so_pictures_without_one_are_left_alone(tmp_path):
    plain = Item(_three_tone_picture(tmp_path / "p.png"), 0, 50.0)  # no box: a user's folder without labels.csv
    ds = ImageDataset([plain], 64, augment=Augment(**ONLY_THE_OPTION, closeup=1.0), seed=0)
    for epoch in range(5):
        ds.epoch = epoch
        torch.testing.assert_close(ds[0][0], ImageDataset([plain], 64)[0][0])


def test_training_cuts_closeups_of_frontal_and_back_views_from_a_synth_folder(tmp_path):
    """A synth folder's frontal and back views carry their head box into training, so `closeup`
    shows them as head-and-shoulders close-ups too: negatives for the side-view head."""
    from posture.evaluate import folder_items
    from posture.synth import SynthConfig, generate_dataset

    generate_dataset(tmp_path, 40, seed=4, config=SynthConfig(size_range=(64, 96), negatives=0.5), workers=1)
    items, _ = folder_items(tmp_path)
    people = [it for it in items if it.view in ("frontal", "back")]
    others = [it for it in items if not it.side_view and it.view not in ("frontal", "back", "empty")]
    assert people and others
    assert all(it.has_box and not it.side_view for it in people) and not any(it.has_box for it in others)
    plain = ImageDataset(people, 64)
    close = ImageDataset(people, 64, augment=Augment(**ONLY_THE_OPTION, closeup=1.0), seed=0)
    cut = [not torch.equal(close[i][0], plain[i][0]) for i in range(len(people))]
    assert np.mean(cut) > 0.5  # every one whose box is not already close-up sized
    image, targets = close[cut.index(True)]
    x0, y0, x1, y1 = targets["box"].tolist()
    assert CLOSEUP_SHARE[0] - 0.01 <= max(x1 - x0, y1 - y0) <= CLOSEUP_SHARE[1] + 0.01 and int(targets["label"]) == -1
