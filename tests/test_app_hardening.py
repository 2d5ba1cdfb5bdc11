"""Hostile input through the running app on localhost: file routes, zips, closed tabs, failing training.

The library's own defences (zip members, images, checkpoints) are tested in test_data.py and
test_hardening.py; these tests check that the app, as served by Gradio, keeps them: nothing
outside Gradio's cache is served, a refused upload leaves nothing behind and the server keeps
answering, and a visitor who leaves mid-training frees the training slot and their files.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import time
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path

import pytest
from app_fixtures import (CLASSES, REPO, chromium, cpu_seconds, make_dataset, open_page, open_tab, pick,
                          running_app, server_pid, side_photo, zip_folder)

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

pytestmark = [pytest.mark.app]
MAX_UPLOAD_MB = 8  # small, so an oversized upload is quick to make
TOKEN = secrets.token_hex(6)  # in every marker, so no earlier run's file can pass for this one's


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hardening-examples")
    side_photo(80, 60, seed=1).save(folder / "example.png")
    return folder


@pytest.fixture(scope="module")
def app_run(tmp_path_factory, checkpoint_dir, examples):
    """The app, started once for this module, with a small upload limit; yields (url, work folder)."""
    work = tmp_path_factory.mktemp("app-hardening")
    with running_app(work, checkpoint_dir, examples, POSTURE_MAX_UPLOAD_MB=str(MAX_UPLOAD_MB)) as app:
        yield app.url, work


@pytest.fixture
def client(app_run) -> Client:
    return Client(app_run[0], verbose=False)


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    side_photo(64, 48).save(path)
    return path


def session_folders(work: Path) -> set[Path]:
    return set(work.glob("posture-app-*/session-*"))


def get_raw(url: str, raw_path: str) -> tuple[int, bytes]:
    """GET `raw_path` exactly as written (no client-side normalisation of '..' or %-escapes)."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        conn.request("GET", raw_path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def assert_still_answers(client: Client, photo: Path) -> None:
    *_, details = client.predict(handle_file(str(photo)), "resnet14", None, 0.5, api_name="/predict")
    assert details["label"] in CLASSES


def assert_no_server_paths(message: str, work: Path) -> None:
    assert "Traceback" not in message and "File \"" not in message
    for leak in (str(work), str(REPO), "posture-app-", "session-", "/gradio/"):
        assert leak not in message, f"{leak!r} in {message!r}"


# ---------------------------------------------------------------------------------------------
# File routes
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secrets_outside(app_run, tmp_path_factory, checkpoint_dir):
    """Files the server must never serve, with the content that must never come back."""
    url, work = app_run
    outside = tmp_path_factory.mktemp("outside") / "secret.txt"
    outside.write_text(f"outside-{TOKEN}")
    beside_cache = work / "secret.txt"  # a sibling of Gradio's cache folder: one '..' away
    beside_cache.write_text(f"beside-{TOKEN}")
    checkpoint = checkpoint_dir / "resnet14.safetensors"
    return {
        "outside": (outside, outside.read_bytes()),
        "beside_cache": (beside_cache, beside_cache.read_bytes()),
        "app_py": (REPO / "app.py", b"build_app(settings)"),
        "checkpoint": (checkpoint, checkpoint.read_bytes()[:4096]),
        "passwd": (Path("/etc/passwd"), b"root:"),
    }


def traversal_paths(secrets_outside: dict, work: Path) -> list[tuple[str, bytes]]:
    """(raw request path, secret it must not return) for each way of naming a file outside the cache."""
    cache = work / "gradio"
    outside, outside_secret = secrets_outside["outside"]
    beside, beside_secret = secrets_outside["beside_cache"]
    app_py, app_secret = secrets_outside["app_py"]
    ckpt, ckpt_secret = secrets_outside["checkpoint"]
    passwd = b"root:"
    up = "../" * 12
    cases = [
        ("/gradio_api/file=/etc/passwd", passwd),
        (f"/gradio_api/file={up}etc/passwd", passwd),
        ("/gradio_api/file=" + "%2e%2e%2f" * 12 + "etc%2fpasswd", passwd),
        ("/gradio_api/file=%2Fetc%2Fpasswd", passwd),
        ("/gradio_api/file=//etc/passwd", passwd),
        ("/file=/etc/passwd", passwd),
        (f"/file={up}etc/passwd", passwd),
        ("/static/" + up + "etc/passwd", passwd),
        ("/assets/" + "..%2f" * 12 + "etc/passwd", passwd),
        ("/gradio_api/upload/" + "..%2f" * 12 + "etc/passwd", passwd),
        (f"/gradio_api/file={outside}", outside_secret),
        (f"/gradio_api/file={cache}/{up}{str(outside).lstrip('/')}", outside_secret),
        (f"/gradio_api/file={cache}/../{beside.name}", beside_secret),
        (f"/gradio_api/file={cache}/..%2f{beside.name}", beside_secret),
        (f"/gradio_api/file={urllib.parse.quote(str(cache), safe='')}%2f..%2f{beside.name}", beside_secret),
        (f"/gradio_api/file={app_py}", app_secret),
        ("/gradio_api/file=app.py", app_secret),
        ("/file=app.py", app_secret),
        (f"/gradio_api/file={ckpt}", ckpt_secret),
    ]
    return cases


def test_file_routes_serve_nothing_outside_the_cache(app_run, secrets_outside):
    url, work = app_run
    served = []
    for raw_path, secret in traversal_paths(secrets_outside, work):
        status, body = get_raw(url, raw_path)
        assert secret not in body, f"{raw_path} served a file it must not ({status})"
        served += [raw_path] if status == 200 else []
    assert served == []  # refusals, not pages that happen to lack the secret


def test_the_example_is_served_from_the_cache_but_not_from_its_folder(app_run, examples):
    """Control for the test above: the route works, the example is served as Gradio's cached copy."""
    url, _ = app_run
    example = examples / "example.png"
    with urllib.request.urlopen(url + "/config", timeout=10) as r:
        file_urls: list[str] = []
        json.load(r, object_hook=lambda d: file_urls.append(d["url"]) or d if isinstance(d.get("url"), str) else d)
    cached = {u for u in file_urls if u.endswith("/example.png")}
    assert cached, "the example is not in the page config"
    for example_url in cached:
        with urllib.request.urlopen(example_url, timeout=10) as r:
            assert r.status == 200 and r.read() == example.read_bytes()
    status, body = get_raw(url, f"/gradio_api/file={example}")  # the examples folder itself: not served
    assert status == 403 and body != example.read_bytes()


def test_a_visitors_extracted_upload_is_not_served_by_its_path(app_run, client, tmp_path):
    url, work = app_run
    before = session_folders(work)
    data = make_dataset(tmp_path / "private_photos", per_class=2, size=(32, 32))
    client.predict(handle_file(str(zip_folder(data, tmp_path / "private.zip"))), api_name="/check_zip")
    (folder,) = session_folders(work) - before
    extracted = sorted(folder.rglob("*.png"))
    assert len(extracted) == 4
    for path in extracted:
        status, body = get_raw(url, f"/gradio_api/file={path}")
        assert status == 403 and body != path.read_bytes()


# ---------------------------------------------------------------------------------------------
# Hostile zips through /check_zip
# ---------------------------------------------------------------------------------------------


def _zip_with(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """A zip holding a valid two-class dataset plus `members`, written under their names as given."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for c, name in enumerate(CLASSES):
            for i in range(2):
                buf = io.BytesIO()
                side_photo(32, 32, seed=10 * c + i).save(buf, "PNG")
                zf.writestr(f"data/{name}/{i}.png", buf.getvalue())
        for member, content in members.items():
            zf.writestr(zipfile.ZipInfo(member), content, compress_type=compression)
    return path


def _hostile_zip(kind: str, folder: Path) -> tuple[Path, str, list[Path]]:
    """(zip, pattern its refusal must match, paths it would have written had it been extracted)."""
    evil = f"evil_{TOKEN}_{kind}.txt"
    if kind == "zip_slip":
        return (_zip_with(folder / "slip.zip", {f"../{evil}": b"x", f"data/normal/../../../../{evil}": b"x"}),
                "outside the upload", [])
    if kind == "absolute_member":
        target = Path("/tmp") / evil
        return _zip_with(folder / "absolute.zip", {str(target): b"x"}), "absolute path", [target]
    if kind == "zip_bomb":  # 100 MB of zeros deflate to about 100 kB
        return (_zip_with(folder / "bomb.zip", {"data/normal/huge.png": bytes(100 * 2**20)}),
                "zip refused: .*(bomb|MB)", [])
    if kind == "not_a_zip":
        path = folder / "holiday.zip"
        side_photo().save(path, "PNG")
        return path, "holiday.zip: not a zip archive", []
    if kind == "truncated":
        whole = _zip_with(folder / "whole.zip", {}).read_bytes()
        path = folder / "cut.zip"
        path.write_bytes(whole[: len(whole) // 2])
        return path, "cut.zip: .*(damaged|truncated)", []
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["zip_slip", "absolute_member", "zip_bomb", "not_a_zip", "truncated"])
def test_a_hostile_zip_is_refused_leaves_nothing_and_the_server_keeps_answering(app_run, client, tmp_path,
                                                                                 photo, kind):
    _, work = app_run
    archive, refusal, targets = _hostile_zip(kind, tmp_path)
    before = session_folders(work)
    with pytest.raises(AppError, match=refusal) as err:
        client.predict(handle_file(str(archive)), api_name="/check_zip")
    assert_no_server_paths(str(err.value), work)

    (folder,) = session_folders(work) - before
    assert list(folder.iterdir()) == []  # the refused extraction left nothing, even inside the session
    written = [p for p in work.rglob(f"evil_{TOKEN}_*")] + [t for t in targets if t.exists()]
    written += list(tmp_path.parent.rglob(f"evil_{TOKEN}_*"))
    assert written == []
    assert_still_answers(client, photo)
    with pytest.raises(AppError, match="Upload a dataset"):  # the refused upload is not trainable
        client.predict("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.5, 0, api_name="/train")


def test_an_upload_over_the_size_limit_is_refused_before_it_is_stored(app_run, client, photo):
    """Posted straight to the upload route: gradio_client checks the limit itself and never sends it."""
    import httpx

    url, work = app_run
    cache = work / "gradio"
    before = {p for p in cache.rglob("*") if p.is_file()}
    big = os.urandom((MAX_UPLOAD_MB + 1) * 2**20)
    response = httpx.post(url + "/gradio_api/upload", files={"files": ("big.zip", big)}, timeout=60)
    assert response.status_code == 413 and "maximum allowed size" in response.text
    assert not {p for p in cache.rglob("*") if p.is_file()} - before  # nothing of it kept
    small = httpx.post(url + "/gradio_api/upload", files={"files": ("small.zip", b"x" * 1000)}, timeout=60)
    assert small.status_code == 200  # control: the same request under the limit is stored
    assert_still_answers(client, photo)


# ---------------------------------------------------------------------------------------------
# Training: an error mid-run; a visitor who leaves mid-run
# ---------------------------------------------------------------------------------------------


def test_images_unreadable_mid_run_are_a_clear_error_and_training_still_works(app_run, client, tmp_path, photo):
    _, work = app_run
    data = make_dataset(tmp_path / "my_photos", per_class=3, size=(32, 32))
    archive = handle_file(str(zip_folder(data, tmp_path / "my_photos.zip")))
    before = session_folders(work)
    client.predict(archive, api_name="/check_zip")
    (folder,) = session_folders(work) - before
    images = sorted(folder.rglob("*.png"))
    assert len(images) == 6
    for path in images:  # after the check, before the run: e.g. a disk that failed under the upload
        path.write_bytes(b"\x89PNG\r\n\x1a\n but not any more")

    with pytest.raises(AppError, match=r"^your dataset/\w+/\w+\.png: not an image this app can read") as err:
        client.predict("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0, api_name="/train")
    assert_no_server_paths(str(err.value), work)  # not the decoding worker's traceback
    assert_still_answers(client, photo)

    client.predict(archive, api_name="/check_zip")  # the same visitor, a good upload: the slot is free
    status, *_ = client.predict("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0,
                                api_name="/train")
    assert status == "Training finished."


@pytest.mark.browser
def test_closing_the_tab_mid_training_stops_it_and_deletes_the_session(app_run, tmp_path):
    """The training slot frees at once for the next visitor, and the leaver's folder goes."""
    from playwright.sync_api import expect

    url, work = app_run
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc to watch the server's CPU time")
    pid = server_pid(url)
    long_data = zip_folder(make_dataset(tmp_path / "long", per_class=24, size=(64, 48)), tmp_path / "long.zip")
    short_data = zip_folder(make_dataset(tmp_path / "short", per_class=3, size=(32, 32)), tmp_path / "short.zip")
    next_visitor = Client(url, verbose=False)
    next_visitor.predict(handle_file(str(short_data)), api_name="/check_zip")

    with chromium() as browser:
        page = open_page(browser, url)
        open_tab(page, "Retrain")
        before = session_folders(work)
        page.locator("#dataset-zip input[type=file]").set_input_files(str(long_data))
        expect(page.locator("#dataset-summary")).to_contain_text("48 images")
        (folder,) = session_folders(work) - before

        # 30 epochs of 19 batches of 2: minutes of work, at least 6 epochs even with early stopping.
        pick(page, "arch", "resnet14")
        page.get_by_label("scratch").check()
        page.get_by_label("full fine-tune").check()
        page.locator("#epochs input[type=number]").fill("30")
        page.locator("#epochs input[type=number]").press("Enter")
        batch = page.get_by_label("number input for Batch size")
        batch.fill("2")
        batch.press("Enter")
        pick(page, "img-size", "64")
        pick(page, "lr", "0.0001")
        page.locator("#train").click()
        expect(page.locator("#train-status")).to_contain_text("Epoch 1/30", timeout=60_000)

        queued = next_visitor.submit("resnet14", "scratch", "automatic", 1, "automatic", 4, "64", 0.34, 0,
                                     api_name="/train")
        deadline = time.monotonic() + 30
        while not any("Waiting" in str(o[0]) for o in queued.outputs()):  # behind the visitor about to leave
            assert time.monotonic() < deadline and not queued.done(), queued.outputs()
            time.sleep(0.05)
        page.context.close()
        closed_at = time.monotonic()

    assert queued.result(timeout=60)[0] == "Training finished."
    assert time.monotonic() - closed_at < 20  # not after the leaver's remaining epochs
    # The slot alone proves little (Gradio frees it when the page goes): the leaver's worker must stop too.
    used = cpu_seconds(pid)
    time.sleep(2)
    assert cpu_seconds(pid) - used < 0.5  # an idle server, not minutes of training left running unseen
    deadline = time.monotonic() + 10
    while folder.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not folder.exists()
    time.sleep(1)  # a cancelled run must not save its best epoch into a re-created folder either
    assert not any(f.is_dir() and any(f.glob("*.safetensors")) for f in session_folders(work) - before)
