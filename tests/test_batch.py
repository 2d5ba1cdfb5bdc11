"""`posture.batch`: many images scored as a stream; rows, CSV and overlays written as they come."""

from __future__ import annotations

import csv
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from posture.batch import BatchWriter, csv_columns, find_images, score_files
from posture.errors import UsageError
from posture.predict import Predictor

from conftest import CLASSES, person_like


@pytest.fixture(scope="module")
def predictor(checkpoint_dir) -> Predictor:
    return Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "shots"
    (root / "monday").mkdir(parents=True)
    for i in range(3):
        person_like(seed=i).save(root / f"{i}.jpg")
    person_like(seed=9).save(root / "monday" / "0.jpg")  # same stem as a top-level file
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(b"")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    return root


def test_find_images_expands_folders_and_keeps_named_files(folder, tmp_path):
    found = find_images([folder])
    assert [p.relative_to(folder).as_posix() for p in found] == ["0.jpg", "1.jpg", "2.jpg", "broken.jpg",
                                                                  "monday/0.jpg"]
    named = tmp_path / "x.txt"
    named.write_text("named on purpose")
    assert find_images([named]) == [named]  # scoring says what is wrong with it
    with pytest.raises(UsageError, match="no images"):
        find_images([tmp_path / "empty"] if (tmp_path / "empty").mkdir() is None else [])


def test_every_file_gets_one_row_in_order_and_errors_do_not_stop_the_rest(predictor, folder, tmp_path):
    files = find_images([folder])
    out = tmp_path / "out.csv"
    with BatchWriter(predictor.class_names, csv_path=out, cam_dir=tmp_path / "cams",
                     zip_path=tmp_path / "cams.zip") as writer:
        rows = [writer.add(s) for s in score_files(predictor, files, explain=True, batch_size=2)]
    assert [r.file for r in rows] == [str(p) for p in files]
    assert writer.scored == 4 and writer.failed == 1
    bad = rows[3]
    assert bad.label == "" and "broken.jpg" in bad.error and "damaged" in bad.error
    with out.open(newline="") as f:
        records = list(csv.DictReader(f))
    assert list(records[0]) == csv_columns(CLASSES)
    for record, row in zip(records, rows):
        assert record["file"] == row.file and record["label"] == row.label
        if row.label:
            assert sum(float(record[f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-5)
            assert record["cva_deg"] == "" and record["side_view"] == ""  # this model has neither head
    cams = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert cams == ["0-2_cam.png", "0_cam.png", "1_cam.png", "2_cam.png"]  # unique names for equal stems
    with zipfile.ZipFile(tmp_path / "cams.zip") as zf:
        assert sorted(zf.namelist()) == cams
    assert Image.open(tmp_path / "cams" / "0-2_cam.png").size == Image.open(folder / "monday" / "0.jpg").size


def test_batches_give_the_same_answers_as_one_at_a_time(predictor, folder):
    files = [p for p in find_images([folder]) if p.name != "broken.jpg"]
    together = [s.prediction.probabilities for s in score_files(predictor, files, batch_size=16)]
    alone = [predictor.predict(p, explain=False).probabilities for p in files]
    for a, b in zip(together, alone):
        assert a == pytest.approx(b, abs=1e-4)


def test_names_replace_paths_in_rows(predictor, folder):
    files = find_images([folder])[:2]
    scored = list(score_files(predictor, files, names=["first.jpg", "second.jpg"]))
    assert [s.name for s in scored] == ["first.jpg", "second.jpg"]
    with pytest.raises(UsageError):
        list(score_files(predictor, files, names=["only-one"]))


def test_memory_stays_bounded_as_the_number_of_files_grows(predictor, tmp_path):
    """Rows are written and dropped: scoring 4x the files must not hold 4x the memory."""
    person_like(width=640, height=480).save(tmp_path / "big.png")
    few, many = [tmp_path / "big.png"] * 8, [tmp_path / "big.png"] * 32

    def peak(files: list[Path]) -> int:
        with BatchWriter(predictor.class_names, csv_path=tmp_path / "o.csv", zip_path=tmp_path / "o.zip",
                         overlay_format="jpeg") as writer:
            tracemalloc.start()
            for s in score_files(predictor, files, explain=True, batch_size=4):
                writer.add(s)
            _, top = tracemalloc.get_traced_memory()
            tracemalloc.stop()
        return top

    peak(few)  # warm-up: the serving path is built on the first batch
    small, large = peak(few), peak(many)
    assert large < 1.5 * small, (small, large)
