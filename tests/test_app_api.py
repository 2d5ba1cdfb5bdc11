"""The app's HTTP API, driven with gradio_client against the real app on localhost."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from app_fixtures import CLASSES, make_dataset, running_app, save_exif_rotated, side_photo, zip_folder
from PIL import Image

from posture.checkpoints import ModelInfo, save_checkpoint
from posture.models import build_model, list_models

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402


@pytest.fixture(scope="module")
def app_run(tmp_path_factory, checkpoint_dir):
    """The app, started once for this module, on tiny bundled checkpoints."""
    work = tmp_path_factory.mktemp("app-api")
    with running_app(work, checkpoint_dir) as url:
        yield url, work


@pytest.fixture
def client(app_run) -> Client:
    """A fresh client: a new session of its own."""
    return Client(app_run[0], verbose=False)


@pytest.fixture
def portrait(tmp_path) -> Path:
    """A JPEG stored landscape (96x72) with EXIF orientation 6: upright it is 72x96."""
    return save_exif_rotated(side_photo(96, 72), tmp_path / "portrait.jpg")


def confidences(label_output: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label_output["confidences"]}


@pytest.mark.parametrize("model", list_models())
def test_predict_returns_probabilities_and_an_upright_overlay(client, portrait, model):
    verdict, overlay, caption, target = client.predict(handle_file(str(portrait)), model, 0.5,
                                                      api_name="/predict")
    probs = confidences(verdict)
    assert sorted(probs) == sorted(CLASSES)
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert verdict["label"] == max(probs, key=probs.get)
    assert target["value"] == verdict["label"]  # the class explained by default is the predicted one
    assert Image.open(overlay).size == (72, 96)  # EXIF applied: same size as the upright photo
    assert f"`{model}`" in caption and " ms" in caption


@pytest.mark.parametrize("mode,suffix", [("L", ".png"), ("P", ".gif"), ("RGBA", ".png"), ("CMYK", ".jpg"),
                                         ("I;16", ".png"), ("RGB", ".webp")])
def test_predict_accepts_any_image_mode(client, tmp_path, mode, suffix):
    photo = tmp_path / f"photo{suffix}"
    image = side_photo(64, 48)
    (image.convert("L").convert("I;16") if mode == "I;16" else image.convert(mode)).save(photo)
    verdict, overlay, *_ = client.predict(handle_file(str(photo)), "resnet14", 0.5, api_name="/predict")
    assert sum(confidences(verdict).values()) == pytest.approx(1.0, abs=1e-5)
    assert Image.open(overlay).size == (64, 48)


@pytest.mark.parametrize("cls", CLASSES)
def test_explain_any_class_on_the_same_photo(client, portrait, cls):
    overlay, caption = client.predict(handle_file(str(portrait)), "resnet14", cls, 0.6, api_name="/explain")
    assert Image.open(overlay).size == (72, 96)
    assert cls.replace("_", " ") in caption


def test_explain_unknown_class_is_a_clear_error(client, portrait):
    with pytest.raises(AppError, match="unknown class|Unknown class"):
        client.predict(handle_file(str(portrait)), "resnet14", "slouch", 0.5, api_name="/explain")


def test_opacity_reblends_the_cached_heatmap(client, tmp_path):
    photo = tmp_path / "photo.png"
    side_photo(80, 60, seed=3).save(photo)
    client.predict(handle_file(str(photo)), "resnet18", 0.5, api_name="/predict")
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
    verdict_a, overlay_a, caption_a, verdict_b, overlay_b, caption_b = out
    for verdict, overlay in ((verdict_a, overlay_a), (verdict_b, overlay_b)):
        assert sum(confidences(verdict).values()) == pytest.approx(1.0, abs=1e-5)
        assert Image.open(overlay).size == (80, 60)
    assert "`resnet18`" in caption_a and "`resnet14`" in caption_b


def test_a_text_file_is_a_clear_error_and_the_server_keeps_answering(client, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a photo")
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(text)), "resnet14", 0.5, api_name="/predict")
    message = str(err.value)
    assert "not an image" in message and "notes.txt" in message
    assert "Traceback" not in message and "/gradio/" not in message  # no server paths or stack
    photo = tmp_path / "ok.png"
    side_photo().save(photo)
    verdict, *_ = client.predict(handle_file(str(photo)), "resnet14", 0.5, api_name="/predict")
    assert verdict["label"] in CLASSES


def test_a_result_file_already_handed_out_is_never_rewritten(app_run, tmp_path):
    """Another request with the same result must not re-write a file a visitor may still be downloading.

    (Gradio caches a returned PIL image under the hash of its bytes and rewrites that file in place
    for every identical result: a download in flight then came up short, `peer closed connection
    without sending complete message body`, under load.) The cached copy is marked here, standing
    for a download in progress: a rewrite would erase the mark.
    """
    url, work = app_run
    photo = tmp_path / "same.png"
    side_photo(80, 60, seed=11).save(photo)
    _, overlay, *_ = Client(url, verbose=False).predict(handle_file(str(photo)), "resnet14", 0.5,
                                                         api_name="/predict")
    served = Path(overlay).read_bytes()
    handed_out = [p for p in (work / "gradio").rglob("*") if p.is_file() and p.read_bytes() == served]
    assert handed_out  # the copy Gradio serves lies in its cache
    for path in handed_out:
        path.write_bytes(served + b"in flight")
    for _ in range(2):  # new sessions, same photo and model: byte-identical results
        _, again, *_ = Client(url, verbose=False).predict(handle_file(str(photo)), "resnet14", 0.5,
                                                           api_name="/predict")
        assert Path(again).read_bytes() == served
    assert all(path.read_bytes() == served + b"in flight" for path in handed_out)


def test_concurrent_visitors_with_the_same_photo_all_get_complete_overlays(app_run, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    url, _ = app_run
    photo = tmp_path / "shared.png"
    side_photo(320, 240, seed=12).save(photo)

    def visitor(_: int) -> list[bytes]:
        client = Client(url, verbose=False)
        return [Path(client.predict(handle_file(str(photo)), "resnet14", 0.5, api_name="/predict")[1]).read_bytes()
                for _ in range(3)]

    with ThreadPoolExecutor(6) as pool:
        results = [data for batch in pool.map(visitor, range(6)) for data in batch]
    assert len(results) == 18
    assert len(set(results)) == 1 and Image.open(io.BytesIO(results[0])).size == (320, 240)


def test_unknown_model_is_refused(client, portrait):
    with pytest.raises(AppError, match="Unknown model"):
        client.predict(handle_file(str(portrait)), "resnet99", 0.5, api_name="/predict")


def test_models_table_shows_checkpoint_metadata(client):
    *_, table = client.predict(api_name="/models")
    rows = {r[0]: dict(zip(table["headers"], r)) for r in table["data"]}
    assert set(rows) == set(list_models())
    for arch, row in rows.items():
        assert row["architecture"] == arch and row["input size"] == 64 and row["origin"] == "bundled"
        assert row["classes"] == ", ".join(CLASSES)


def test_an_uploaded_checkpoint_belongs_to_its_session_only(app_run, tmp_path):
    path = tmp_path / "slouch-detector.safetensors"
    model = build_model("resnet14", 3)
    save_checkpoint(path, model, ModelInfo(arch="resnet14", class_names=["upright", "slouch", "lying"],
                                           input_size=64))
    photo = tmp_path / "photo.png"
    side_photo().save(photo)
    mine, other = Client(app_run[0], verbose=False), Client(app_run[0], verbose=False)

    message, *_ = mine.predict(handle_file(str(path)), api_name="/upload_model")
    assert "slouch-detector" in message
    verdict, *_ = mine.predict(handle_file(str(photo)), "slouch-detector", 0.5, api_name="/predict")
    assert sorted(confidences(verdict)) == ["lying", "slouch", "upright"]
    *_, table = mine.predict(api_name="/models")
    assert "slouch-detector" in [r[0] for r in table["data"]]

    *_, table = other.predict(api_name="/models")
    assert "slouch-detector" not in [r[0] for r in table["data"]]
    with pytest.raises(AppError, match="Unknown model"):
        other.predict(handle_file(str(photo)), "slouch-detector", 0.5, api_name="/predict")


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


def test_train_from_a_zip_then_use_the_model_in_that_session_only(app_run, tmp_path):
    data = make_dataset(tmp_path / "my_photos", per_class=6, size=(48, 36))
    archive = zip_folder(data, tmp_path / "my_photos.zip")
    photo = tmp_path / "photo.png"
    side_photo(48, 36).save(photo)
    mine, other = Client(app_run[0], verbose=False), Client(app_run[0], verbose=False)

    summary, thumbs, skipped = mine.predict(handle_file(str(archive)), api_name="/check_zip")
    assert "2 classes" in summary and "12 images" in summary
    assert {t["caption"].split(" ")[0] for t in thumbs} == set(CLASSES)
    assert skipped["value"]["data"] == [["normal/notes.txt", "not an image (.txt)"]]

    final = mine.predict("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0, api_name="/train")
    status, loss, acc, results, per_class, confusion, *_ = final
    assert status == "Training finished."
    assert [row[2] for row in loss["data"]] == ["train", "validation"]
    assert "Validation accuracy" in results
    assert [row[0] for row in per_class["value"]["data"]] == CLASSES
    assert sum(map(sum, (row[1:] for row in confusion["value"]["data"]))) == 4  # 2 of 6 per class

    *_, table = mine.predict(api_name="/models")
    trained = [r for r in table["data"] if r[1].startswith("yours")]
    assert len(trained) == 1 and trained[0][0] == "resnet14-trained-1"
    verdict, *_ = mine.predict(handle_file(str(photo)), "resnet14-trained-1", 0.5, api_name="/predict")
    assert sorted(confidences(verdict)) == CLASSES

    *_, table = other.predict(api_name="/models")
    assert "resnet14-trained-1" not in [r[0] for r in table["data"]]
    with pytest.raises(AppError, match="Unknown model"):
        other.predict(handle_file(str(photo)), "resnet14-trained-1", 0.5, api_name="/predict")
    with pytest.raises(AppError, match="Upload a dataset"):  # the first session's dataset is not shared
        other.predict("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0, api_name="/train")


def test_a_layout_that_cannot_train_is_refused_with_the_expected_layout(client, tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(3):
        side_photo(seed=i).save(folder / f"{i}.png")
    archive = zip_folder(folder, tmp_path / "flat.zip")
    with pytest.raises(AppError) as err:
        client.predict(handle_file(str(archive)), api_name="/check_zip")
    assert "class" in str(err.value)


def test_too_many_epochs_are_refused(app_run, tmp_path):
    mine = Client(app_run[0], verbose=False)
    data = make_dataset(tmp_path / "d", per_class=3, size=(32, 32))
    mine.predict(handle_file(str(zip_folder(data, tmp_path / "d.zip"))), api_name="/check_zip")
    with pytest.raises(AppError, match="maximum value 30|At most 30 epochs"):
        mine.predict("resnet14", "scratch", "automatic", 31, "automatic", 4, "64", 0.34, 0, api_name="/train")


def test_cancel_keeps_the_best_epoch_and_one_training_job_runs_at_a_time(app_run, tmp_path):
    from gradio_client.utils import Status

    data = make_dataset(tmp_path / "d", per_class=8, size=(64, 48))
    archive = handle_file(str(zip_folder(data, tmp_path / "d.zip")))
    first, second = Client(app_run[0], verbose=False), Client(app_run[0], verbose=False)
    first.predict(archive, api_name="/check_zip")
    second.predict(archive, api_name="/check_zip")

    long_run = first.submit("resnet14", "scratch", "full fine-tune", 30, "0.0001", 2, "64", 0.25, 0,
                            api_name="/train")
    deadline = time.monotonic() + 120
    while not any(isinstance(o[1], dict) and o[1].get("data") for o in long_run.outputs()):  # an epoch's curve
        assert time.monotonic() < deadline and not long_run.done(), long_run.outputs()
        time.sleep(0.1)
    queued = second.submit("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.25, 0,
                           api_name="/train")
    while (status := queued.status()).code not in (Status.IN_QUEUE, Status.PROCESSING, Status.FINISHED):
        time.sleep(0.05)
    assert status.code == Status.IN_QUEUE and status.rank == 0  # waits for the first job

    cancelled_at = time.monotonic()
    assert "Stopping" in first.predict(api_name="/cancel_training")
    final = long_run.result(timeout=60)
    assert time.monotonic() - cancelled_at < 20  # promptly: within a batch, not after 30 epochs
    assert final[0] == "Cancelled: kept the best finished epoch."
    assert "cancelled" in final[3]
    *_, table = first.predict(api_name="/models")
    assert "resnet14-trained-1" in [r[0] for r in table["data"]]

    assert queued.result(timeout=120)[0] == "Training finished."


def test_without_bundled_checkpoints_the_app_starts_and_expired_sessions_are_deleted(tmp_path):
    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    work = tmp_path / "app"
    ckpt = save_checkpoint(tmp_path / "mine.safetensors", build_model("resnet14", 2),
                           ModelInfo(arch="resnet14", class_names=CLASSES, input_size=64))
    limits = {"POSTURE_SESSION_TTL_MIN": "0.05", "POSTURE_MAX_UPLOAD_FILES": "5", "POSTURE_MAX_EPOCHS": "2"}
    with running_app(work, empty, **limits) as url:  # sessions expire after 3 s
        assert "No bundled checkpoints" in (work / "app.log").read_text()
        client = Client(url, verbose=False)
        *_, table = client.predict(api_name="/models")
        assert table["data"] == [] or table["data"] == [[""] * len(table["headers"])]
        photo = tmp_path / "photo.png"
        side_photo().save(photo)
        with pytest.raises(AppError, match="Choose a model"):
            client.predict(handle_file(str(photo)), None, 0.5, api_name="/predict")

        data = make_dataset(tmp_path / "d", per_class=3, size=(32, 32))
        with pytest.raises(AppError, match="5"):  # 6 images, 5 allowed
            client.predict(handle_file(str(zip_folder(data, tmp_path / "d.zip"))), api_name="/check_zip")
        with pytest.raises(AppError, match="maximum value 2"):
            client.predict("resnet14", "scratch", "automatic", 3, "automatic", 4, "64", 0.3, 0, api_name="/train")

        client = Client(url, verbose=False)
        before = set(work.glob("posture-app-*/session-*"))
        client.predict(handle_file(str(ckpt)), api_name="/upload_model")
        folders = list(set(work.glob("posture-app-*/session-*")) - before)
        assert len(folders) == 1 and any(folders[0].iterdir())
        deadline = time.monotonic() + 30
        while folders[0].exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not folders[0].exists()  # deleted after the session's time limit
        with pytest.raises(AppError, match="Unknown model"):
            client.predict(handle_file(str(photo)), "mine", 0.5, api_name="/predict")
