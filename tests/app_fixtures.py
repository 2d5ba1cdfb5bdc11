"""Helpers for the app tests: the real app on localhost, a browser (with a fake camera), tiny photos and data."""

from __future__ import annotations

import io
import os
import struct
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from benchmarks._common import rendered_frames, write_y4m  # noqa: F401 - the benchmarks' fake camera
from webapp.launcher import REPO, RunningApp, cpu_seconds, running_app  # noqa: F401 - re-exported for the test modules

CLASSES = ["normal", "turtle_neck"]
CHROMIUM = os.environ.get("POSTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
TIMEOUT_MS = 60_000
# How long an `expect` waits for the page (Playwright's default is 5 s). A model's first answer
# builds its serving path (an ONNX export on CPUs without native bf16): seconds on a slow CPU.
EXPECT_TIMEOUT_MS = 30_000


def pretty(name: str) -> str:
    """A class name as the app shows it ("turtle_neck" -> "turtle neck")."""
    return name.replace("_", " ")


# ---------------------------------------------------------------------------------------------
# Pictures and data sets
# ---------------------------------------------------------------------------------------------


def side_photo(width: int = 96, height: int = 72, seed: int = 0, forward: bool = False) -> Image.Image:
    """A tiny stand-in for a side-view photo: a 'head' blob placed upright or forward of the 'neck'."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    img = np.empty((height, width, 3), dtype=np.float64)
    img[...] = rng.uniform(150, 230, 3)
    img += rng.normal(0, 6, img.shape)
    neck_x = width * 0.4
    img[(np.abs(x - neck_x) < width * 0.06) & (y > height * 0.45)] = (200, 160, 130)
    head_x = neck_x + (width * 0.25 if forward else 0)
    img[(x - head_x) ** 2 + (y - height * 0.3) ** 2 < (height * 0.18) ** 2] = (180, 130, 100)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def save_exif_rotated(image: Image.Image, path: Path) -> Path:
    """Save as JPEG with EXIF orientation 6 (rotate 90° clockwise to view): upright size is swapped."""
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def make_dataset(root: Path, per_class: int = 6, size: tuple[int, int] = (64, 48)) -> Path:
    """root/<class>/<i>.png for both classes, plus one non-image file that must be reported skipped."""
    for c, name in enumerate(CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side_photo(*size, seed=100 * c + i, forward=bool(c)).save(folder / f"{name}_{i}.png")
    (root / CLASSES[0] / "notes.txt").write_text("not an image")
    return root


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip `folder` with its name as the top-level entry, as a desktop 'compress' does."""
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, Path(folder.name) / path.relative_to(folder))
    return zip_path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def broken_images(folder: Path) -> dict[str, Path]:
    """Files a visitor may drop on the photo box that are not usable images, by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    empty = folder / "empty.jpg"
    empty.write_bytes(b"")
    buf = io.BytesIO()
    side_photo(320, 240, seed=5).save(buf, "JPEG", quality=90)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    # A PNG whose header claims 30000 x 30000 pixels (900 MP) over a few bytes of data.
    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    bomb = folder / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
                     + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))
    return {"empty": empty, "truncated": truncated, "bomb": bomb}


def heads_checkpoint(path: Path, arch: str = "resnet14", input_size: int = 64, seed: int = 0,
                     side_view_bias: float | None = None, verdict: str | None = None) -> Path:
    """A checkpoint whose model also estimates the CVA and whether a side view is present.

    `side_view_bias` fixes the side-view logit for every picture (its last layer's weights zeroed);
    `verdict` makes the classifier answer that class for every picture, whatever it shows.
    """
    import torch

    from posture.checkpoints import ModelInfo, save_checkpoint
    from posture.models import build_model

    torch.manual_seed(seed)
    heads = ["cva", "side_view"]
    model = build_model(arch, num_classes=len(CLASSES), heads=heads)
    if side_view_bias is not None:
        last = [m for m in model.heads["side_view"].modules() if isinstance(m, torch.nn.Linear)][-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(side_view_bias)
    if verdict is not None:
        with torch.no_grad():
            model.fc.weight.zero_()
            model.fc.bias.copy_(torch.tensor([4.0 if c == verdict else -4.0 for c in CLASSES]))
    return save_checkpoint(path, model, ModelInfo(arch=arch, class_names=list(CLASSES), input_size=input_size,
                                                  heads=heads))


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------


@contextmanager
def chromium(fake_camera: Path | None = None) -> Iterator:
    """A Playwright chromium (Debian's), optionally with a fake camera playing `fake_camera` (.y4m)."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api")
    sync_api.expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}")
    args = list(CHROMIUM_ARGS)
    if fake_camera is not None:
        args += ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-video-capture={fake_camera}"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser, url: str, viewport: str = "desktop", camera: bool = False):
    """A new visitor (fresh browser context) on the app's page, the tabs loaded."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORTS[viewport], accept_downloads=True,
                                  permissions=["camera"] if camera else [])
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    expect(page.get_by_role("tab", name="Predict")).to_be_visible()
    return page


def shot(page, name: str, full_page: bool = True) -> Path:
    """Screenshot into $POSTURE_TEST_OUTPUT/app/ (default test-output/app/); returns its path."""
    folder = Path(os.environ.get("POSTURE_TEST_OUTPUT", REPO / "test-output")) / "app"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def open_tab(page, name: str) -> None:
    """Click a top-level tab (on a phone, tabs that do not fit sit behind an overflow menu)."""
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() and tab.first.is_visible():
        tab.first.click()
        return
    page.get_by_role("button", name="More tabs").click()
    page.locator(".overflow-dropdown button", has_text=name).first.click()


def pick(page, dropdown_id: str, option: str) -> None:
    """Choose an option of a Gradio dropdown by its visible text."""
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def start_webcam(page, elem_id: str) -> None:
    """Allow a streaming webcam component its camera, then press its Record button."""
    from playwright.sync_api import expect

    box = page.locator(f"#{elem_id}")
    access = box.get_by_text("Click to Access Webcam")
    box.locator("button.capture-button").or_(access).first.wait_for()
    if access.count():  # asked once per page
        access.click()
    record = box.locator("button.capture-button")
    expect(record).to_contain_text("Record")
    record.click()
    try:  # on a loaded machine the first press can land before the stream is wired up
        expect(record).to_contain_text("Stop", timeout=10_000)
    except AssertionError:
        record.click()
        expect(record).to_contain_text("Stop")


def stop_webcam(page, elem_id: str) -> None:
    """Press a streaming webcam component's Stop button."""
    from playwright.sync_api import expect

    button = page.locator(f"#{elem_id} button.capture-button")
    expect(button).to_contain_text("Stop")
    button.click()


def toasts(page):
    """The error/warning toasts on the page."""
    return page.locator("[data-testid='toast-body']")


# ---------------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------------


def server_pid(url: str) -> int:
    """The id of the process listening on `url`'s localhost port (Linux: read from /proc)."""
    port = int(url.rsplit(":", 1)[1])
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:  # gone, or not ours to read
            continue
    raise LookupError(f"no process listens on port {port}")
