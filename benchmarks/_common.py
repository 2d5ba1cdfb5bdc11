"""Shared benchmark helpers: machine description, interleaved timing, test photos and models.

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

RESULTS = Path(__file__).resolve().parent / "results"
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


def interleaved(candidates: dict[str, Callable[[], object]], rounds: int = 7, warmup: int = 1) -> dict:
    """Run each candidate once per round, rotating the order; -> {name: {median_ms, min_ms, times_ms}}."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            candidates[name]()
            times[name].append((time.perf_counter() - start) * 1000.0)
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
    """Write benchmarks/results/<name>.json (indented) and return its path."""
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


def start_app(workdir: Path, checkpoints: Path, **env: str) -> tuple[subprocess.Popen, str, float]:
    """Launch `python app.py` on a free localhost port: -> process, URL, launch time (perf_counter)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
                "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(workdir / "gradio"),
                "TMPDIR": str(workdir), "POSTURE_CHECKPOINTS": str(checkpoints),
                "POSTURE_EXAMPLES": str(workdir / "no-examples"), "PYTHONUNBUFFERED": "1", **env}
    log = (workdir / "app.log").open("w")
    launched = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", launched


def wait_for_app(proc: subprocess.Popen, url: str, timeout: float = 180.0) -> None:
    """Poll the app's /config until it answers."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/config", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"app did not answer in {timeout} s")
        time.sleep(0.1)


def stop_app(proc: subprocess.Popen) -> None:
    """Stop the app's process group (only what start_app started)."""
    import signal

    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
