"""Dataset ingestion: folder layouts, skipped files and the stratified split (zips: test_archive.py)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from posture.data import UploadLimits, scan_dataset, stratified_split
from posture.errors import DatasetError

LAYOUT = "expected one folder per class"


def png_bytes(shade: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 255 - shade, 0)).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, layout: dict[str, int]) -> Path:
    """`{"normal": 3, "train/normal": 2}` -> that many 8x8 PNGs in each folder."""
    for folder, count in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            (root / folder / f"img{i:03d}.png").write_bytes(png_bytes(i * 20 % 256))
    return root


# ---------------------------------------------------------------- folders


def test_scan_good_tree(tmp_path):
    make_tree(tmp_path, {"turtle_neck": 4, "normal": 3})
    scan = scan_dataset(tmp_path)
    assert scan.root == tmp_path
    assert scan.class_names == ["normal", "turtle_neck"]
    assert scan.counts() == {"normal": 3, "turtle_neck": 4} and scan.total == 7
    assert scan.files["normal"] == sorted(scan.files["normal"]) and all(p.is_file() for p in scan.files["normal"])
    assert scan.skipped == [] and not scan.has_splits and scan.val_files is None


def test_single_wrappers_are_descended(tmp_path):
    make_tree(tmp_path / "upload" / "outer" / "mydata", {"normal": 2, "turtle_neck": 2})
    assert scan_dataset(tmp_path / "upload").root == tmp_path / "upload" / "outer" / "mydata"


def test_os_litter_is_ignored_not_classes(tmp_path):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 2, "__MACOSX/normal": 2, ".hidden": 2})
    (tmp_path / ".DS_Store").write_bytes(b"\0junk")
    (tmp_path / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "normal" / "desktop.ini").write_text("[.ShellClassInfo]")
    (tmp_path / "normal" / "._img000.png").write_bytes(b"AppleDouble")
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"]
    assert scan.counts() == {"normal": 2, "turtle_neck": 2} and scan.skipped == []


def test_corrupt_and_non_image_files_are_skipped_and_reported(tmp_path):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": 3})
    (tmp_path / "normal" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    (tmp_path / "normal" / "cut.png").write_bytes(png_bytes()[:40])
    (tmp_path / "normal" / "empty.png").write_bytes(b"")
    (tmp_path / "turtle_neck" / "notes.txt").write_text("hello")
    (tmp_path / "turtle_neck" / "inner.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    scan = scan_dataset(tmp_path)
    assert scan.counts() == {"normal": 3, "turtle_neck": 3}
    reasons = dict(scan.skipped)
    assert set(reasons) == {
        "normal/garbage.jpg", "normal/cut.png", "normal/empty.png", "turtle_neck/notes.txt", "turtle_neck/inner.zip",
    }
    assert "not an image" in reasons["normal/garbage.jpg"]
    assert "damaged" in reasons["normal/cut.png"] or "not an image" in reasons["normal/cut.png"]
    assert "empty" in reasons["normal/empty.png"]
    assert ".txt" in reasons["turtle_neck/notes.txt"]
    # Without verification only the suffix counts.
    assert scan_dataset(tmp_path, verify=False).counts()["normal"] == 6


def test_nested_folders_inside_a_class_are_included(tmp_path):
    make_tree(tmp_path, {"normal/day1": 2, "normal/day2/am": 1, "turtle_neck": 2})
    scan = scan_dataset(tmp_path, UploadLimits(max_depth=3))
    assert scan.counts() == {"normal": 3, "turtle_neck": 2}
    make_tree(tmp_path, {"normal/a/b/c": 1})
    scan = scan_dataset(tmp_path, UploadLimits(max_depth=3))
    assert scan.counts()["normal"] == 3 and scan.skipped == [("normal/a/b/c/", "folder nested too deep, not read")]


def test_one_class_is_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {"normal": 5})
    with pytest.raises(DatasetError, match=LAYOUT) as info:
        scan_dataset(tmp_path)
    assert "normal" in str(info.value) and "turtle_neck/" in str(info.value)


@pytest.mark.parametrize("count", [0, 1])
def test_class_with_too_few_images_is_named(tmp_path, count):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": count})
    with pytest.raises(DatasetError, match="'turtle_neck' has"):
        scan_dataset(tmp_path)


def test_class_whose_images_are_all_unreadable_is_named(tmp_path):
    make_tree(tmp_path, {"normal": 3, "slouch": 0})
    (tmp_path / "slouch" / "a.jpg").write_bytes(b"nope")
    (tmp_path / "slouch" / "b.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="'slouch' has 0 usable"):
        scan_dataset(tmp_path)


def test_images_at_the_root_are_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 2})
    (tmp_path / "stray.jpg").write_bytes(png_bytes())
    with pytest.raises(DatasetError, match=LAYOUT) as info:
        scan_dataset(tmp_path)
    assert "stray.jpg" in str(info.value)


def test_flat_folder_of_images_is_refused_with_the_layout(tmp_path):
    make_tree(tmp_path, {".": 4})
    with pytest.raises(DatasetError, match=LAYOUT):
        scan_dataset(tmp_path)


def test_case_colliding_classes_are_refused(tmp_path):
    make_tree(tmp_path, {"Normal": 2, "normal": 2, "turtle_neck": 2})
    with pytest.raises(DatasetError, match="letter case") as info:
        scan_dataset(tmp_path)
    assert "'Normal'" in str(info.value) and "'normal'" in str(info.value)


def test_unicode_class_names_are_accepted(tmp_path):
    make_tree(tmp_path, {"정상": 2, "거북목": 2, "normál": 2})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == sorted(["정상", "거북목", "normál"])
    assert scan.total == 6


def test_train_and_val_folders_are_used(tmp_path):
    make_tree(tmp_path / "ds", {"train/normal": 3, "train/turtle_neck": 4, "val/normal": 1, "val/turtle_neck": 2})
    make_tree(tmp_path / "ds", {"test/normal": 1})
    scan = scan_dataset(tmp_path)  # through the ds/ wrapper
    assert scan.has_splits and scan.class_names == ["normal", "turtle_neck"]
    assert {k: len(v) for k, v in scan.files.items()} == {"normal": 3, "turtle_neck": 4}
    assert {k: len(v) for k, v in scan.val_files.items()} == {"normal": 1, "turtle_neck": 2}
    assert all("/train/" in p.as_posix() for p in scan.files["normal"])
    assert scan.counts() == {"normal": 4, "turtle_neck": 6}
    assert [path for path, _ in scan.skipped] == ["test/"]


@pytest.mark.parametrize("name", ["no_side_view", "No_Side_View"])
def test_a_no_side_view_folder_is_not_a_class(tmp_path, name):
    make_tree(tmp_path, {"normal": 2, "turtle_neck": 3, name: 4, f"{name}/empty_rooms": 1})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"] and len(scan.negatives) == 5
    assert scan.counts() == {"normal": 2, "turtle_neck": 3}


def test_no_side_view_folders_in_train_and_val(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "train/no_side_view": 3,
                         "val/normal": 1, "val/turtle_neck": 1, "val/no_side_view": 2})
    scan = scan_dataset(tmp_path)
    assert scan.class_names == ["normal", "turtle_neck"]
    assert len(scan.negatives) == 3 and len(scan.val_negatives) == 2


def test_a_no_side_view_folder_alone_is_not_a_dataset(tmp_path):
    make_tree(tmp_path, {"normal": 3, "no_side_view": 3})
    with pytest.raises(DatasetError, match="at least 2 classes"):
        scan_dataset(tmp_path)


def test_train_and_val_must_agree_on_classes(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "val/normal": 1, "val/slouch": 1})
    with pytest.raises(DatasetError, match="same class folders"):
        scan_dataset(tmp_path)


def test_class_missing_from_val_is_refused(tmp_path):
    make_tree(tmp_path, {"train/normal": 2, "train/turtle_neck": 2, "val/normal": 1, "val/turtle_neck": 0})
    with pytest.raises(DatasetError, match="'turtle_neck'.*0 in val/"):
        scan_dataset(tmp_path)


def test_too_many_images_names_the_limit_and_setting(tmp_path):
    make_tree(tmp_path, {"normal": 3, "turtle_neck": 3})
    with pytest.raises(DatasetError, match=r"6 images .* limit of 5 .*POSTURE_MAX_UPLOAD_FILES"):
        scan_dataset(tmp_path, UploadLimits(max_files=5))


def test_symlinks_are_not_followed(tmp_path):
    make_tree(tmp_path / "ds", {"normal": 2, "turtle_neck": 2})
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes())
    os.symlink(secret, tmp_path / "ds" / "normal" / "link.png")
    scan = scan_dataset(tmp_path / "ds")
    assert scan.counts()["normal"] == 2 and scan.skipped == [("normal/link.png", "symbolic link, not followed")]


# ---------------------------------------------------------------- split


def split_files(tmp_path: Path, sizes: dict[str, int]) -> dict[str, list[Path]]:
    return {name: [tmp_path / name / f"{i}.png" for i in range(n)] for name, n in sizes.items()}


def test_split_covers_every_file_once_with_its_class(tmp_path):
    files = split_files(tmp_path, {"turtle_neck": 13, "normal": 20, "slouch": 2})
    train, val = stratified_split(files, 0.25, seed=0)
    pairs = train + val
    assert len(pairs) == 35 and len({p for p, _ in pairs}) == 35
    names = sorted(files)
    assert all(path.parent.name == names[index] for path, index in pairs)


def test_split_is_stratified_with_both_sides_per_class(tmp_path):
    files = split_files(tmp_path, {"normal": 20, "turtle_neck": 10, "tiny": 2})
    for fraction in (0.01, 0.2, 0.99):
        train, val = stratified_split(files, fraction, seed=1)
        for index in range(3):
            assert any(i == index for _, i in train) and any(i == index for _, i in val)
    train, val = stratified_split(files, 0.2, seed=1)
    val_per_class = [sum(i == index for _, i in val) for index in range(3)]
    assert val_per_class == [4, 1, 2]  # normal, tiny, turtle_neck: 20*0.2, max(1, 0.4), 10*0.2


def test_split_is_deterministic_and_seeded(tmp_path):
    files = split_files(tmp_path, {"normal": 30, "turtle_neck": 30})
    shuffled = {name: list(reversed(paths)) for name, paths in reversed(list(files.items()))}
    assert stratified_split(files, 0.3, seed=7) == stratified_split(shuffled, 0.3, seed=7)
    assert stratified_split(files, 0.3, seed=7)[1] != stratified_split(files, 0.3, seed=8)[1]


def test_split_rejects_bad_fraction(tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(split_files(tmp_path, {"a": 2, "b": 2}), 1.0, seed=0)
