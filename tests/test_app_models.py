"""Models tab: the models table, adding a checkpoint, renaming, deleting and downloading your own models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_fixtures import CLASSES, open_page, open_tab, running_app, shot, side_photo, toasts

from posture.checkpoints import ModelInfo, read_info, save_checkpoint
from posture.models import build_model, list_models

pytestmark = [pytest.mark.app]
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoint_dir):
    with running_app(tmp_path_factory.mktemp("app-models"), checkpoint_dir) as running:
        yield running


# How many lines an element's text takes on screen.
LINES = """e => { const range = document.createRange(); range.selectNodeContents(e);
  return new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top))).size; }"""


def table_rows(client: Client) -> dict[str, dict]:
    """The session's models as the API gives them (the Models tab's JSON), by name."""
    *_, records = client.predict(api_name="/models")
    return {r["name"]: r for r in records}


def own_checkpoint(path: Path, classes=("upright", "slouch", "lying")) -> Path:
    info = ModelInfo(arch="resnet14", class_names=list(classes), input_size=64,
                     metrics={"val": {"accuracy": 0.875, "roc_auc": 0.9, "n": 16}})
    return save_checkpoint(path, build_model("resnet14", len(classes)), info)


def photo_file(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    side_photo().save(path)
    return path


def test_models_table_shows_checkpoint_metadata(client):
    rows = table_rows(client)
    assert set(rows) == set(list_models())
    for arch, row in rows.items():
        assert row["arch"] == arch and row["input_size"] == 64 and row["origin"] == "bundled"
        assert row["class_names"] == CLASSES and row["heads"] == [] and "path" not in row


def test_an_uploaded_checkpoint_belongs_to_its_session_only(app, tmp_path):
    path = own_checkpoint(tmp_path / "slouch-detector.safetensors")
    photo = photo_file(tmp_path)
    mine, other = Client(app.url, verbose=False), Client(app.url, verbose=False)

    message, *_ = mine.predict(handle_file(str(path)), api_name="/upload_model")
    assert "slouch-detector" in message
    _, probabilities, *_ = mine.predict(handle_file(str(photo)), "slouch-detector", None, 0.5, api_name="/predict")
    assert sorted(c["label"] for c in probabilities["confidences"]) == ["lying", "slouch", "upright"]
    row = table_rows(mine)["slouch-detector"]
    assert row["origin"].startswith("yours") and "val (n=16): accuracy 0.875" in row["metrics_text"]

    assert "slouch-detector" not in table_rows(other)
    with pytest.raises(AppError, match="Unknown model"):
        other.predict(handle_file(str(photo)), "slouch-detector", None, 0.5, api_name="/predict")


def test_rename_and_delete_your_own_models_but_not_bundled_ones(client, tmp_path):
    photo = photo_file(tmp_path)
    client.predict(handle_file(str(own_checkpoint(tmp_path / "mine.safetensors"))), api_name="/upload_model")
    message, *_ = client.predict("mine", "office chair", api_name="/rename_model")
    assert "office-chair" in message or "office chair" in message
    name = "office-chair" if "office-chair" in message else "office chair"
    rows = table_rows(client)
    assert name in rows and "mine" not in rows
    client.predict(handle_file(str(photo)), name, None, 0.5, api_name="/predict")  # usable under its new name
    with pytest.raises(AppError, match="already"):
        client.predict(name, "resnet14", api_name="/rename_model")
    for call in (("resnet14", "mine-now", "/rename_model"), ("resnet18", "/delete_model")):
        with pytest.raises(AppError, match="bundled|not in the list of choices"):  # only your own are offered
            client.predict(*call[:-1], api_name=call[-1])
    assert {"resnet14", "resnet18"} <= set(table_rows(client))

    message, *_ = client.predict(name, api_name="/delete_model")
    assert "Deleted" in message
    assert name not in table_rows(client)
    with pytest.raises(AppError, match="Unknown model"):
        client.predict(handle_file(str(photo)), name, None, 0.5, api_name="/predict")


def _onnx_logits(path: Path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"image": x.numpy()})[0]


def test_any_model_downloads_as_its_checkpoint_and_as_onnx(app, client, tmp_path, checkpoint_dir):
    import json

    import numpy as np
    import onnx
    import torch

    from posture.checkpoints import load_checkpoint

    update, message = client.predict("resnet14", api_name="/export_model")
    files = update["value"]  # the File component's update: shown, with both files
    paths = {Path(f).suffix: Path(f) for f in files}
    assert set(paths) == {".safetensors", ".onnx"} and "as ONNX" in message and "logits" in message
    assert paths[".safetensors"].read_bytes() == (checkpoint_dir / "resnet14.safetensors").read_bytes()
    meta = {p.key: p.value for p in onnx.load(str(paths[".onnx"])).metadata_props}
    assert json.loads(meta["class_names"]) == CLASSES and meta["input_size"] == "64"
    model, _ = load_checkpoint(paths[".safetensors"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x).numpy()
    assert np.abs(_onnx_logits(paths[".onnx"], x) - want).max() <= 1e-4

    # the same model again is served from the export already made, not exported anew
    exported = list(app.workdir.glob("**/downloads/resnet14.onnx"))
    assert len(exported) == 1
    made = exported[0].stat().st_mtime_ns
    again = client.predict("resnet14", api_name="/export_model")[0]["value"]
    assert sorted(Path(f).name for f in again) == ["resnet14.onnx", "resnet14.safetensors"]
    assert exported[0].stat().st_mtime_ns == made

    # your own model too, under its name
    client.predict(handle_file(str(own_checkpoint(tmp_path / "slouchy.safetensors"))), api_name="/upload_model")
    files = client.predict("slouchy", api_name="/export_model")[0]["value"]
    assert sorted(Path(f).name for f in files) == ["slouchy.onnx", "slouchy.safetensors"]
    assert _onnx_logits(next(Path(f) for f in files if f.endswith(".onnx")), x).shape == (2, 3)
    assert not exported[0].exists()  # only the latest export is kept
    with pytest.raises(AppError, match="not in the list of choices|Unknown model"):
        client.predict("nobody", api_name="/export_model")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x10" + b"\x00" * 7 + b"{}" * 8])
def test_anything_but_a_posture_checkpoint_is_refused(client, tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(AppError, match="checkpoint|safetensors"):
        client.predict(handle_file(str(path)), api_name="/upload_model")


def test_a_plain_safetensors_file_is_refused_with_the_library_message(client, tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(AppError, match="not a posture checkpoint"):
        client.predict(handle_file(str(path)), api_name="/upload_model")


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_a_refused_checkpoint_reads_as_a_clear_message_where_the_upload_is(browser, app, tmp_path, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    bad = tmp_path / "holiday.safetensors"
    bad.write_bytes(b"definitely not a model")
    open_tab(page, "Models")
    expect(page.locator("#models-table")).to_contain_text("resnet18")
    page.locator("#model-upload input[type=file]").set_input_files(str(bad))
    toast = toasts(page).first
    expect(toast).to_contain_text("holiday.safetensors: not a posture checkpoint")
    expect(toast).not_to_contain_text("/gradio/")  # no server paths
    message = page.locator("#model-message")
    expect(message).to_contain_text("holiday.safetensors: not a posture checkpoint")
    expect(message).not_to_have_text(re.compile(r"^\s*Error\s*$"))
    expect(page.locator("#models-table")).to_contain_text("resnet18")  # the table stays
    page.wait_for_timeout(600)  # the toast fades in
    shot(page, f"models-refused-{viewport}", full_page=False)
    page.context.close()


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_the_models_table_reads_whole_and_own_models_can_be_renamed_deleted_and_downloaded(
        browser, app, tmp_path, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    open_tab(page, "Models")
    page.locator("#model-upload input[type=file]").set_input_files(str(own_checkpoint(tmp_path / "desk.safetensors")))
    expect(page.locator("#model-message")).to_contain_text("Added")
    table = page.locator("#models-table")
    expect(table).to_contain_text("desk")
    for header in table.locator("th").all():  # headers on one line, never broken inside a word
        if header.is_visible():  # on a phone each model is a card, its headers beside each value
            assert header.evaluate(LINES) == 1, header.inner_text()
    metrics = table.locator("td", has_text="accuracy 0.875").first
    shot(page, f"models-table-{viewport}")
    assert metrics.evaluate("e => e.scrollWidth <= e.clientWidth + 1")  # the metrics are not cut off
    assert metrics.evaluate(LINES) <= 3
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
    shot(page, f"models-table-{viewport}")

    expect(page.locator("#my-model input")).to_have_value(re.compile("desk"))
    with page.expect_download() as info:
        page.locator("#download-mine").click()
    saved = tmp_path / "saved.safetensors"
    info.value.save_as(saved)
    assert read_info(saved).class_names == ["upright", "slouch", "lying"]

    page.locator("#new-name input, #new-name textarea").first.fill("standing desk")
    page.locator("#rename").click()
    expect(table).to_contain_text("standing-desk")
    expect(page.locator("#predict-model")).to_be_attached()
    page.locator("#delete").click()
    expect(page.locator("#model-message")).to_contain_text("Deleted")
    expect(table).not_to_contain_text("standing-desk")
    page.context.close()
