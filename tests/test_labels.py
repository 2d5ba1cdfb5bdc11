"""labels.csv: angles, boxes and styles per picture, and clear errors for a damaged file."""

from __future__ import annotations

from pathlib import Path

import pytest

from posture.errors import DatasetError
from posture.labels import Annotation, read_annotations


def _write(root: Path, text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(text, encoding="utf-8")
    return root


def test_a_users_minimal_file_gives_angles(tmp_path):
    root = _write(tmp_path, "file,cva_deg\nnormal/a.jpg,61.5\nturtle_neck/b.jpg,38\nnormal/c.jpg,\n")
    notes = read_annotations(root)
    assert notes[root / "normal/a.jpg"] == Annotation(cva_deg=61.5)
    assert notes[root / "turtle_neck/b.jpg"].cva_deg == 38.0
    assert notes[root / "normal/c.jpg"].cva_deg is None and notes[root / "normal/c.jpg"].box is None


def test_synthetic_rows_give_the_image_angle_the_box_and_the_style(tmp_path):
    root = _write(tmp_path, "file,cva_deg,image_cva_deg,box_x0,box_y0,box_x1,box_y1,width,height,style,view\n"
                            "normal/a.jpg,60,63.5,10,20,30,60,100,80,lineart,side\n"
                            "no_side_view/b.jpg,,,,,,,100,80,,frontal\n")
    a = read_annotations(root)[root / "normal/a.jpg"]
    assert a.cva_deg == 63.5  # what the picture shows, roll included
    assert a.box == pytest.approx((0.1, 0.25, 0.3, 0.75)) and a.size == (100.0, 80.0)
    assert a.style == "lineart" and a.view == "side"
    b = read_annotations(root)[root / "no_side_view/b.jpg"]
    assert b.cva_deg is None and b.box is None and b.view == "frontal"


def test_no_file_means_no_annotations(tmp_path):
    assert read_annotations(tmp_path) == {}


@pytest.mark.parametrize("text, message", [
    ("name,cva_deg\na.jpg,50\n", "'file' column"),
    ("file,cva_deg\nnormal/a.jpg,fifty\n", "line 2: cva_deg 'fifty' is not a number"),
    ("file,cva_deg\nnormal/a.jpg,50\nnormal/b.jpg,120\n", "line 3: cva_deg 120.0 is outside"),
    ("file,cva_deg\nnormal/a.jpg,nan\n", "finite"),
    ("file,box_x0,box_y0,box_x1,box_y1,width,height\na.jpg,1,1,2,2,0,5\n", "positive"),
])  # fmt: skip
def test_a_damaged_file_is_a_clear_error(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        read_annotations(_write(tmp_path, text))


def test_a_file_that_is_not_text_is_a_clear_error(tmp_path):
    tmp_path.joinpath("labels.csv").write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(DatasetError, match="UTF-8"):
        read_annotations(tmp_path)
