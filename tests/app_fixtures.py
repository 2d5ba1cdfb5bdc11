"""Helpers for the app tests: launch the real app on localhost, make tiny photos and datasets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["normal", "turtle_neck"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(workdir: Path, checkpoints: Path, examples: Path | None = None, **env: str) -> Iterator[str]:
    """Start `python app.py` on a free localhost port; yield its URL; stop it afterwards."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio"),
        "TMPDIR": str(workdir),  # the app's session folders land here, where the tests can see them
        "POSTURE_CHECKPOINTS": str(checkpoints),
        "POSTURE_EXAMPLES": str(examples or workdir / "no-examples"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log = (workdir / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}:\n{(workdir / 'app.log').read_text()}")
            try:
                with urllib.request.urlopen(url + "/config", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app did not answer in 120 s:\n{(workdir / 'app.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group: only what this fixture started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
