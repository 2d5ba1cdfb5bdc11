"""`posture.archive.rebuild_folder`: a browser's folder upload (flat files + reported paths) put back safely."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from posture.archive import rebuild_folder
from posture.data import UploadLimits, scan_dataset
from posture.errors import DatasetError


@pytest.fixture
def uploaded(tmp_path) -> dict[str, Path]:
    """Reported path -> the flat file Gradio stored, as a browser's folder picker sends them."""
    flat = tmp_path / "flat"
    flat.mkdir()
    files = {}
    for i, rel in enumerate(["photos/normal/a.png", "photos/normal/b.png", "photos/turtle_neck/a.png",
                             "photos/turtle_neck/deep/c.png", "photos/.DS_Store", "photos/__MACOSX/x.png"]):
        path = flat / f"{i}-{Path(rel).name}"
        Image.new("RGB", (8, 8), (i * 30, 0, 0)).save(path, "PNG")
        files[rel] = path
    return files


def test_the_class_folders_come_back_and_litter_stays_out(uploaded, tmp_path):
    root = rebuild_folder(list(uploaded.items()), tmp_path / "dest")
    assert root == tmp_path / "dest" / "photos"  # the picked folder's own name is descended through
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "normal/a.png", "normal/b.png", "turtle_neck/a.png", "turtle_neck/deep/c.png"]
    scan = scan_dataset(root)
    assert scan.counts() == {"normal": 2, "turtle_neck": 2}


@pytest.mark.parametrize("name, problem", [("../evil.png", "outside"), ("photos/normal/../../../evil.png", "outside"),
                                           ("/tmp/evil.png", "absolute"), ("C:\\evil.png", "absolute")])
def test_paths_leaving_the_folder_are_refused_and_nothing_is_written(uploaded, tmp_path, name, problem):
    files = list(uploaded.items()) + [(name, next(iter(uploaded.values())))]
    with pytest.raises(DatasetError, match=problem) as err:
        rebuild_folder(files, tmp_path / "dest")
    assert str(err.value).startswith("upload refused") and repr(name) in str(err.value)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.png").exists()


def test_duplicate_paths_are_refused(uploaded, tmp_path):
    files = list(uploaded.items()) + [("photos/normal/a.png", next(iter(uploaded.values())))]
    with pytest.raises(DatasetError, match="same path"):
        rebuild_folder(files, tmp_path / "dest")


@pytest.mark.parametrize("limits, problem", [
    (UploadLimits(max_files=3), "POSTURE_MAX_UPLOAD_FILES"),
    (UploadLimits(max_total_bytes=100), "POSTURE_MAX_UPLOAD_MB"),
    (UploadLimits(max_file_bytes=10), "POSTURE_MAX_FILE_MB"),
    (UploadLimits(max_depth=1), "nested"),
])
def test_the_upload_limits_apply_as_for_a_zip(uploaded, tmp_path, limits, problem):
    with pytest.raises(DatasetError, match=problem):
        rebuild_folder(list(uploaded.items()), tmp_path / "dest", limits)
    assert not (tmp_path / "dest").exists()


def test_a_non_empty_destination_is_refused(uploaded, tmp_path):
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("mine")
    with pytest.raises(DatasetError, match="empty folder"):
        rebuild_folder(list(uploaded.items()), tmp_path / "dest")
    assert (tmp_path / "dest" / "keep.txt").read_text() == "mine"
