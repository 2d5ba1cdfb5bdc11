"""One visitor's state: a private folder, their models, their dataset, their training job, their monitor.

A `Session` lives in a `gr.State`; Gradio deletes it when the visitor's page has been gone
for the session's time to live, and `close` (also called when the page unloads) deletes
everything the visitor stored. The app's temp folder holds one sub-folder per session.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from posture.data import DatasetScan
from posture.predict import Predictor

__all__ = ["Session", "app_folder", "close_session", "close_session_of", "shown_file"]

MAX_SHOWN_FILES = 64  # newest result images kept per session folder (Gradio has its own copies by then)

_app_root: Path | None = None
_root_lock = threading.Lock()
_live: dict[str, "Session"] = {}  # session hash -> Session, only so that a page unload can clean up


def app_folder() -> Path:
    """The app's private temp folder (created on first use, removed at exit)."""
    global _app_root
    with _root_lock:
        if _app_root is None:
            _app_root = Path(tempfile.mkdtemp(prefix="posture-app-"))
            atexit.register(shutil.rmtree, _app_root, True)
        return _app_root


@dataclass
class Session:
    """What one visitor created. Handlers receive it from a gr.State and change it in place."""

    folder: Path | None = None
    models: dict[str, Path] = field(default_factory=dict)  # the visitor's own: name -> checkpoint file
    predictors: dict[str, Predictor] = field(default_factory=dict)
    upload_root: Path | None = None  # the checked dataset upload (zip or folder), extracted here
    upload_name: str = ""  # how messages name it: the zip's name or "your folder"
    dataset: DatasetScan | None = None  # what training uses: the upload and the webcam pictures
    refusal: str = ""  # why the last dataset upload was refused, shown where the summary goes
    training: Any = None  # the TrainingJob waiting or running for this session (webapp.training)
    cancelled: Any = None  # a cancelled run's best epoch, kept only if the visitor asks (webapp.training)
    last_trained: str | None = None
    views: dict[str, Any] = field(default_factory=dict)  # last analysed photo per panel (predict, a, b)
    monitor: Any = None  # the live monitor's timeline (webapp.monitor)
    last_error: str = ""  # the last message shown to the visitor, for panels that repeat it
    counter: int = 0
    session_hash: str | None = None

    def workdir(self, request: gr.Request | None = None) -> Path:
        """This session's private folder, created on first use."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=app_folder()))
        if request is not None and request.session_hash:
            self.session_hash = request.session_hash
            _live[request.session_hash] = self
        return self.folder

    def new_path(self, kind: str, suffix: str = "") -> Path:
        """A fresh, unused path in the session folder, e.g. dataset-3 or uploaded-4.safetensors."""
        self.counter += 1
        return self.workdir() / f"{kind}-{self.counter}{suffix}"

    @property
    def captures(self) -> Path:
        """Where webcam training pictures go: captures/<class>/<n>.jpg."""
        return self.workdir() / "captures"

    def close(self) -> None:
        """Stop training and delete everything this session stored."""
        job = self.training
        if job is not None:
            job.cancel.set()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        _live.pop(self.session_hash or "", None)
        self.folder, self.models, self.predictors = None, {}, {}
        self.upload_root, self.dataset, self.cancelled, self.views = None, None, None, {}


def close_session(session: Session | None) -> None:
    """gr.State's delete callback: the session expired or its page was closed long ago."""
    if isinstance(session, Session):
        session.close()


def close_session_of(request: gr.Request) -> None:
    """The visitor closed the page: delete their files now, not when the state expires."""
    session = _live.get(request.session_hash or "")
    if session is not None:
        session.close()


def shown_file(image: Image.Image, session: Session, request: gr.Request | None = None) -> str:
    """An image to show, as a new file of this session's folder that no other request writes.

    Never hand Gradio a PIL image: it saves those in its cache under the hash of their bytes
    and re-saves that file in place (truncate, then write) whenever another request makes the
    same bytes, e.g. visitors analysing the same photo with the same model. A visitor still
    downloading it then gets fewer bytes than the Content-Length already sent. Gradio copies a
    returned file into its cache written aside and renamed into place, and leaves a copy that
    is already there alone, so a download in flight always completes.
    """
    folder = session.workdir(request)
    fd, path = tempfile.mkstemp(prefix="shown-", suffix=".webp", dir=folder)
    with os.fdopen(fd, "wb") as f:
        image.save(f, format="WEBP")
    old = sorted(folder.glob("shown-*.webp"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0)
    for stale in old[:-MAX_SHOWN_FILES]:
        stale.unlink(missing_ok=True)
    return path
