"""Batch tab: many photos at once, a table, a CSV and a zip of overlays, through the API and in chromium."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import pytest
from app_fixtures import (
    CLASSES,
    broken_images,
    heads_checkpoint,
    open_page,
    open_tab,
    pick,
    running_app,
    shot,
    side_photo,
)
from conftest import copy_checkpoints
from PIL import Image

pytestmark = [pytest.mark.app]
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, checkpoint_dir) -> Path:
    folder = tmp_path_factory.mktemp("batch-checkpoints")
    copy_checkpoints(checkpoint_dir, folder)
    heads_checkpoint(folder / "with-heads.safetensors")
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoints):
    with running_app(tmp_path_factory.mktemp("app-batch"), checkpoints) as running:
        yield running


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("photos")
    paths = []
    for i in range(7):
        path = folder / f"desk_{i}.jpg"
        side_photo(80 + 8 * i, 60, seed=i, forward=bool(i % 2)).save(path)
        paths.append(path)
    return paths


def run_batch(client: Client, files: list[Path], model: str = "resnet14"):
    """/batch -> (summary, table, csv file, overlays zip)."""
    return client.predict([handle_file(str(p)) for p in files], model, api_name="/batch")


@pytest.mark.parametrize("model", ["resnet14", "with-heads"])
def test_batch_scores_every_photo_into_a_table_a_csv_and_a_zip_of_overlays(app, photos, tmp_path, model):
    bad = broken_images(tmp_path)["truncated"]
    summary, table, csv_button, zip_button = run_batch(Client(app.url, verbose=False), [*photos, bad], model)
    csv_path, zip_path = csv_button["value"], zip_button["value"]  # the download buttons, now offered
    assert csv_button["visible"] and zip_button["visible"]
    assert "7 of 8" in summary and "truncated.jpg" in summary
    header = table["headers"]
    assert header[:2] == ["file", "verdict"] and all(f"p({c.replace('_', ' ')})" in header for c in CLASSES)
    assert {"CVA (degrees)", "side view"} <= set(header)
    rows = {r[0]: dict(zip(header, r)) for r in table["data"]}
    assert set(rows) == {p.name for p in photos} | {bad.name}
    assert rows[bad.name]["verdict"].startswith("error")

    with open(csv_path, newline="") as f:
        records = list(csv.DictReader(f))
    assert [r["file"] for r in records] == [p.name for p in photos] + [bad.name]
    for r in records[:-1]:
        assert r["label"] in CLASSES
        assert sum(float(r[f"p_{c}"]) for c in CLASSES) == pytest.approx(1.0, abs=1e-4)
        if model == "with-heads":
            assert float(r["cva_deg"]) == float(r["cva_deg"]) and r["side_view"] in ("True", "False")
        else:
            assert r["cva_deg"] == "" and r["side_view"] == ""
    assert records[-1]["error"] and "truncated.jpg" in records[-1]["error"]

    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
        assert names == sorted(f"{p.stem}_cam.jpg" for p in photos)
        first = Image.open(io.BytesIO(zf.read("desk_3_cam.jpg")))
        assert first.size == Image.open(photos[3]).size


def test_batch_without_photos_asks_for_them(app):
    offset = len(app.log())
    with pytest.raises(AppError, match="photos"):
        Client(app.url, verbose=False).predict([], "resnet14", api_name="/batch")
    assert "Traceback" not in app.log()[offset:]


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_batch_in_the_browser_shows_the_table_and_offers_both_downloads(browser, app, photos, tmp_path, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    open_tab(page, "Batch")
    pick(page, "batch-model", "with-heads (bundled)")
    page.locator("#batch-files input[type=file]").set_input_files([str(p) for p in photos])
    page.locator("#batch-run").click()
    table = page.locator("#batch-table")
    expect(table).to_contain_text("desk_6.jpg", timeout=60_000)
    expect(page.locator("#batch-summary")).to_contain_text("7 of 7")
    for button, suffix in (("#batch-csv", ".csv"), ("#batch-zip", ".zip")):
        with page.expect_download() as info:
            page.locator(button).click()
        saved = tmp_path / f"saved{suffix}"
        info.value.save_as(saved)
        assert saved.stat().st_size > 0 and info.value.suggested_filename.endswith(suffix)
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    shot(page, f"batch-{viewport}")
    page.context.close()
