"""Start the app as its own process on a free localhost port: for tests, benchmarks and the screenshot script.

`python app.py` runs exactly as on a Space, in a process group of its own so that stopping it
stops everything it started and nothing else. Its output goes to `app.log` in the work folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["RunningApp", "cpu_seconds", "free_port", "running_app", "start_app", "stop_app", "wait_until_answering"]

REPO = Path(__file__).resolve().parent.parent


@dataclass
class RunningApp:
    """A started app: its process, URL, work folder, log file and the moment it was launched."""

    process: subprocess.Popen
    url: str
    workdir: Path
    log_path: Path
    launched_at: float  # time.perf_counter() just before the process started

    def log(self) -> str:
        """Everything the app printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(workdir: Path, checkpoints: Path, examples: Path | None = None, **env: str) -> RunningApp:
    """Launch `python app.py` on 127.0.0.1 with its temp files under `workdir`; returns at once."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "GRADIO_TEMP_DIR": str(workdir / "gradio"),
        "TMPDIR": str(workdir),  # the app's session folders land here, where callers can inspect them
        "POSTURE_CHECKPOINTS": str(checkpoints),
        "POSTURE_EXAMPLES": str(examples) if examples else "",  # empty: no examples
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    log_path = workdir / "app.log"
    with log_path.open("w") as log:
        launched = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    return RunningApp(proc, f"http://127.0.0.1:{port}", workdir, log_path, launched)


def wait_until_answering(app: RunningApp, timeout: float = 180.0) -> None:
    """Poll the app's /config until it answers; RuntimeError (with its log) if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if app.process.poll() is not None:
            raise RuntimeError(f"app exited with {app.process.returncode}:\n{app.log()}")
        try:
            with urllib.request.urlopen(app.url + "/config", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"app did not answer in {timeout:.0f} s:\n{app.log()}")
        time.sleep(0.1)


def stop_app(app: RunningApp) -> None:
    """Stop the app's process group: only what `start_app` started."""
    if app.process.poll() is None:
        os.killpg(app.process.pid, signal.SIGTERM)
    try:
        app.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(app.process.pid, signal.SIGKILL)
        app.process.wait()


@contextmanager
def running_app(workdir: Path, checkpoints: Path, examples: Path | None = None, **env: str) -> Iterator[RunningApp]:
    """Start the app, wait until it answers, yield it, stop it afterwards."""
    app = start_app(workdir, checkpoints, examples, **env)
    try:
        wait_until_answering(app)
        yield app
    finally:
        stop_app(app)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system, all threads) the process has used so far (Linux: /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
