"""The app in a real browser (Playwright + Debian chromium) against the real app on localhost.

Screenshots go to $POSTURE_TEST_OUTPUT/app/ when set (tests/run.sh sets it), else to each
test's pytest tmp folder (their paths are printed);
with POSTURE_README_SCREENSHOT=1 the Predict tab is also saved as docs/screenshot.png.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

import pytest
from app_fixtures import CLASSES, REPO, make_dataset, running_app, save_exif_rotated, side_photo, zip_folder

from posture.checkpoints import read_info

sync_api = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Page, expect  # noqa: E402

CHROMIUM = os.environ.get("POSTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """An examples folder with one upright and one EXIF-rotated photo."""
    folder = tmp_path_factory.mktemp("examples")
    side_photo(120, 90, seed=1).save(folder / "a_upright.png")
    save_exif_rotated(side_photo(120, 90, seed=2, forward=True), folder / "b_portrait.jpg")
    return folder


@pytest.fixture(scope="module")
def app_run(tmp_path_factory, checkpoint_dir, examples):
    """The app, started once for this module; yields (url, its work folder)."""
    work = tmp_path_factory.mktemp("app-browser")
    with running_app(work, checkpoint_dir, examples) as url:
        yield url, work


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_run) -> Page:
    """A fresh browser context (a new visitor) on the app's page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(app_run[0])
    expect(pg.get_by_role("tab", name="Predict")).to_be_visible()
    yield pg
    context.close()


def shot(page: Page, tmp_path: Path, name: str, full_page: bool = True) -> Path:
    """Screenshot into $POSTURE_TEST_OUTPUT/app/ (kept by CI) when set, else the test's tmp folder."""
    out = os.environ.get("POSTURE_TEST_OUTPUT")
    folder = Path(out) / "app" if out else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def pick(page: Page, dropdown_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown by its visible text."""
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def overlay_src(page: Page, elem_id: str = "overlay") -> str:
    img = page.locator(f"#{elem_id} img")
    expect(img).to_be_visible()
    return img.get_attribute("src") or ""


def test_predict_an_example_then_change_opacity_and_explained_class(page, tmp_path):
    page.get_by_text("Examples (click one)").wait_for()
    examples = page.locator("#photo").locator("xpath=ancestor::div[contains(@class,'column')][1]")
    examples.locator("img").last.click()  # the last example: the EXIF-rotated portrait
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text(re.compile("|".join(CLASSES)))
    first = overlay_src(page)
    expect(page.locator("#caption")).to_contain_text("Heatmap")
    size = page.locator("#overlay img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [90, 120]  # the portrait, upright
    shot(page, tmp_path, "predict")

    page.locator("#opacity input[type=range]").fill("0.9")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", first)
    blended = overlay_src(page)

    predicted = verdict.locator("h2, .output-class").first.inner_text().strip()
    other = next(c for c in CLASSES if c != predicted).replace("_", " ")
    pick(page, "explain-class", other)
    expect(page.locator("#caption")).to_contain_text(f"looked for {other}")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", blended)
    shot(page, tmp_path, "predict-explain-other-class")


def test_compare_two_models(page, tmp_path):
    photo = tmp_path / "side.png"
    side_photo(100, 80, seed=5).save(photo)
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-photo input[type=file]").set_input_files(str(photo))
    page.locator("#compare-button").click()
    for elem in ("verdict-a", "verdict-b"):
        expect(page.locator(f"#{elem}")).to_contain_text(re.compile("|".join(CLASSES)))
    expect(page.locator("text=resnet18").first).to_be_visible()
    shot(page, tmp_path, "compare")


def test_upload_a_zip_train_one_epoch_use_and_download(page, tmp_path):
    data = make_dataset(tmp_path / "my_photos", per_class=6, size=(48, 36))
    archive = zip_folder(data, tmp_path / "my_photos.zip")
    page.get_by_role("tab", name="Retrain").click()
    page.locator("#dataset-zip input[type=file]").set_input_files(str(archive))
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("12 images")
    expect(page.locator("#skipped")).to_contain_text("notes.txt")
    expect(page.locator("#thumbnails img")).to_have_count(8)

    pick(page, "arch", "resnet14")
    page.get_by_label("scratch").check()
    page.locator("#epochs input[type=number]").fill("1")
    page.locator("#epochs input[type=number]").press("Enter")
    pick(page, "img-size", "64")
    page.locator("#train").click()
    expect(page.locator("#train-status")).to_contain_text("Training finished.", timeout=120_000)
    expect(page.locator("#train-results")).to_contain_text("Validation accuracy")
    expect(page.locator("#per-class")).to_contain_text("turtle_neck")
    expect(page.locator("#confusion")).to_contain_text("predicted normal")
    shot(page, tmp_path, "retrain-done")

    with page.expect_download() as info:
        page.locator("#download-model").click()
    saved = tmp_path / "downloaded.safetensors"
    info.value.save_as(saved)
    assert info.value.suggested_filename.endswith(".safetensors")
    assert read_info(saved).class_names == CLASSES

    page.locator("#use-in-predict").click()
    expect(page.locator("#predict-model input")).to_have_value(re.compile("resnet14-trained-1"))
    photo = tmp_path / "side.png"
    side_photo(48, 36, seed=9).save(photo)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    expect(page.locator("#caption")).to_contain_text("by resnet14-trained-1")
    shot(page, tmp_path, "predict-with-trained-model")


def test_upload_a_folder_keeps_its_class_subfolders(page, tmp_path):
    data = make_dataset(tmp_path / "folder_upload", per_class=3, size=(32, 32))
    page.get_by_role("tab", name="Retrain").click()
    page.locator("#dataset-folder input[type=file]").set_input_files(str(data))
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("normal: 3 images")
    expect(summary).to_contain_text("turtle_neck: 3 images")
    shot(page, tmp_path, "retrain-folder")


def test_a_bad_checkpoint_upload_reads_as_a_clear_error(page, tmp_path):
    bad = tmp_path / "holiday.safetensors"
    bad.write_bytes(b"definitely not a model")
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("#models-table")).to_contain_text("resnet18")
    page.locator("#model-upload input[type=file]").set_input_files(str(bad))
    toast = page.locator(".toast-body, [data-testid='toast-body']").first
    expect(toast).to_contain_text("holiday.safetensors: not a posture checkpoint")
    expect(toast).not_to_contain_text("/gradio/")  # no server paths
    expect(page.locator("#models-table")).to_contain_text("resnet18")  # the table stays
    page.wait_for_timeout(600)  # the toast fades in
    shot(page, tmp_path, "models-error", full_page=False)


def test_a_session_folder_is_deleted_when_the_visitor_leaves(browser, app_run, tmp_path):
    from posture.checkpoints import ModelInfo, save_checkpoint
    from posture.models import build_model

    url, work = app_run
    ckpt = save_checkpoint(tmp_path / "mine.safetensors", build_model("resnet14", 2),
                           ModelInfo(arch="resnet14", class_names=CLASSES, input_size=64))
    before = set(work.glob("posture-app-*/session-*"))
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.goto(url)
    pg.get_by_role("tab", name="Models").click()
    pg.locator("#model-upload input[type=file]").set_input_files(str(ckpt))
    expect(pg.locator("#model-message")).to_contain_text("Added")
    mine = set(work.glob("posture-app-*/session-*")) - before
    assert len(mine) == 1
    folder = mine.pop()
    assert any(folder.rglob("*.safetensors"))
    context.close()
    deadline = time.monotonic() + 60
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(1)
    assert not folder.exists()


def synthetic_examples(folder: Path, count: int = 4) -> Path:
    """Rendered side views (the bundled models' training distribution) as example photos."""
    from posture.synth.dataset import render_indexed

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        jpeg, info = render_indexed(7, i)
        (folder / f"{info.label}_{i}.jpg").write_bytes(jpeg)
    return folder


def test_readme_screenshot(browser, app_run, tmp_path):
    """The Predict tab after analysing an example; with POSTURE_README_SCREENSHOT=1, saved to docs/.

    For the README it runs the real bundled checkpoints and the repository's examples
    (rendered side views when examples/ is empty); otherwise the tiny test app.
    """
    for_readme = os.environ.get("POSTURE_README_SCREENSHOT") == "1"
    bundled = REPO / "checkpoints"
    with contextlib.ExitStack() as stack:
        url = app_run[0]
        if for_readme and any(bundled.glob("*.safetensors")):
            examples = REPO / "examples"
            if not any(p.suffix.lower() in {".jpg", ".jpeg", ".png"} for p in examples.glob("*")):
                examples = synthetic_examples(tmp_path / "examples")
            url = stack.enter_context(running_app(tmp_path / "app", bundled, examples))
        context = stack.enter_context(contextlib.closing(
            browser.new_context(viewport={"width": 1280, "height": 1000})))
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(url)
        page.get_by_text("Examples (click one)").wait_for()
        examples_block = page.locator("#photo").locator("xpath=ancestor::div[contains(@class,'column')][1]")
        examples_block.locator("img").last.click()
        expect(page.locator("#caption")).to_contain_text("Heatmap")
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_timeout(500)
        path = shot(page, tmp_path, "readme", full_page=False)
        if for_readme:
            (REPO / "docs").mkdir(exist_ok=True)
            page.screenshot(path=str(REPO / "docs" / "screenshot.png"))
    assert path.stat().st_size > 10_000


def test_a_layout_that_cannot_train_is_explained(page, tmp_path):
    flat = tmp_path / "holiday_photos"
    flat.mkdir()
    for i in range(3):
        side_photo(seed=i).save(flat / f"{i}.png")
    page.get_by_role("tab", name="Retrain").click()
    page.locator("#dataset-zip input[type=file]").set_input_files(str(zip_folder(flat, tmp_path / "holiday.zip")))
    toast = page.locator("[data-testid='toast-body']").first
    expect(toast).to_contain_text("at least 2 classes")
    expect(toast).to_contain_text("turtle_neck/")  # the expected layout
    expect(toast).not_to_contain_text("/tmp/")
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("cannot be used for training")
    expect(summary.locator("pre")).to_contain_text("turtle_neck/")  # the layout, laid out
    page.wait_for_timeout(600)  # the toast fades in
    shot(page, tmp_path, "retrain-refused-layout", full_page=False)
