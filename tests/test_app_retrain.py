"""Retrain tab: dataset upload and webcam capture, training, the training slot, cancel and keep.

Through the API (gradio_client) and in chromium at desktop and phone sizes, against the real app.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from app_fixtures import (CLASSES, chromium, make_dataset, open_page, open_tab, pick, rendered_frames,
                          running_app, shot, side_photo, start_webcam, stop_webcam, toasts, write_y4m,
                          zip_folder)

from posture.checkpoints import read_info

pytestmark = [pytest.mark.app]
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

# arch, init, backbone, epochs, lr, batch size, image size, validation share, seed
QUICK = ("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0)
LONG = ("resnet14", "scratch", "full fine-tune", 30, "0.0001", 2, "64", 0.25, 0)


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoint_dir):
    with running_app(tmp_path_factory.mktemp("app-retrain"), checkpoint_dir) as running:
        yield running


@pytest.fixture(scope="module")
def data_zip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    return zip_folder(make_dataset(folder / "my_photos", per_class=6, size=(48, 36)), folder / "my_photos.zip")


@pytest.fixture(scope="module")
def long_zip(tmp_path_factory) -> Path:
    """Enough pictures that 30 epochs at batch size 2 take minutes, and the 6 or more before early
    stopping can end it take long enough: a job to queue behind."""
    folder = tmp_path_factory.mktemp("long")
    return zip_folder(make_dataset(folder / "long", per_class=48, size=(64, 48)), folder / "long.zip")


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> Path:
    return write_y4m(rendered_frames(12), tmp_path_factory.mktemp("camera") / "side-views.y4m")


@pytest.fixture(scope="module")
def browser(camera):
    with chromium(fake_camera=camera) as b:
        yield b


def models_in(client: Client) -> list[str]:
    *_, records = client.predict(api_name="/models")
    return [r["name"] for r in records]


def start_long_job(url: str, archive: Path, epoch_done: bool = False):
    """Another visitor's long training run, going once its first epoch is reported (with
    `epoch_done`, once an epoch has finished, so a cancelled run has a model to keep)."""
    other = Client(url, verbose=False)
    other.predict(handle_file(str(archive)), api_name="/check_zip")
    job = other.submit(*LONG, api_name="/train")
    deadline = time.monotonic() + 120
    going = (lambda text: " · loss " in text) if epoch_done else (lambda text: "Epoch 1/30" in text or "Epoch 2/30" in text)
    while not any(going(str(o[0])) for o in job.outputs()):
        assert time.monotonic() < deadline and not job.done(), job.outputs()
        time.sleep(0.1)
    return other, job


def stop(client: Client, job) -> None:
    client.predict(api_name="/cancel_training")
    job.result(timeout=60)


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------


def _trained_file(outputs) -> Path:
    """The trained model's file, as the /train outputs offer it for download."""
    values = [o.get("value") if isinstance(o, dict) else o for o in outputs]
    return next(Path(v) for v in values if isinstance(v, str) and v.endswith(".safetensors"))


def test_train_from_a_zip_then_use_the_model_in_that_session_only(app, data_zip, tmp_path):
    photo = tmp_path / "photo.png"
    side_photo(48, 36).save(photo)
    mine, other = Client(app.url, verbose=False), Client(app.url, verbose=False)

    summary, thumbs, skipped = mine.predict(handle_file(str(data_zip)), api_name="/check_zip")
    assert "2 classes" in summary and "12 images" in summary and "Ready to train" in summary
    assert {t["caption"].split(" ")[0] for t in thumbs} == set(CLASSES)
    assert skipped["value"]["data"] == [["normal/notes.txt", "not an image (.txt)"]]

    status, curves, results, per_class, confusion, *rest = mine.predict(*QUICK, api_name="/train")
    assert status.startswith("Training finished")
    recipe = read_info(_trained_file(rest)).train_config
    assert recipe["degrade"] == 0.0 and recipe["restyle"] == 0.0 and recipe["closeup"] == 0.0  # the defaults
    assert "train" in curves and "validation" in curves  # the legend names both lines
    assert "Validation accuracy" in results and "resnet14-trained-1" in results
    assert [row[0] for row in per_class["value"]["data"]] == CLASSES
    assert sum(map(sum, (row[1:] for row in confusion["value"]["data"]))) == 4  # 2 of 6 per class

    assert "resnet14-trained-1" in models_in(mine)
    verdict, probabilities, *_ = mine.predict(handle_file(str(photo)), "resnet14-trained-1", None, 0.5,
                                              api_name="/predict")
    assert len(probabilities["confidences"]) == 2
    assert "resnet14-trained-1" not in models_in(other)
    with pytest.raises(AppError, match="Unknown model"):
        other.predict(handle_file(str(photo)), "resnet14-trained-1", None, 0.5, api_name="/predict")
    with pytest.raises(AppError, match="Upload a dataset"):  # the first session's dataset is not shared
        other.predict(*QUICK, api_name="/train")


def test_the_learning_curves_have_a_legend_and_whole_epochs(app, data_zip):
    """Also: the low-quality-captures, drawing-style and close-up shares reach training and are recorded."""
    client = Client(app.url, verbose=False)
    client.predict(handle_file(str(data_zip)), api_name="/check_zip")
    outputs = client.predict("resnet14", "scratch", "automatic", 3, "automatic", 4, "64", 0.34, 0, 0.5, 0.3, 0.2,
                             api_name="/train")
    recipe = read_info(_trained_file(outputs)).train_config
    assert recipe["degrade"] == 0.5 and recipe["restyle"] == 0.3 and recipe["closeup"] == 0.2
    curves = outputs[1]
    curves = curves.split("</svg>")[0]  # the wide layout (a stacked copy follows for phones)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", curves)
    assert "train" in texts and "validation" in texts
    ticks = re.findall(r'<g id="xtick_\d+">.*?<text[^>]*>([^<]*)</text>', curves, flags=re.S)
    assert ticks == ["1", "2", "3"] * 2  # whole epochs, once each, on both charts


def test_a_layout_that_cannot_train_is_refused_with_the_expected_layout(client_factory, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        side_photo(seed=i).save(folder / f"{i}.png")
    with pytest.raises(AppError) as err:
        client_factory().predict(handle_file(str(zip_folder(folder, tmp_path / "flat.zip"))), api_name="/check_zip")
    assert "class" in str(err.value) and "```" not in str(err.value)


@pytest.fixture
def client_factory(app):
    return lambda: Client(app.url, verbose=False)


def test_too_many_epochs_are_refused(app, tmp_path):
    mine = Client(app.url, verbose=False)
    data = make_dataset(tmp_path / "d", per_class=3, size=(32, 32))
    mine.predict(handle_file(str(zip_folder(data, tmp_path / "d.zip"))), api_name="/check_zip")
    with pytest.raises(AppError, match="maximum value 30|At most 30 epochs"):
        mine.predict("resnet14", "scratch", "automatic", 31, "automatic", 4, "64", 0.34, 0, api_name="/train")


def test_train_without_a_dataset_asks_for_one_and_logs_no_traceback(app):
    offset = len(app.log())
    with pytest.raises(AppError, match="Upload a dataset"):
        Client(app.url, verbose=False).predict(*QUICK, api_name="/train")
    assert "Traceback" not in app.log()[offset:]


def test_a_removed_upload_is_no_longer_trained_on(app, data_zip):
    client = Client(app.url, verbose=False)
    summary, *_ = client.predict(handle_file(str(data_zip)), api_name="/check_zip")
    assert "Ready to train" in summary
    summary, thumbs, _ = client.predict(api_name="/remove_upload")
    assert "Ready to train" not in summary and thumbs == []
    with pytest.raises(AppError, match="Upload a dataset"):
        client.predict(*QUICK, api_name="/train")


def test_cancel_keeps_nothing_unless_asked_and_one_training_job_runs_at_a_time(app, long_zip, data_zip):
    first, job = start_long_job(app.url, long_zip, epoch_done=True)
    second = Client(app.url, verbose=False)
    second.predict(handle_file(str(data_zip)), api_name="/check_zip")
    queued = second.submit(*QUICK, api_name="/train")
    deadline = time.monotonic() + 30
    while not any("Waiting" in str(o[0]) for o in queued.outputs()):  # visible, with its place in line
        assert time.monotonic() < deadline and not queued.done(), queued.outputs()
        time.sleep(0.05)
    assert "1 ahead" in str(queued.outputs()[-1][0]) or "next" in str(queued.outputs()[-1][0])

    cancelled_at = time.monotonic()
    assert "Stopping" in first.predict(api_name="/cancel_training")
    final = job.result(timeout=60)
    assert time.monotonic() - cancelled_at < 20  # promptly: within a batch, not after 30 epochs
    assert final[0].startswith("Cancelled"), [str(o[0])[:80] for o in job.outputs()][-8:]
    assert any("Stopping after the current batch" in str(o[0]) for o in job.outputs())  # said in the status
    assert "resnet14-trained-1" not in models_in(first)  # not kept without asking
    message, *_ = first.predict(api_name="/keep_cancelled")
    assert "resnet14-trained-1" in message
    *_, records = first.predict(api_name="/models")
    kept = {r["name"]: r for r in records}["resnet14-trained-1"]
    assert "val: accuracy" in kept["metrics_text"]  # the validation accuracy shown during training
    assert queued.result(timeout=120)[0].startswith("Training finished")


def test_cancel_while_waiting_for_the_slot_cancels_that_job(app, long_zip, data_zip):
    first, job = start_long_job(app.url, long_zip)
    try:
        second = Client(app.url, verbose=False)
        second.predict(handle_file(str(data_zip)), api_name="/check_zip")
        queued = second.submit(*QUICK, api_name="/train")
        deadline = time.monotonic() + 30
        while not any("Waiting" in str(o[0]) for o in queued.outputs()):
            assert time.monotonic() < deadline and not queued.done(), queued.outputs()
            time.sleep(0.05)
        reply = second.predict(api_name="/cancel_training")
        assert "Nothing is training" not in reply
        final = queued.result(timeout=30)
        assert final[0].startswith("Cancelled before it started")
        assert not job.done()  # the other visitor's run goes on
        assert "resnet14-trained-1" not in models_in(second)
    finally:
        stop(first, job)


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------


def set_epochs(page, n: int) -> None:
    box = page.locator("#epochs input[type=number]")
    box.fill(str(n))
    box.press("Enter")


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_upload_a_zip_train_use_and_download(browser, app, data_zip, tmp_path, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    open_tab(page, "Retrain")
    expect(page.locator("#cancel")).to_be_hidden()  # nothing to cancel yet
    layout = page.locator("#dataset-layout")
    expect(layout).to_be_visible()
    assert layout.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # the layout fits the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    page.locator("#dataset-zip input[type=file]").set_input_files(str(data_zip))
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("12 images")
    expect(page.locator("#skipped")).to_contain_text("notes.txt")
    expect(page.locator("#thumbnails img")).to_have_count(8)

    pick(page, "arch", "resnet14")
    page.get_by_label("scratch").check()
    set_epochs(page, 2)
    pick(page, "img-size", "64")
    page.locator("#train").click()
    expect(page.locator("#train-status")).to_contain_text("Training finished", timeout=120_000)
    expect(page.locator("#cancel")).to_be_hidden()
    layout = "tall" if viewport == "phone" else "wide"
    expect(page.locator(f"#curves .curves-{layout} svg")).to_be_visible()  # side by side, or stacked on a phone
    expect(page.locator("#curves")).to_contain_text("validation")
    expect(page.locator("#train-results")).to_contain_text("Validation accuracy")
    expect(page.locator("#per-class")).to_contain_text("turtle_neck")
    expect(page.locator("#confusion")).to_contain_text("predicted normal")
    captions = page.locator("#misclassified .caption-label, #misclassified figcaption")
    for i in range(captions.count()):
        assert "%" in captions.nth(i).inner_text()
        assert captions.nth(i).evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # not cut off
    shot(page, f"retrain-done-{viewport}")

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
    expect(page.locator("#caption")).to_contain_text("resnet14-trained-1")
    page.context.close()


@pytest.mark.browser
def test_upload_a_folder_keeps_its_class_subfolders(browser, app, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    data = make_dataset(tmp_path / "folder_upload", per_class=3, size=(32, 32))
    open_tab(page, "Retrain")
    page.locator("#dataset-folder input[type=file]").set_input_files(str(data))
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("normal: 3 images")
    expect(summary).to_contain_text("turtle_neck: 3 images")
    shot(page, "retrain-folder-desktop")
    page.context.close()


@pytest.mark.browser
def test_removing_the_zip_forgets_its_dataset(browser, app, data_zip):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    open_tab(page, "Retrain")
    page.locator("#dataset-zip input[type=file]").set_input_files(str(data_zip))
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("Ready to train")
    page.locator("#dataset-zip").get_by_role("button", name=re.compile("Clear|Remove", re.I)).first.click()
    expect(summary).not_to_contain_text("Ready to train")
    expect(page.locator("#thumbnails img")).to_have_count(0)
    page.locator("#train").click()
    toast = toasts(page).first
    expect(toast).to_contain_text("Upload a dataset")
    expect(toast).not_to_contain_text("```")  # plain words in a toast, no markup
    page.context.close()


@pytest.mark.browser
def test_a_layout_that_cannot_train_is_explained_without_markup_in_the_toast(browser, app, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    flat = tmp_path / "holiday_photos"
    flat.mkdir()
    for i in range(3):
        side_photo(seed=i).save(flat / f"{i}.png")
    open_tab(page, "Retrain")
    page.locator("#dataset-zip input[type=file]").set_input_files(str(zip_folder(flat, tmp_path / "holiday.zip")))
    toast = toasts(page).first
    expect(toast).to_contain_text("at least 2 classes")
    expect(toast).not_to_contain_text("```")
    expect(toast).not_to_contain_text("/tmp/")
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("cannot be used for training")
    expect(summary.locator("pre")).to_contain_text("turtle_neck/")  # the layout, laid out
    page.wait_for_timeout(600)  # the toast fades in
    shot(page, "retrain-refused-layout-desktop", full_page=False)
    page.context.close()


@pytest.mark.browser
def test_a_job_waiting_for_the_slot_says_so_and_can_be_cancelled(browser, app, long_zip, data_zip):
    from playwright.sync_api import expect

    first, job = start_long_job(app.url, long_zip)
    try:
        page = open_page(browser, app.url)
        open_tab(page, "Retrain")
        page.locator("#dataset-zip input[type=file]").set_input_files(str(data_zip))
        expect(page.locator("#dataset-summary")).to_contain_text("Ready to train")
        page.locator("#train").click()
        status = page.locator("#train-status")
        expect(status).to_contain_text("Waiting", timeout=15_000)
        assert status.bounding_box()["height"] > 10
        cancel = page.locator("#cancel")
        expect(cancel).to_be_visible()
        shot(page, "retrain-waiting-desktop", full_page=False)
        cancel.click()
        expect(status).to_contain_text("Cancelled before it started", timeout=30_000)
        expect(cancel).to_be_hidden()
        page.wait_for_timeout(1500)  # Cancel's own reply, arriving late, must not overwrite the last word
        expect(status).to_contain_text("Cancelled before it started")
        assert not job.done()
        page.context.close()
    finally:
        stop(first, job)


@pytest.mark.browser
def test_a_cancelled_run_is_kept_only_when_asked(browser, app, long_zip):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    open_tab(page, "Retrain")
    page.locator("#dataset-zip input[type=file]").set_input_files(str(long_zip))
    expect(page.locator("#dataset-summary")).to_contain_text("Ready to train")
    pick(page, "arch", "resnet14")
    page.get_by_label("scratch").check()
    page.get_by_label("full fine-tune").check()
    set_epochs(page, 30)
    batch = page.get_by_label("number input for Batch size")
    batch.fill("2")
    batch.press("Enter")
    pick(page, "img-size", "64")
    page.locator("#train").click()
    expect(page.locator("#train-status")).to_contain_text("Epoch 2/30", timeout=120_000)
    page.locator("#cancel").click()
    status = page.locator("#train-status")
    expect(status).to_contain_text("Cancelled", timeout=30_000)
    keep = page.locator("#keep-cancelled")
    expect(keep).to_be_visible()
    svg = page.locator("#curves").inner_html()
    assert "validation" in svg and "train" in svg
    shot(page, "retrain-cancelled-desktop")
    keep.click()
    expect(page.locator("#train-results")).to_contain_text("resnet14-trained-1")
    open_tab(page, "Models")
    row = page.locator("#models-table tr", has_text="resnet14-trained-1")
    expect(row).to_contain_text("accuracy")
    page.context.close()


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_capture_training_pictures_from_the_webcam_into_each_class(browser, app, viewport):
    """The module's browser has a fake camera playing rendered side views."""
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport, camera=True)
    open_tab(page, "Retrain")
    page.get_by_role("tab", name="Webcam").click()
    for cls in CLASSES:
        box = page.locator("#capture-class input")
        box.fill(cls)
        box.press("Enter")
        start_webcam(page, "capture-camera")
        expect(page.locator("#capture-count")).to_contain_text(re.compile(f"{cls}: [3-9]"), timeout=30_000)
        stop_webcam(page, "capture-camera")
    page.locator("#capture-done").click()
    summary = page.locator("#dataset-summary")
    expect(summary).to_contain_text("2 classes")
    expect(summary).to_contain_text("Ready to train")
    shot(page, f"retrain-webcam-{viewport}")
    page.context.close()


def test_a_low_quality_share_outside_0_1_is_refused(app, data_zip):
    client = Client(app.url, verbose=False)
    client.predict(handle_file(str(data_zip)), api_name="/check_zip")
    with pytest.raises(AppError, match="greater than maximum value 1.0"):
        client.predict(*QUICK, 5.0, api_name="/train")
    status, *_ = client.predict(*QUICK, 0.2, api_name="/train")  # the server still serves
    assert status.startswith("Training finished")
