"""Shared benchmark helpers: machine description, interleaved timing, test photos and models, the app launcher.

The CPU is shared (training jobs, other test runs), so absolute times drift by 2-5x over a
minute. Every comparison therefore runs its candidates interleaved, round by round, in one
process, and reports medians and the median of per-round ratios.
"""

from __future__ import annotations

import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as `python benchmarks/x.py` from anywhere, without installing
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

# The one app launcher, shared with the tests: `python app.py` on a free localhost port.
from webapp.launcher import (RunningApp, cpu_seconds, running_app, start_app, stop_app,  # noqa: E402,F401
                             wait_until_answering)

# Where results go: benchmarks/results, or another folder (results from a second CPU kept beside the first).
RESULTS = Path(os.environ.get("POSTURE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results").resolve()
CACHE = Path(os.environ.get("POSTURE_BENCH_CACHE", Path(tempfile.gettempdir()) / "posture-bench"))


def machine() -> dict:
    """CPU model, core count, torch threads and versions: what every result file records."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        model = platform.processor() or "unknown"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()),
        "load_avg_1min_at_start": round(load, 2),
    }


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1,
                block: int = 1) -> dict:
    """Run each candidate once per round, rotating the order; -> {name: {median_ms, min_ms, times_ms}}.

    With `block` > 1 a candidate's turn is a 50 ms pause, one untimed call, then `block` timed
    calls whose median is that round's time: each path is measured in steady state, not in the
    wake of the path before it (ONNX Runtime's spinning threads, for one, slow whatever runs
    right after them).
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            if block > 1:
                time.sleep(0.05)  # the previous path's worker threads go idle
                candidates[name]()
            turn = []
            for _ in range(block):
                start = time.perf_counter()
                candidates[name]()
                turn.append((time.perf_counter() - start) * 1000.0)
            times[name].append(statistics.median(turn))
    return {
        n: {"median_ms": round(statistics.median(t), 2), "min_ms": round(min(t), 2), "times_ms": [round(x, 2) for x in t]}
        for n, t in times.items()
    }


def ratio(timings: dict, slow: str, fast: str) -> float:
    """Median over rounds of slow/fast: robust to load that drifts between rounds."""
    pairs = zip(timings[slow]["times_ms"], timings[fast]["times_ms"])
    return round(statistics.median(s / f for s, f in pairs), 2)


def phone_jpeg(width: int = 4000, height: int = 3000, seed: int = 0, forward: bool = True) -> bytes:
    """A 12 MP photo-like JPEG (quality 90) stored sideways with EXIF orientation 6, as phones do."""
    from posture.synth import SynthConfig
    from posture.synth.render import render_sample

    rng = np.random.default_rng(seed)
    small, _ = render_sample(rng, 35.0 if forward else 62.0, SynthConfig(size_range=(1000, 1000)))
    upright = small.convert("RGB").resize((width, height) if small.width >= small.height else (height, width),
                                          Image.Resampling.BICUBIC)
    # Sensor noise, so the JPEG has camera-like entropy (a smooth upscale compresses unrealistically well).
    arr = np.asarray(upright, dtype=np.int16) + rng.normal(0, 4, (upright.height, upright.width, 1)).astype(np.int16)
    upright = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # orientation 6 means: rotate 90° clockwise to view
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def synthetic_set(n: int, seed: int, size: int = 256) -> Path:
    """A cached synthetic dataset folder (class-per-folder JPEGs) of `n` pictures."""
    from posture.synth import SynthConfig, generate_dataset

    folder = CACHE / f"synth-n{n}-s{seed}-px{size}"
    if not (folder / "labels.csv").is_file():
        generate_dataset(folder, n, seed, SynthConfig(size_range=(size, size)))
    return folder


def benchmark_checkpoint(arch: str) -> Path:
    """A trained checkpoint for `arch`: the bundled one if present, else one trained quickly and cached.

    resnet14 is trained from scratch at 128 px; resnet18 (no ImageNet weights offline) gets a
    frozen random backbone and a trained head at 224 px: enough for confident, decided verdicts.
    """
    from posture.checkpoints import bundled_checkpoints

    bundled = bundled_checkpoints()
    if arch in bundled:
        return bundled[arch]
    path = CACHE / f"{arch}.safetensors"
    if path.is_file():
        return path
    from posture.train import TrainConfig, train

    data = synthetic_set(600, seed=11)
    if arch == "resnet14":
        cfg = TrainConfig(arch="resnet14", epochs=6, img_size=128, augment=False, seed=0, patience=6)
    else:
        cfg = TrainConfig(arch=arch, init="scratch", freeze=True, epochs=30, lr=1e-2, img_size=224,
                          augment=False, seed=0, patience=30)
    train(data, cfg, out=path)
    return path


def write_result(name: str, result: dict) -> Path:
    """Write <name>.json (indented) into the results folder and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def app_checkpoints(folder: Path) -> Path:
    """A POSTURE_CHECKPOINTS folder holding the benchmark resnet14 and resnet18."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for arch in ("resnet14", "resnet18"):
        target = folder / f"{arch}.safetensors"
        if not target.exists():
            shutil.copy(benchmark_checkpoint(arch), target)
    return folder


def rendered_frames(count: int, label: str | None = None, seed: int = 7,
                    size: tuple[int, int] = (320, 240)) -> list[Image.Image]:
    """Synthetic side views (the bundled models' training distribution), centred on `size` canvases."""
    from posture.synth import render_indexed

    frames, index = [], 0
    while len(frames) < count:
        data, info = render_indexed(seed, index)
        index += 1
        if label is not None and info.label != label:
            continue
        picture = Image.open(io.BytesIO(data)).convert("RGB")
        picture.thumbnail(size)
        canvas = Image.new("RGB", size, (128, 128, 128))
        canvas.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
        frames.append(canvas)
    return frames


def write_y4m(frames: list[Image.Image], path: Path, fps: int = 10) -> Path:
    """A raw YUV 4:2:0 video (Y4M) of `frames`: what chromium's fake camera plays, looping
    (--use-fake-device-for-media-stream --use-file-for-fake-video-capture=PATH)."""
    width, height = frames[0].size
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            y, cb, cr = frame.convert("YCbCr").split()
            half = (width // 2, height // 2)
            f.write(b"FRAME\n" + y.tobytes() + cb.resize(half, Image.Resampling.BOX).tobytes()
                    + cr.resize(half, Image.Resampling.BOX).tobytes())
    return path


CHROMIUM = os.environ.get("POSTURE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
FAKE_CAMERA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

# Counts the live view's frames in the page: each new overlay (a new data: URL) is one judged frame.
COUNT_FRAMES_JS = """() => {
  window.postureFrames = [];
  let last = "";
  new MutationObserver(() => {
    const img = document.querySelector("#monitor-live img");
    if (img && img.src !== last) { last = img.src; window.postureFrames.push(performance.now()); }
  }).observe(document.documentElement, {subtree: true, childList: true, attributes: true});
}"""


def start_monitor_stream(page, model: str = "resnet14") -> None:
    """Open the Monitor tab, pick `model`, allow the camera and press Record."""
    page.get_by_role("tab", name="Monitor", exact=True).click()
    page.locator("#monitor-model input").click()
    page.get_by_role("option", name=f"{model} (bundled)", exact=True).click()
    page.evaluate(COUNT_FRAMES_JS)
    box = page.locator("#monitor-camera")
    box.get_by_text("Click to Access Webcam").click()
    box.locator("button.capture-button").click()
    page.wait_for_function("(window.postureFrames || []).length >= 2", timeout=60_000)


def stream_frame_rate(page, since_ms: float) -> tuple[int, float]:
    """(frames, frames per second) the page received after `since_ms` (its performance.now())."""
    times = [t for t in page.evaluate("window.postureFrames") if t >= since_ms]
    if len(times) < 2:
        return len(times), 0.0
    return len(times), (len(times) - 1) / ((times[-1] - times[0]) / 1000.0)
