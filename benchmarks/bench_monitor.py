"""Live monitor: frames per second a webcam stream gets, and what one frame costs beside a bare prediction.

1. End to end: `python app.py` on 127.0.0.1 and chromium with a fake camera playing synthetic
   side views (640x480); the Monitor tab streams with resnet14 for `--seconds`, and the page
   counts the judged frames it receives (each a new overlay). Chromium and the app share the
   machine's cores. The browser sends a frame every 0.1 s once the last one is answered, so
   10 frames/s is the ceiling; target: at least 5.
2. In one process, interleaved: the server's work per frame (decode the browser's JPEG data URL,
   predict with Grad-CAM, blend, encode the overlay as a JPEG data URL) against a bare
   `predict` without explanation on the same frame: the ratio shows what the live view adds.

Run: python benchmarks/bench_monitor.py [--seconds 20] [--rounds 30]
Writes benchmarks/results/monitor.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import tempfile
from pathlib import Path

from _common import (CHROMIUM, CHROMIUM_ARGS, FAKE_CAMERA_ARGS, app_checkpoints, benchmark_checkpoint, interleaved,
                     machine, ratio, rendered_frames, running_app, start_monitor_stream, stream_frame_rate,
                     write_result, write_y4m)


def browser_rate(tmp: Path, seconds: float) -> dict:
    """Frames per second the Monitor tab receives from the real app, measured in chromium."""
    from playwright.sync_api import sync_playwright

    camera = write_y4m(rendered_frames(20, size=(640, 480)), tmp / "camera.y4m")
    with running_app(tmp / "app", app_checkpoints(tmp / "ckpt")) as app, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            *CHROMIUM_ARGS, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={camera}"])
        context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(app.url)
        start_monitor_stream(page, "resnet14")
        page.wait_for_timeout(2000)  # warm-up: the serving path is built on the first frames
        since = page.evaluate("performance.now()")
        page.wait_for_timeout(seconds * 1000)
        frames, fps = stream_frame_rate(page, since)
        shown = page.locator("#monitor-live .monitor-rate").inner_text()
        browser.close()
    return {"seconds": seconds, "frames": frames, "frames_per_s": round(fps, 2), "rate_shown_by_app": shown,
            "camera": "640x480 Y4M of synthetic side views, chromium fake device"}


def per_frame_cost(rounds: int) -> dict:
    """The live view's server work per frame vs a bare prediction, interleaved in this process."""
    from PIL import Image

    from posture.predict import Predictor
    from webapp.render import data_url
    from webapp.tab_monitor import SHOWN_SIDE

    predictor = Predictor.from_checkpoint(benchmark_checkpoint("resnet14"))
    buf = io.BytesIO()
    rendered_frames(1, size=(640, 480))[0].save(buf, "JPEG", quality=92)  # what the browser sends
    sent = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    def decode() -> Image.Image:
        return Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1]))).convert("RGB")

    def live_frame() -> str:
        frame = decode()
        frame.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
        pred = predictor.predict(frame, explain=True)
        return data_url(pred.overlay(0.45))

    def bare_predict() -> object:
        return predictor.predict(decode(), explain=False)

    timings = interleaved({"live_frame": live_frame, "bare_predict": bare_predict}, rounds=rounds, warmup=3)
    return {"precision": predictor.precision, "input_size": predictor.info.input_size,
            "median_ms": {k: v["median_ms"] for k, v in timings.items()},
            "live_frame_over_bare_predict": ratio(timings, "live_frame", "bare_predict")}


def main() -> None:
    """Print and save the stream's frame rate and the per-frame cost ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream = browser_rate(Path(tmp), args.seconds)
    cost = per_frame_cost(args.rounds)
    result = {"machine": machine(), "model": "resnet14", "stream": stream, "per_frame": cost,
              "target_frames_per_s": 5, "met": stream["frames_per_s"] >= 5}
    write_result("monitor", result)
    print(f"stream: {stream['frames_per_s']} frames/s over {stream['seconds']} s ({stream['frames']} frames; "
          f"the app showed {stream['rate_shown_by_app']})")
    print(f"per frame: live view {cost['median_ms']['live_frame']} ms vs bare predict "
          f"{cost['median_ms']['bare_predict']} ms = {cost['live_frame_over_bare_predict']}x")


if __name__ == "__main__":
    main()
