"""The app's settings (read once from the environment and checked) and its sessions' lifetime."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from app_fixtures import CLASSES, chromium, make_dataset, open_page, open_tab, running_app, side_photo, zip_folder

from posture.checkpoints import ModelInfo, save_checkpoint
from posture.limits import MB
from posture.models import build_model
from webapp.launcher import start_app, stop_app, wait_until_answering
from webapp.settings import REPO, Settings, SettingsError


def test_defaults_suit_a_public_space():
    s = Settings.from_env({})
    assert (s.limits.max_files, s.limits.max_total_bytes, s.limits.max_file_bytes) == (2000, 200 * MB, 20 * MB)
    assert (s.max_epochs, s.session_ttl_s, s.max_streams) == (30, 7200.0, 8)
    assert s.checkpoints == REPO / "checkpoints" and s.precision == "auto" and s.device == "auto" and s.mirror


def test_every_variable_is_read(tmp_path):
    env = {"POSTURE_MAX_UPLOAD_FILES": "5", "POSTURE_MAX_UPLOAD_MB": "1.5", "POSTURE_MAX_FILE_MB": "0.5",
           "POSTURE_MAX_EPOCHS": "3", "POSTURE_SESSION_TTL_MIN": "0.5", "POSTURE_MAX_STREAMS": "2",
           "POSTURE_CHECKPOINTS": str(tmp_path), "POSTURE_EXAMPLES": "", "POSTURE_PRECISION": "FP32",
           "POSTURE_DEVICE": "cpu", "POSTURE_MIRROR": "Off"}
    s = Settings.from_env(env)
    assert (s.limits.max_files, s.limits.max_total_bytes, s.limits.max_file_bytes) == (5, int(1.5 * MB), MB // 2)
    assert (s.max_epochs, s.session_ttl_s, s.max_streams) == (3, 30.0, 2)
    assert (s.checkpoints, s.examples, s.precision, s.device, s.mirror) == (tmp_path, None, "fp32", "cpu", False)


@pytest.mark.parametrize("name, value, says", [
    ("POSTURE_MAX_EPOCHS", "ten", "expected a whole number"),
    ("POSTURE_MAX_EPOCHS", "0", "between 1 and 1000"),
    ("POSTURE_MAX_UPLOAD_FILES", "2.5", "whole number"),
    ("POSTURE_MAX_UPLOAD_MB", "-1", "at least"),
    ("POSTURE_SESSION_TTL_MIN", "nan", "at least"),
    ("POSTURE_MAX_STREAMS", "100", "between 1 and 64"),
    ("POSTURE_PRECISION", "fp8", "fp32, bf16"),
    ("POSTURE_DEVICE", "tpu", "cpu, cuda, mps"),
    ("POSTURE_MIRROR", "yes", "on, off"),
    ("POSTURE_CHECKPOINTS", "/no/such/folder", "no such folder"),
    ("POSTURE_CHECKPOINTS", "", "empty"),
    ("POSTURE_EXAMPLES", "/no/such/folder", "no such folder"),
    ("POSTURE_RESNET18_WEIGHTS", "/no/such/resnet18.pth", "no such file"),
])
def test_a_bad_value_names_the_variable_and_what_it_needs(name, value, says):
    with pytest.raises(SettingsError, match=says) as err:
        Settings.from_env({name: value})
    assert str(err.value).startswith(f"{name}=") or name in str(err.value)


@pytest.mark.app
def test_the_app_refuses_to_start_with_a_bad_setting(tmp_path, checkpoint_dir):
    app = start_app(tmp_path / "app", checkpoint_dir, POSTURE_MAX_EPOCHS="lots")
    try:
        with pytest.raises(RuntimeError, match="exited"):
            wait_until_answering(app, timeout=60)
    finally:
        stop_app(app)
    assert "cannot start: POSTURE_MAX_EPOCHS='lots': expected a whole number" in app.log()
    assert "Traceback" not in app.log()


@pytest.mark.app
def test_without_bundled_checkpoints_the_app_starts_and_expired_sessions_are_deleted(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    from gradio_client.exceptions import AppError

    empty = tmp_path / "no-checkpoints"
    empty.mkdir()
    ckpt = save_checkpoint(tmp_path / "mine.safetensors", build_model("resnet14", 2),
                           ModelInfo(arch="resnet14", class_names=CLASSES, input_size=64))
    limits = {"POSTURE_SESSION_TTL_MIN": "0.05", "POSTURE_MAX_UPLOAD_FILES": "5", "POSTURE_MAX_EPOCHS": "2"}
    with running_app(tmp_path / "app", empty, **limits) as app:  # sessions expire after 3 s
        assert "No bundled checkpoints" in app.log()
        client = gradio_client.Client(app.url, verbose=False)
        *_, records = client.predict(api_name="/models")
        assert records == []
        photo = tmp_path / "photo.png"
        side_photo().save(photo)
        with pytest.raises(AppError, match="Choose a model"):
            client.predict(gradio_client.handle_file(str(photo)), None, None, 0.5, api_name="/predict")

        data = make_dataset(tmp_path / "d", per_class=3, size=(32, 32))
        with pytest.raises(AppError, match="5"):  # 6 images, 5 allowed
            client.predict(gradio_client.handle_file(str(zip_folder(data, tmp_path / "d.zip"))),
                           api_name="/check_zip")
        with pytest.raises(AppError, match="maximum value 2"):
            client.predict("resnet14", "scratch", "automatic", 3, "automatic", 4, "64", 0.3, 0, api_name="/train")

        client = gradio_client.Client(app.url, verbose=False)
        before = set(app.workdir.glob("posture-app-*/session-*"))
        client.predict(gradio_client.handle_file(str(ckpt)), api_name="/upload_model")
        folders = list(set(app.workdir.glob("posture-app-*/session-*")) - before)
        assert len(folders) == 1 and any(folders[0].iterdir())
        deadline = time.monotonic() + 30
        while folders[0].exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not folders[0].exists()  # deleted after the session's time limit
        with pytest.raises(AppError, match="Unknown model"):
            client.predict(gradio_client.handle_file(str(photo)), "mine", None, 0.5, api_name="/predict")


@pytest.mark.app
@pytest.mark.browser
def test_a_session_folder_is_deleted_when_the_visitor_leaves(tmp_path, checkpoint_dir):
    from playwright.sync_api import expect

    ckpt = save_checkpoint(tmp_path / "mine.safetensors", build_model("resnet14", 2),
                           ModelInfo(arch="resnet14", class_names=CLASSES, input_size=64))
    with running_app(tmp_path / "app", checkpoint_dir) as app, chromium() as browser:
        before = set(app.workdir.glob("posture-app-*/session-*"))
        page = open_page(browser, app.url)
        open_tab(page, "Models")
        page.locator("#model-upload input[type=file]").set_input_files(str(ckpt))
        expect(page.locator("#model-message")).to_contain_text("Added")
        mine = set(app.workdir.glob("posture-app-*/session-*")) - before
        assert len(mine) == 1
        folder: Path = mine.pop()
        assert any(folder.rglob("*.safetensors"))
        page.context.close()
        deadline = time.monotonic() + 60
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(1)
        assert not folder.exists()


@pytest.mark.parametrize("value, mirrored", [("on", True), ("off", False)])
def test_posture_mirror_reaches_every_model_the_app_serves(checkpoint_dir, value, mirrored):
    from webapp.models import ModelList
    from webapp.session import Session

    settings = Settings.from_env({"POSTURE_CHECKPOINTS": str(checkpoint_dir), "POSTURE_MIRROR": value})
    session = Session()
    session.models["mine"] = checkpoint_dir / "resnet14.safetensors"  # an uploaded checkpoint
    models = ModelList(settings)
    assert models.predictor("resnet18", session).mirror is mirrored
    assert models.predictor("mine", session).mirror is mirrored
