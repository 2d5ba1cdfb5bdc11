"""Load: live-monitor streams and predicting visitors at once, while the app trains a model.

Starts `python app.py` on 127.0.0.1, starts a small training run through its /train API (a
synthetic dataset uploaded as a .zip), opens `--streams` Monitor tabs in chromium (each its own
browser session, with a fake camera playing synthetic side views) and, while they stream, lets
`--visitors` API visitors (one gradio_client each) send `--requests` /predict calls of a 12 MP
phone photo each. Chromium and the clients run at a lower priority (`--client-nice`), standing in
for the visitors' own machines. Reports the visitors' latency percentiles, each stream's frame rate over the
same window, and every error: failed predictions and error toasts on the streaming pages.
A script, not a timed test.

Run: python benchmarks/load_test.py [--streams 5] [--visitors 10] [--requests 5] [--epochs 30]
Writes benchmarks/results/load.json.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

from _common import (CHROMIUM, CHROMIUM_ARGS, FAKE_CAMERA_ARGS, app_checkpoints, cpu_seconds, machine, phone_jpeg,
                     rendered_frames, start_app, start_monitor_stream, stop_app, stream_frame_rate, synthetic_set,
                     wait_until_answering, write_result, write_y4m)

# Several pages stream at once: keep chromium from slowing the ones it considers in the background.
NO_THROTTLING = ["--disable-renderer-backgrounding", "--disable-background-timer-throttling",
                 "--disable-backgrounding-occluded-windows"]


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy so far (all but idle and iowait; Linux /proc/stat)."""
    busy = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(busy) - busy[3] - busy[4]) / os.sysconf("SC_CLK_TCK")


def lower_priority(pid: int, niceness: int) -> None:
    """Lower process `pid`'s priority, and its session's where the kernel shares the CPU between
    sessions first (autogroup): there only the session's niceness counts against the app's session."""
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
        Path(f"/proc/{pid}/autogroup").write_text(str(niceness))
    except OSError:
        pass  # gone already, or no autogroup here: plain niceness applies


@contextmanager
def yielding_cpu(niceness: int) -> Iterator[None]:
    """This process (the visitors' clients) and what it starts at `niceness`. Its session (the
    caller's terminal too) is lowered only where its old niceness can be put back afterwards."""
    os.setpriority(os.PRIO_PROCESS, 0, niceness)
    session = Path("/proc/self/autogroup")
    try:
        old = int(session.read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        yield  # no autogroup here
        return
    restorable = os.geteuid() == 0  # raising a niceness back needs the privilege
    if restorable:
        session.write_text(str(niceness))
    try:
        yield
    finally:
        if restorable:
            session.write_text(str(old))


def descendants(pid: int) -> set[int]:
    """Every process started, directly or not, by `pid` (Linux /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def zip_dataset(folder: Path, out: Path) -> Path:
    """Zip a class-per-folder dataset (images only) with its name as the top-level entry."""
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.glob("*/*.jpg")):
            zf.write(path, Path(folder.name) / path.relative_to(folder))
    return out


def percentiles(values: list[float]) -> dict:
    """p50, p95, max and mean (seconds, 2 decimals) of `values`."""
    ordered = sorted(values)
    if not ordered:
        return {"p50_s": None, "p95_s": None, "max_s": None, "mean_s": None}
    at = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"p50_s": at(0.5), "p95_s": at(0.95), "max_s": round(ordered[-1], 2),
            "mean_s": round(statistics.mean(ordered), 2)}


def run_visitors(url: str, photo: Path, model: str, visitors: int, requests: int) -> tuple[list[float], list[str]]:
    """`visitors` threads, one gradio_client each, `requests` /predict calls each: latencies and errors."""
    from gradio_client import Client, handle_file

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def visitor(i: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
            with lock:
                errors.extend([f"visitor {i}: connect: {exc}"] * requests)
            return
        for _ in range(requests):
            start = time.perf_counter()
            try:
                *_, details = client.predict(handle_file(str(photo)), model, None, 0.5, api_name="/predict")
                assert details["label"], details
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - counted and reported, not raised
                with lock:
                    errors.append(f"visitor {i}: {type(exc).__name__}: {exc}"[:300])

    threads = [threading.Thread(target=visitor, args=(i,)) for i in range(visitors)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def main() -> None:
    """Print and save latencies, frame rates, errors and whether training ran throughout."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5, help="Monitor tabs streaming a fake camera")
    parser.add_argument("--visitors", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5, help="predictions per visitor")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (it is cancelled at the end)")
    parser.add_argument("--model", default="resnet18", help="the visitors' model (the streams use resnet14)")
    parser.add_argument("--client-nice", type=int, default=10,
                        help="niceness of chromium and the visitors' clients (0: same priority as the app)")
    args = parser.parse_args()
    stream_rates: list[dict] = []
    stream_errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p, ExitStack() as priority:
        tmp = Path(tmp)
        photo = tmp / "phone.jpg"
        photo.write_bytes(phone_jpeg())
        archive = zip_dataset(synthetic_set(400, seed=3), tmp / "data.zip")
        camera = write_y4m(rendered_frames(20, size=(640, 480)), tmp / "camera.y4m")
        app = start_app(tmp / "app", app_checkpoints(tmp / "ckpt"))
        browser = None
        try:
            # Visitors' browsers and clients run on their own machines; here they share the app's cores,
            # so from now on this process and what it starts (chromium) yield the CPU to the app.
            priority.enter_context(yielding_cpu(args.client_nice))
            wait_until_answering(app)
            trainer = Client(app.url, verbose=False)
            trainer.predict(handle_file(str(archive)), api_name="/check_zip")
            job = trainer.submit("resnet14", "scratch", "automatic", args.epochs, "automatic", 16, "128", 0.2, 0,
                                 api_name="/train")
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                *CHROMIUM_ARGS, *NO_THROTTLING, *FAKE_CAMERA_ARGS, f"--use-file-for-fake-video-capture={camera}"])
            pages = []
            for _ in range(args.streams):  # one context each: separate cookies, so separate app sessions
                context = browser.new_context(viewport={"width": 1280, "height": 900}, permissions=["camera"])
                page = context.new_page()
                page.set_default_timeout(120_000)
                page.goto(app.url)
                start_monitor_stream(page, "resnet14")
                pages.append(page)
            # chromium starts its processes in sessions of their own: lower those sessions too
            for pid in descendants(os.getpid()) - descendants(app.process.pid) - {app.process.pid}:
                lower_priority(pid, args.client_nice)
            since = [page.evaluate("performance.now()") for page in pages]
            start, app_cpu0, all_cpu0 = time.perf_counter(), cpu_seconds(app.process.pid), machine_cpu_seconds()
            latencies, errors = run_visitors(app.url, photo, args.model, args.visitors, args.requests)
            wall = time.perf_counter() - start
            app_cpu1, all_cpu1 = cpu_seconds(app.process.pid), machine_cpu_seconds()
            for i, (page, t0) in enumerate(zip(pages, since)):
                frames, fps = stream_frame_rate(page, t0)
                stream_rates.append({"frames": frames, "frames_per_s": round(fps, 2)})
                stream_errors += [f"stream {i}: {text}"[:300]
                                  for text in page.locator("[data-testid='toast-body']").all_inner_texts()]
            training_still_running = not job.done()
            if training_still_running:
                trainer.predict(api_name="/cancel_training")
            try:
                training_outcome = str(job.result(timeout=300)[0])[:200]
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                training_outcome = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if browser is not None:
                browser.close()
            stop_app(app)
    rates = [s["frames_per_s"] for s in stream_rates]
    result = {
        "machine": machine(),
        "visitors": args.visitors, "requests_each": args.requests, "model": args.model,
        "photo": "4000x3000 JPEG q90, EXIF orientation 6",
        "answered": len(latencies), "errors": len(errors) + len(stream_errors),
        "error_samples": (errors + stream_errors)[:5],
        "error_kinds": dict(collections.Counter(e.split(": ", 1)[-1][:120] for e in errors + stream_errors)),
        "client_nice": args.client_nice,
        **percentiles(latencies),
        "wall_s": round(wall, 1), "throughput_per_s": round(len(latencies) / wall, 2),
        "streams": args.streams, "stream_model": "resnet14",
        "stream_camera": "640x480 Y4M of synthetic side views, chromium fake device, one browser context per stream",
        "stream_frames_per_s": rates,
        "stream_frames_per_s_min": min(rates) if rates else None,
        "stream_frames_per_s_total": round(sum(rates), 2),
        "training_running_throughout": training_still_running, "training_outcome": training_outcome,
        # where the cores went over the window: the app (serving, streams and training) and everything
        # (the app, chromium's pages and the visitors' clients), in cores busy on average
        "cores_busy_app": round((app_cpu1 - app_cpu0) / wall, 2),
        "cores_busy_all": round((all_cpu1 - all_cpu0) / wall, 2),
    }
    write_result("load", result)
    for k, v in result.items():
        if k != "machine":
            print(f"{k}: {v}")
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
