"""Predict and Compare tabs: the real app on localhost, through its API (gradio_client) and in chromium.

Browser tests run at desktop (1280x900) and phone (390x844) sizes and save screenshots under
$POSTURE_TEST_OUTPUT/app/ (default test-output/app/).
"""

from __future__ import annotations

import ast
import base64
import csv
import re
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import (
    CLASSES,
    broken_images,
    REPO,
    heads_checkpoint,
    make_dataset,
    open_page,
    open_tab,
    pick,
    pretty,
    running_app,
    save_exif_rotated,
    shot,
    side_photo,
    toasts,
    zip_folder,
)
from conftest import copy_checkpoints
from PIL import Image

from posture.models import list_models

pytestmark = [pytest.mark.app]
gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

# Drop a file on a Gradio upload area the way a desktop drag-and-drop does (Playwright has no native drop).
DROP_JS = """async ([selector, name, b64, mime]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const transfer = new DataTransfer();
  transfer.items.add(new File([bytes], name, {type: mime}));
  const target = document.querySelector(selector);
  for (const type of ["dragenter", "dragover", "drop"]) {
    target.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: transfer}));
  }
}"""


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """An examples folder: an upright photo and an EXIF-rotated portrait, captioned by labels.csv."""
    folder = tmp_path_factory.mktemp("examples")
    side_photo(120, 90, seed=1).save(folder / "a_upright.png")
    save_exif_rotated(side_photo(120, 90, seed=2, forward=True), folder / "b_portrait.jpg")
    with (folder / "labels.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "label", "cva_deg", "note"])
        writer.writerow(["a_upright.png", "normal", "58.4", ""])
        writer.writerow(["b_portrait.jpg", "turtle_neck", "41.2", "phone portrait"])
    return folder


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, checkpoint_dir) -> Path:
    """The tiny test checkpoints (no extra outputs) plus one whose model also gives CVA and side view."""
    folder = tmp_path_factory.mktemp("predict-checkpoints")
    copy_checkpoints(checkpoint_dir, folder)
    heads_checkpoint(folder / "with-heads.safetensors")
    heads_checkpoint(folder / "nobody.safetensors", side_view_bias=-20.0)  # never sees a side view
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoints, examples):
    """The app, started once for this module."""
    with running_app(tmp_path_factory.mktemp("app-predict"), checkpoints, examples) as running:
        yield running


@pytest.fixture
def portrait(tmp_path) -> Path:
    """A JPEG stored landscape (96x72) with EXIF orientation 6: upright it is 72x96."""
    return save_exif_rotated(side_photo(96, 72), tmp_path / "portrait.jpg")


def confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


def predict(client: Client, photo, model: str = "resnet14", layer: str | None = None, alpha: float = 0.5):
    """/predict -> (verdict, probabilities, overlay, caption, explained class, layer, details)."""
    photo = handle_file(str(photo)) if photo is not None else None
    return client.predict(photo, model, layer, alpha, api_name="/predict")


def drop(page, selector: str, path: Path, mime: str) -> None:
    page.locator(selector).first.wait_for(state="attached")
    page.evaluate(DROP_JS, [selector, path.name, base64.b64encode(path.read_bytes()).decode(), mime])


def log_since(app, offset: int) -> str:
    return app.log()[offset:]


# ---------------------------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list_models())
def test_predict_returns_verdict_probabilities_and_an_upright_overlay(client, portrait, model):
    verdict, probabilities, overlay, caption, target, layer, details = predict(client, portrait, model)
    probs = confidences(probabilities)
    assert sorted(probs) == sorted(pretty(c) for c in CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    top = max(probs, key=probs.get)
    assert top in verdict and "CVA" not in verdict  # no CVA head: no estimate claimed
    assert details["label"] == top.replace(" ", "_") and details["cva_deg"] is None and details["side_view"] is None
    assert target["value"] == details["label"]  # the class explained by default is the predicted one
    assert layer["value"] == details["layer"] and layer["value"] in [c[1] for c in layer["choices"]]
    assert Image.open(overlay).size == (72, 96)  # EXIF applied: same size as the upright photo
    assert f"`{model}`" in caption and " ms" in caption


def test_a_model_with_cva_and_side_view_heads_shows_both(client, portrait):
    verdict, probabilities, _, _, _, _, details = predict(client, portrait, "with-heads")
    assert isinstance(details["cva_deg"], float) and isinstance(details["side_view"], bool)
    if details["side_view"]:
        assert f"CVA about {round(details['cva_deg'])} degrees; below 50 counts as turtle neck" in verdict
    else:
        assert "No side view of a person found" in verdict
    assert sum(confidences(probabilities).values()) == pytest.approx(1.0, abs=1e-5)  # still available


def test_a_photo_without_a_side_view_replaces_the_verdict(client, tmp_path):
    photo = tmp_path / "p.png"
    side_photo().save(photo)
    verdict, probabilities, *_, details = predict(client, photo, "nobody")
    assert details["side_view"] is False
    assert verdict.lstrip("# ").startswith("No side view of a person found")
    assert "CVA about" not in verdict  # no angle claimed for a picture without a side view
    assert sorted(confidences(probabilities)) == sorted(pretty(c) for c in CLASSES)  # still available


@pytest.mark.parametrize("layer", ["layer1", "layer2"])
def test_the_explained_layer_can_be_chosen(client, portrait, layer):
    *_, caption_default, _, _, default = predict(client, portrait, "resnet14")
    _, _, overlay, caption, _, chosen, details = predict(client, portrait, "resnet14", layer=layer)
    assert details["layer"] == layer and chosen["value"] == layer
    assert layer in caption
    assert Image.open(overlay).size == (72, 96)


def test_an_unknown_layer_is_a_clear_error(client, portrait):
    with pytest.raises(AppError, match="no layer 'layer9'"):
        predict(client, portrait, "resnet14", layer="layer9")


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("P", ".gif"), ("RGBA", ".png"), ("CMYK", ".jpg"),
                                         ("I;16", ".png"), ("RGB", ".webp")])
def test_predict_accepts_any_image_mode(client, tmp_path, mode, suffix):
    photo = tmp_path / f"photo{suffix}"
    image = side_photo(64, 48)
    (image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)).save(photo)
    _, probabilities, overlay, *_ = predict(client, photo)
    assert sum(confidences(probabilities).values()) == pytest.approx(1.0, abs=1e-5)
    assert Image.open(overlay).size == (64, 48)


@pytest.mark.parametrize("cls", CLASSES)
def test_explain_any_class_on_the_same_photo(client, portrait, cls):
    overlay, caption, _ = client.predict(handle_file(str(portrait)), "resnet14", cls, None, 0.6, api_name="/explain")
    assert Image.open(overlay).size == (72, 96)
    assert pretty(cls) in caption


def test_explain_unknown_class_is_a_clear_error(client, portrait):
    with pytest.raises(AppError, match="unknown class|Unknown class"):
        client.predict(handle_file(str(portrait)), "resnet14", "slouch", None, 0.5, api_name="/explain")


def test_opacity_reblends_the_cached_heatmap(client, tmp_path):
    photo = tmp_path / "photo.png"
    side_photo(80, 60, seed=3).save(photo)
    predict(client, photo, "resnet18")
    plain, _ = client.predict(0.0, None, api_name="/reblend")
    strong, _ = client.predict(1.0, None, api_name="/reblend")
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    plain = np.asarray(Image.open(plain).convert("RGB"), dtype=np.float32)
    strong = np.asarray(Image.open(strong).convert("RGB"), dtype=np.float32)
    assert np.abs(plain - original).mean() < 8  # opacity 0: the photo itself (lossy WebP aside)
    assert np.abs(strong - original).mean() > 20  # opacity 1: the heatmap only


def test_compare_two_models_side_by_side(client, tmp_path):
    photo = tmp_path / "photo.png"
    side_photo(80, 60, seed=4, forward=True).save(photo)
    out = client.predict(handle_file(str(photo)), "resnet18", "resnet14", 0.5, api_name="/compare")
    assert len(out) == 8
    for verdict, probabilities, overlay, caption, model in ((*out[:4], "resnet18"), (*out[4:], "resnet14")):
        assert sum(confidences(probabilities).values()) == pytest.approx(1.0, abs=1e-5)
        assert Image.open(overlay).size == (80, 60)
        assert f"`{model}`" in caption and max(confidences(probabilities).items(), key=lambda kv: kv[1])[0] in verdict


def test_compare_opacity_reblends_both_sides_without_a_model_run(client, tmp_path):
    photo = tmp_path / "photo.png"
    side_photo(80, 60, seed=6).save(photo)
    first = client.predict(handle_file(str(photo)), "resnet18", "resnet14", 0.5, api_name="/compare")
    plain_a, plain_b = client.predict(0.0, api_name="/compare_reblend")
    original = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float32)
    for plain in (plain_a, plain_b):
        assert np.abs(np.asarray(Image.open(plain).convert("RGB"), dtype=np.float32) - original).mean() < 8
    assert Path(first[2]).read_bytes() != Path(plain_a).read_bytes()


def test_a_text_file_is_a_clear_error_and_the_server_keeps_answering(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo")
    with pytest.raises(AppError) as err:
        predict(client, text)
    message = str(err.value)
    assert "not an image" in message and "notes.txt" in message
    assert "Traceback" not in message and "/gradio/" not in message  # no server paths or stack
    photo = tmp_path / "ok.png"
    side_photo().save(photo)
    assert predict(client, photo)[6]["label"] in CLASSES


@pytest.mark.parametrize("kind", ["empty", "truncated", "bomb"])
def test_broken_images_are_named_in_our_own_words(client, tmp_path, kind):
    path = broken_images(tmp_path)[kind]
    with pytest.raises(AppError) as err:
        predict(client, path)
    message = str(err.value)
    assert path.name in message
    for pillow_words in ("DOS attack", "bytes not processed", "decompression bomb DOS", "Traceback", "/gradio/"):
        assert pillow_words not in message


def test_ordinary_mistakes_leave_no_traceback_in_the_server_log(app, client, tmp_path):
    offset = len(app.log())
    with pytest.raises(ValidationError, match="photo: Add a side-view photo"):  # checked before queueing
        predict(client, None)
    with pytest.raises(ValidationError, match="photo: Add a side-view photo"):
        client.predict(None, "resnet18", "resnet14", 0.5, api_name="/compare")
    with pytest.raises(AppError, match="Unknown model"):
        predict(client, side_photo().save(tmp_path / "x.png") or tmp_path / "x.png", "resnet99")
    assert "Traceback" not in log_since(app, offset)


def test_unknown_model_is_refused(client, portrait):
    with pytest.raises(AppError, match="Unknown model"):
        predict(client, portrait, "resnet99")


def test_a_result_file_already_handed_out_is_never_rewritten(app, tmp_path):
    """Another request with the same result must not re-write a file a visitor may still be downloading.

    (Gradio caches a returned PIL image under the hash of its bytes and rewrites that file in place
    for every identical result: a download in flight then comes up short.) The cached copy is
    marked here, standing for a download in progress: a rewrite would erase the mark.
    """
    photo = tmp_path / "same.png"
    side_photo(80, 60, seed=11).save(photo)
    overlay = predict(Client(app.url, verbose=False), photo)[2]
    served = Path(overlay).read_bytes()
    handed_out = [p for p in (app.workdir / "gradio").rglob("*") if p.is_file() and p.read_bytes() == served]
    assert handed_out  # the copy Gradio serves lies in its cache
    for path in handed_out:
        path.write_bytes(served + b"in flight")
    for _ in range(2):  # new sessions, same photo and model: byte-identical results
        assert Path(predict(Client(app.url, verbose=False), photo)[2]).read_bytes() == served
    assert all(path.read_bytes() == served + b"in flight" for path in handed_out)


def test_concurrent_visitors_with_the_same_photo_all_get_complete_overlays(app, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    photo = tmp_path / "shared.png"
    side_photo(320, 240, seed=12).save(photo)

    def visitor(_: int) -> list[bytes]:
        client = Client(app.url, verbose=False)
        return [Path(predict(client, photo)[2]).read_bytes() for _ in range(3)]

    with ThreadPoolExecutor(6) as pool:
        results = [data for batch in pool.map(visitor, range(6)) for data in batch]
    assert len(results) == 18
    assert len(set(results)) == 1 and Image.open(__import__("io").BytesIO(results[0])).size == (320, 240)


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------


def overlay_src(page, elem_id: str = "overlay") -> str:
    img = page.locator(f"#{elem_id} img")
    from playwright.sync_api import expect

    expect(img).to_be_visible()
    return img.get_attribute("src") or ""


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_predict_an_example_then_change_opacity_class_and_layer(browser, app, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    gallery = page.locator("#examples")
    expect(gallery).to_contain_text("turtle neck, CVA 41°, phone portrait")  # captions from labels.csv
    expect(gallery).to_contain_text("normal, CVA 58°")
    gallery.locator("button", has_text="phone portrait").first.click()
    verdict = page.locator("#verdict")
    expect(verdict).to_contain_text(re.compile("normal|turtle neck"))
    expect(verdict).not_to_contain_text("_")  # one spelling of the class everywhere
    expect(page.locator("#probabilities")).not_to_contain_text("turtle_neck")
    first = overlay_src(page)
    size = page.locator("#overlay img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [90, 120]  # the portrait, upright
    scale = page.locator("#colour-scale")
    expect(scale).to_be_visible()
    expect(scale).to_contain_text("low")
    expect(scale).to_contain_text("high")
    expect(page.locator("#caption")).to_contain_text("where the model looked")
    shot(page, f"predict-{viewport}")

    page.locator("#opacity input[type=range]").fill("0.9")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", first)
    blended = overlay_src(page)
    predicted = page.locator("#verdict h2").inner_text().strip().lower()
    other = next(c for c in CLASSES if pretty(c) != predicted)
    pick(page, "explain-class", pretty(other))
    expect(page.locator("#caption")).to_contain_text(f"looked for {pretty(other)}")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", blended)
    explained = overlay_src(page)
    pick(page, "explain-layer", "layer1")
    expect(page.locator("#caption")).to_contain_text("layer1")
    expect(page.locator("#overlay img")).not_to_have_attribute("src", explained)
    shot(page, f"predict-explained-{viewport}")
    page.context.close()


@pytest.mark.browser
def test_a_model_with_heads_shows_the_cva_estimate_in_the_page(browser, app, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    pick(page, "predict-model", "with-heads (bundled)")
    photo = tmp_path / "side.png"
    side_photo(100, 80, seed=5).save(photo)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    expect(page.locator("#verdict")).to_contain_text(re.compile("CVA about \\d+ degrees|No side view of a person"))
    shot(page, "predict-with-heads-desktop")
    page.context.close()


@pytest.mark.browser
def test_a_broken_file_after_a_good_prediction_clears_the_results_with_one_message(browser, app, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    good = tmp_path / "good.png"
    side_photo(120, 90, seed=3).save(good)
    for kind, broken in broken_images(tmp_path).items():
        drop(page, "#photo button.upload-container", good, "image/png")
        expect(page.locator("#verdict")).to_contain_text(re.compile("normal|turtle neck"))
        expect(page.locator("#overlay img")).to_be_visible()
        drop(page, "#photo button.upload-container", broken, "image/png" if kind == "bomb" else "image/jpeg")
        toast = toasts(page).first
        expect(toast).to_contain_text(broken.name)
        expect(page.locator("#verdict")).not_to_contain_text(re.compile("normal|turtle neck"))
        expect(page.locator("#overlay img")).to_have_count(0)
        expect(page.locator("#probabilities")).not_to_contain_text("%")
        page.wait_for_timeout(800)  # a second call would have answered by now
        assert toasts(page).count() == 1
        expect(toast).not_to_contain_text("(2)")
        assert page.locator("#predict-results").filter(has_text="Error").count() == 0  # no stale error badges
        expect(page.locator("#photo img")).to_have_count(0)  # the unusable file makes room for the next one
        shot(page, f"predict-broken-{kind}-desktop", full_page=False)
        toast.locator("xpath=..").locator("button").first.click()
        expect(toasts(page)).to_have_count(0)
    page.context.close()


@pytest.mark.browser
def test_analyse_without_a_photo_asks_for_one_and_marks_nothing_as_failed(browser, app):
    from playwright.sync_api import expect

    page = open_page(browser, app.url)
    page.locator("#analyse").click()
    expect(page.get_by_text(re.compile("Add a side-view photo"))).to_be_visible()
    assert page.locator("#verdict, #probabilities, #overlay").filter(has_text="Error").count() == 0
    open_tab(page, "Compare")
    page.locator("#compare-button").click()
    expect(page.get_by_text(re.compile("Add a side-view photo")).last).to_be_visible()
    assert page.locator("#compare-results").filter(has_text="Error").count() == 0
    shot(page, "compare-no-photo-desktop", full_page=False)
    page.context.close()


@pytest.mark.browser
@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_compare_runs_on_upload_and_its_opacity_reblends(browser, app, tmp_path, viewport):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, viewport)
    photo = tmp_path / "side.png"
    side_photo(100, 80, seed=5).save(photo)
    open_tab(page, "Compare")
    page.locator("#compare-photo input[type=file]").set_input_files(str(photo))  # no button press
    for elem in ("verdict-a", "verdict-b"):
        expect(page.locator(f"#{elem}")).to_contain_text(re.compile("normal|turtle neck"))
    before = [overlay_src(page, "overlay-a"), overlay_src(page, "overlay-b")]
    page.locator("#compare-opacity input[type=range]").fill("0.9")
    expect(page.locator("#overlay-a img")).not_to_have_attribute("src", before[0])
    expect(page.locator("#overlay-b img")).not_to_have_attribute("src", before[1])
    shot(page, f"compare-{viewport}")
    page.context.close()


@pytest.mark.browser
def test_on_a_phone_the_verdict_follows_the_photo_within_a_screen(browser, app, tmp_path):
    from playwright.sync_api import expect

    page = open_page(browser, app.url, "phone")
    photo = tmp_path / "side.png"
    side_photo(100, 80, seed=5).save(photo)
    page.locator("#photo input[type=file]").set_input_files(str(photo))
    expect(page.locator("#verdict")).to_contain_text(re.compile("normal|turtle neck"))
    photo_box = page.locator("#photo").bounding_box()
    verdict_box = page.locator("#verdict").bounding_box()
    assert verdict_box["y"] - (photo_box["y"] + photo_box["height"]) < 400  # not two screens below
    examples_box = page.locator("#examples").bounding_box()
    assert examples_box["y"] > verdict_box["y"]  # the examples come after the result
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing overflows sideways
    shot(page, "predict-phone-result")
    page.context.close()


def test_the_readme_client_example_runs_as_written(app, tmp_path, monkeypatch):
    """The README's gradio_client walk-through, run against this app: predict, explain, compare, check, train."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("from gradio_client import Client, handle_file")[1].split("```")[0]
    code = "from gradio_client import Client, handle_file" + block.replace("http://127.0.0.1:7860", app.url)
    (tmp_path / "examples").mkdir()
    shutil.copy(REPO / "examples" / "turtle_neck_cva35_flat.jpg", tmp_path / "examples")
    zip_folder(make_dataset(tmp_path / "my_dataset"), tmp_path / "my_dataset.zip")
    monkeypatch.chdir(tmp_path)  # the example's relative paths
    printed = StringIO()
    with redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = [line for line in printed.getvalue().splitlines() if not line.startswith("Loaded as API")]
    assert lines[0].split()[0] in CLASSES  # the label the details give
    assert set(ast.literal_eval(lines[1])) == {pretty(c) for c in CLASSES}  # the probabilities, as the app shows them
    assert lines[-1] == "Training finished.", lines[2:]  # the live status lines, up to the end of the run
