"""Live posture monitor: chromium's fake camera plays synthetic side views into the real app.

The camera is a Y4M video made here from `posture.synth.render_indexed` frames. The models are
made here too, with fixed answers, so the tests do not depend on how well a model reads a frame:
"stooped" says turtle neck for every frame, "nobody" finds no side view in any.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from app_fixtures import (chromium, heads_checkpoint, open_page, open_tab, pick, rendered_frames, running_app,
                          shot, start_webcam, stop_webcam, write_y4m)

pytestmark = [pytest.mark.app, pytest.mark.browser]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("monitor-checkpoints")
    heads_checkpoint(folder / "stooped.safetensors", input_size=96, side_view_bias=20.0, verdict="turtle_neck")
    heads_checkpoint(folder / "nobody.safetensors", input_size=96, side_view_bias=-20.0)
    return folder


@pytest.fixture(scope="module")
def app(tmp_path_factory, checkpoints):
    with running_app(tmp_path_factory.mktemp("app-monitor"), checkpoints) as running:
        yield running


@pytest.fixture(scope="module")
def turtle_camera(tmp_path_factory) -> Path:
    """A camera that sees only forward-head postures."""
    return write_y4m(rendered_frames(10, label="turtle_neck"), tmp_path_factory.mktemp("cam") / "turtle.y4m")


def start_stream(page) -> None:
    start_webcam(page, "monitor-camera")


def stop_stream(page) -> None:
    stop_webcam(page, "monitor-camera")


def files_in(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_monitor_judges_each_frame_draws_a_timeline_and_alerts_gently(app, turtle_camera, viewport):
    from playwright.sync_api import expect

    with chromium(fake_camera=turtle_camera) as browser:
        page = open_page(browser, app.url, viewport, camera=True)
        open_tab(page, "Monitor")
        pick(page, "monitor-model", "stooped (bundled)")
        hold = page.locator("#alert-after input[type=number]")
        hold.fill("3")
        hold.press("Enter")
        page.locator("#alert-sound input[type=checkbox]").check()
        before = files_in(app.workdir)
        start_stream(page)

        live = page.locator("#monitor-live")
        expect(live).to_contain_text("turtle neck", timeout=30_000)
        expect(live.locator("img")).to_have_attribute("src", re.compile("^data:image/jpeg;base64,"))
        alert = page.locator("#monitor-alert")
        expect(alert).to_contain_text(re.compile("turtle neck for \\d+ s"), timeout=30_000)
        expect(page.locator("#monitor-timeline svg rect.frame").first).to_be_attached()
        assert page.evaluate("window.postureAlertSounds || 0") >= 1  # the optional sound played
        # One bar per second of the stream: five seconds in, at least five bars.
        page.wait_for_function("document.querySelectorAll('#monitor-timeline svg rect.frame.alert').length >= 5")
        shot(page, f"monitor-{viewport}", full_page=viewport == "phone")
        stop_stream(page)

        # Frames are judged in memory: nothing of them is written to disk, by us or by Gradio.
        written = [p for p in files_in(app.workdir) - before if p.suffix.lower() in IMAGE_SUFFIXES]
        assert written == []
        page.context.close()


def test_the_alert_waits_for_the_set_time_and_the_timeline_keeps_frames_only_for_the_window(app, turtle_camera):
    from playwright.sync_api import expect

    with chromium(fake_camera=turtle_camera) as browser:
        page = open_page(browser, app.url, camera=True)
        open_tab(page, "Monitor")
        pick(page, "monitor-model", "stooped (bundled)")
        hold = page.locator("#alert-after input[type=number]")
        hold.fill("20")
        hold.press("Enter")
        start_stream(page)
        expect(page.locator("#monitor-live")).to_contain_text("turtle neck", timeout=30_000)
        started = time.monotonic()
        page.wait_for_timeout(5000)
        alert = page.locator("#monitor-alert")
        if time.monotonic() - started < 19:
            expect(alert).not_to_contain_text("turtle neck for")  # 20 s are not up yet
        rate = float(re.search(r"([\d.]+) frames/s", page.locator("#monitor-live").inner_text()).group(1))
        assert rate > 0
        stop_stream(page)
        page.context.close()


def test_no_side_view_is_flagged_instead_of_a_verdict(app, turtle_camera):
    from playwright.sync_api import expect

    with chromium(fake_camera=turtle_camera) as browser:
        page = open_page(browser, app.url, camera=True)
        open_tab(page, "Monitor")
        pick(page, "monitor-model", "nobody (bundled)")
        start_stream(page)
        live = page.locator("#monitor-live")
        expect(live).to_contain_text("No side view of a person found", timeout=30_000)
        page.wait_for_timeout(4000)
        expect(page.locator("#monitor-alert")).not_to_contain_text("turtle neck for")  # nobody there: no alert
        shot(page, "monitor-no-side-view-desktop", full_page=False)
        stop_stream(page)
        page.context.close()
