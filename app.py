"""Gradio app: turtle-neck (forward head posture) detection with Grad-CAM, in the browser.

UI only. Every verdict, heatmap, dataset scan and training run comes from the
`posture` library's public functions; this file turns them into tabs (Predict,
Compare, Retrain, Models, About) and library errors into readable messages.
Whatever a visitor uploads or trains lives in that visitor's session (a gr.State
and a private temp folder) and is deleted when the session ends or expires.

Limits for a shared server (environment variables, defaults in brackets):
POSTURE_MAX_UPLOAD_FILES [2000] images and POSTURE_MAX_UPLOAD_MB [200] MB per dataset upload
(also the largest file the server accepts), POSTURE_MAX_FILE_MB [20] per image,
POSTURE_MAX_EPOCHS [30] per training run, POSTURE_SESSION_TTL_MIN [120] minutes a
session's files are kept after its last change. One training job runs at a time;
other visitors queue. POSTURE_CHECKPOINTS [checkpoints/] and POSTURE_EXAMPLES
[examples/] name the bundled models' and example images' folders.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import queue
import shutil
import tempfile
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
from PIL import Image

from posture import PostureError, Predictor, list_models, read_info
from posture.checkpoints import bundled_checkpoints, bundled_dir, save_checkpoint
from posture.data import IMAGE_SUFFIXES, DatasetScan, UploadLimits, extract_zip, scan_dataset
from posture.overlay import overlay_heatmap
from posture.pretrained import imagenet_available
from posture.train import TrainConfig, train

HERE = Path(__file__).resolve().parent
EXAMPLES_DIR = Path(os.environ.get("POSTURE_EXAMPLES", HERE / "examples"))
MAX_EPOCHS = int(os.environ.get("POSTURE_MAX_EPOCHS", "30"))
SESSION_TTL_S = 60 * float(os.environ.get("POSTURE_SESSION_TTL_MIN", "120"))
MAX_MISCLASSIFIED_SHOWN = 12
MAX_SHOWN_FILES = 64  # newest result images kept per session folder (Gradio has its own copies by then)
THUMBNAILS_PER_CLASS = 4

INIT_IMAGENET, INIT_BUNDLED, INIT_SCRATCH = "ImageNet weights", "bundled checkpoint", "scratch"
LR_CHOICES = ["automatic", "0.03", "0.01", "0.003", "0.001", "0.0003", "0.0001"]
FREEZE_CHOICES = {"automatic": None, "frozen backbone (train the head)": True, "full fine-tune": False}
EXPECTED_LAYOUT = """```
my_dataset/            (the folder you pick, or the top of the .zip)
  normal/              one sub-folder per class; its name is the class name
    img001.jpg ...
  turtle_neck/
    img101.jpg ...
```"""

# ---------------------------------------------------------------------------------------------
# Models and sessions
# ---------------------------------------------------------------------------------------------

_bundled_models: dict[tuple[str, float], Predictor] = {}  # (path, mtime) -> read-only model
_bundled_lock = threading.Lock()
_app_root: Path | None = None
_live_sessions: dict[str, "Session"] = {}  # session hash -> Session, only so unload can clean up


def _app_tmp() -> Path:
    """The app's private temp folder (created on first use, removed at exit)."""
    global _app_root
    if _app_root is None:
        _app_root = Path(tempfile.mkdtemp(prefix="posture-app-"))
        atexit.register(shutil.rmtree, _app_root, True)
    return _app_root


@dataclass
class Session:
    """What one visitor created: a private folder, their models, their dataset, their training job."""

    folder: Path | None = None
    models: dict[str, Path] = field(default_factory=dict)  # name -> checkpoint in `folder`
    predictors: dict[str, Predictor] = field(default_factory=dict)
    dataset: DatasetScan | None = None  # the last checked upload
    cancel: threading.Event | None = None  # set to stop the running training job
    last_trained: str | None = None
    last_refusal: str = ""  # why the last dataset upload was refused, shown under the upload boxes
    counter: int = 0
    session_hash: str | None = None

    def workdir(self, request: gr.Request | None = None) -> Path:
        """This session's private folder, created on first use."""
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=_app_tmp()))
        if request is not None and request.session_hash:
            self.session_hash = request.session_hash
            _live_sessions[request.session_hash] = self
        return self.folder

    def new_path(self, kind: str, suffix: str = "") -> Path:
        """A fresh, unused path in the session folder, e.g. dataset-3 or uploaded-4.safetensors."""
        self.counter += 1
        return self.workdir() / f"{kind}-{self.counter}{suffix}"

    def close(self) -> None:
        """Stop training and delete everything this session stored."""
        if self.cancel is not None:
            self.cancel.set()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        _live_sessions.pop(self.session_hash or "", None)
        self.folder, self.models, self.predictors, self.dataset = None, {}, {}, None


def _close_session(session: Session | None) -> None:
    """gr.State's delete callback: the session expired or its page was closed an hour ago."""
    if isinstance(session, Session):
        session.close()


def _on_unload(request: gr.Request) -> None:
    """The visitor closed the page: delete their files now, not when the state expires."""
    _close_session(_live_sessions.get(request.session_hash or ""))


def _bundled_names() -> list[str]:
    return list(bundled_checkpoints())


def _model_names(session: Session) -> list[str]:
    return _bundled_names() + [n for n in session.models if n not in bundled_checkpoints()]


def _predictor(name: str | None, session: Session) -> Predictor:
    """The model called `name` in this session: the visitor's own first, then a bundled one."""
    if not name:
        raise gr.Error("Choose a model first.")
    if name in session.models:
        if name not in session.predictors:
            session.predictors[name] = _call(Predictor.from_checkpoint, session.models[name])
        return session.predictors[name]
    bundled = bundled_checkpoints()
    if name not in bundled:
        known = ", ".join(_model_names(session)) or "none"
        raise gr.Error(f"Unknown model {name!r}. Models available in this session: {known}.")
    path = bundled[name]
    key = (str(path), path.stat().st_mtime)
    with _bundled_lock:  # load each bundled checkpoint once, shared read-only by all sessions
        if key not in _bundled_models:
            _bundled_models[key] = _call(Predictor.from_checkpoint, path)
        return _bundled_models[key]


def _call(fn, *args, shown_as: dict[str, str] | None = None, **kwargs):
    """Run a library function; its errors become messages, never tracebacks.

    `shown_as` maps server paths (Gradio's cache, the session folder) to the names
    the visitor knows, so messages never reveal where files live on the server.
    """
    try:
        return fn(*args, **kwargs)
    except (PostureError, ValueError) as exc:  # ValueError: e.g. an unknown class for `target`
        raise gr.Error(_public_message(exc, shown_as), print_exception=False) from exc


def _public_message(exc: Exception, shown_as: dict[str, str] | None) -> str:
    message = str(exc)
    for path, name in sorted((shown_as or {}).items(), key=lambda kv: -len(kv[0])):
        message = message.replace(path, name)
    return message


def _model_choices(session: Session) -> list[tuple[str, str]]:
    bundled = _bundled_names()
    return [(f"{n} (bundled)", n) for n in bundled] + [
        (f"{n} (yours)", n) for n in session.models if n not in bundled
    ]


def _default_models() -> tuple[str | None, str | None]:
    names = _bundled_names()
    first = "resnet18" if "resnet18" in names else (names[0] if names else None)
    second = next((n for n in names if n != first), first)
    return first, second


def _metrics_text(metrics: dict) -> str:
    """'val: accuracy 0.930, roc_auc 0.981; test: ...' for every metrics set a checkpoint records."""
    sets = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    if not sets and "accuracy" in metrics:
        sets = {"": metrics}
    lines = []
    for name, m in sets.items():
        scores = ", ".join(f"{k} {m[k]:.3f}" for k in ("accuracy", "roc_auc", "ece")
                           if isinstance(m.get(k), (int, float)))
        count = f" (n={m['n']})" if isinstance(m.get("n"), int) else ""
        lines.append(f"{name}{count}: {scores}" if name else scores)
    return "; ".join(lines) or "-"


def _model_rows(session: Session) -> pd.DataFrame:
    """One row per model this session can use, with what its checkpoint says about it."""
    rows = []
    entries = [(n, p, "bundled") for n, p in bundled_checkpoints().items()]
    entries += [(n, p, "yours (this session)") for n, p in session.models.items()]
    for name, path, origin in entries:
        try:
            info = read_info(path)
        except PostureError as exc:
            rows.append([name, origin, "unreadable", str(exc), "", "", "", ""])
            continue
        init = Path(info.init).name if ("/" in info.init or "\\" in info.init) else info.init
        rows.append([
            name, origin, info.arch, ", ".join(info.class_names), info.input_size, init,
            _metrics_text(info.metrics), info.created_at,
        ])
    columns = ["model", "origin", "architecture", "classes", "input size", "initialisation",
               "metrics", "created"]
    return pd.DataFrame(rows, columns=columns)


def _model_updates(session: Session) -> tuple:
    """Refreshed model pickers (Predict, Compare A, Compare B) and the Models table."""
    choices = _model_choices(session)
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices), gr.Dropdown(choices=choices), \
        _model_rows(session)


# ---------------------------------------------------------------------------------------------
# Predict, explain, compare
# ---------------------------------------------------------------------------------------------


@dataclass
class View:
    """The last analysed image and model: enough to re-blend or re-explain without re-predicting."""

    source: str
    model: str
    image: Image.Image  # upright RGB image the heatmaps lie on
    label: str
    probabilities: dict[str, float]
    latency_ms: float
    heatmaps: dict[str, np.ndarray | None] = field(default_factory=dict)  # class -> Grad-CAM (model scale); None: empty


def _image_path(value: Any) -> str:
    """The server-side path of an uploaded image (we skip Gradio's decoding: the library does EXIF)."""
    if isinstance(value, dict):
        value = value.get("path")
    if not value:
        raise gr.Error("Add a side-view photo first: upload one, use the webcam, paste, or pick an example.")
    return str(value)


def _analyse(source: str, model_name: str, session: Session, target: str | None = None) -> View:
    predictor = _predictor(model_name, session)
    pred = _call(predictor.predict, source, target=target or None, explain=True,
                 shown_as={source: f"'{Path(source).name}'"})
    view = View(source, model_name, pred.image, pred.label, pred.probabilities, pred.latency_ms)
    view.heatmaps[pred.target] = None if pred.cam_empty else pred.cam
    return view


def _render(view: View, target: str, alpha: float) -> tuple[Image.Image, str]:
    """The overlay for `target` and a caption saying what it shows."""
    heatmap = view.heatmaps.get(target)
    pct = 100.0 * view.probabilities[view.label]
    caption = (f"**{_pretty(view.label)}** ({pct:.0f}%) by `{view.model}` in {view.latency_ms:.0f} ms. "
               f"Heatmap: where the model looked for *{_pretty(target)}*.")
    if heatmap is None:
        caption += " Grad-CAM is zero everywhere for this class: nothing to highlight."
        return view.image, caption
    return overlay_heatmap(view.image, heatmap, alpha=float(alpha)), caption


def _pretty(name: str) -> str:
    return name.replace("_", " ")


def _shown(image: Image.Image, session: Session, request: gr.Request | None = None) -> str:
    """An image to show, as a new file of this session's folder that no other request writes.

    Never hand Gradio a PIL image: it saves those in its cache under the hash of their bytes
    and re-saves that file in place (truncate, then write) whenever another request makes the
    same bytes, e.g. visitors analysing the same photo with the same model. A visitor still
    downloading it then gets fewer bytes than the Content-Length already sent, and the request
    fails. Gradio copies a returned file into its cache written aside and renamed into place,
    and leaves a copy that is already there alone, so a download in flight always completes.
    """
    folder = session.workdir(request)
    fd, path = tempfile.mkstemp(prefix="shown-", suffix=".webp", dir=folder)
    with os.fdopen(fd, "wb") as f:
        image.save(f, format="WEBP")
    old = sorted(folder.glob("shown-*.webp"), key=lambda p: p.stat().st_mtime if p.exists() else 0.0)
    for stale in old[:-MAX_SHOWN_FILES]:
        stale.unlink(missing_ok=True)
    return path


def predict(image, model_name: str, alpha: float, session: Session, request: gr.Request):
    """Classify a photo and explain the predicted class (one model run)."""
    view = _analyse(_image_path(image), model_name, session)
    overlay, caption = _render(view, view.label, alpha)
    classes = gr.Dropdown(choices=[(_pretty(c), c) for c in view.probabilities], value=view.label)
    return view.probabilities, _shown(overlay, session, request), caption, classes, view, session


def predict_on_change(image, model_name: str, alpha: float, session: Session, request: gr.Request):
    """Re-run when the photo or the model changes; a cleared photo clears the results."""
    if not image or not model_name:
        return None, None, "", gr.Dropdown(choices=[], value=None), None, session
    return predict(image, model_name, alpha, session, request)


def explain(image, model_name: str, target: str | None, alpha: float, view: View | None,
            session: Session, request: gr.Request):
    """Grad-CAM for another class; each class is computed once per image and model."""
    source = _image_path(image)
    if view is None or view.source != source or view.model != model_name:
        view = _analyse(source, model_name, session, target)
    target = target or view.label
    if target not in view.probabilities:
        raise gr.Error(f"Unknown class {target!r}; {model_name} knows {', '.join(view.probabilities)}.")
    if target not in view.heatmaps:
        other = _analyse(source, model_name, session, target)
        view.heatmaps[target] = other.heatmaps[target]
    overlay, caption = _render(view, target, alpha)
    return _shown(overlay, session, request), caption, view


def reblend(alpha: float, target: str | None, view: View | None, session: Session, request: gr.Request):
    """Change the overlay's opacity: a re-blend of the cached heatmap, no model run."""
    if view is None:
        return gr.skip(), gr.skip()
    target = target if target in view.heatmaps else view.label
    overlay, caption = _render(view, target, alpha)
    return _shown(overlay, session, request), caption


def compare(image, model_a: str, model_b: str, alpha: float, session: Session, request: gr.Request):
    """The same photo through two models, side by side."""
    source = _image_path(image)
    outputs = []
    for name in (model_a, model_b):
        view = _analyse(source, name, session)
        overlay, caption = _render(view, view.label, alpha)
        outputs += [view.probabilities, _shown(overlay, session, request), caption]
    return tuple(outputs)


# ---------------------------------------------------------------------------------------------
# Models tab
# ---------------------------------------------------------------------------------------------


def list_models_in_session(session: Session):
    """The model pickers and the Models table for this session (bundled models plus the visitor's)."""
    return _model_updates(session)



def upload_model(file, session: Session, request: gr.Request):
    """Add a posture .safetensors checkpoint to this session's models."""
    if not file:
        raise gr.Error("Choose a .safetensors checkpoint made by this project.")
    path = Path(file)
    try:
        info = _call(read_info, path, shown_as={str(path): path.name})
    except gr.Error as exc:
        raise gr.Error(f"{exc.message.rstrip('.')}. Only checkpoints saved by this project (the Retrain tab or "
                       "`python -m posture train`) can be added.", print_exception=False) from exc
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in path.stem)[:40] or "model"
    taken = _model_names(session)
    name = next(n for i in range(1, 10_000) if (n := stem if i == 1 else f"{stem}-{i}") not in taken)
    session.workdir(request)
    dest = session.new_path("uploaded", ".safetensors")
    shutil.copyfile(path, dest)
    session.models[name] = dest
    _predictor(name, session)  # load now, so a damaged tensor section is reported here
    message = (f"Added **{name}**: {info.arch}, classes {', '.join(info.class_names)}, "
               f"input {info.input_size}px. It is now in the model pickers of Predict and Compare.")
    return (message, *_model_updates(session), session)


# ---------------------------------------------------------------------------------------------
# Retrain tab: dataset upload and checking
# ---------------------------------------------------------------------------------------------


def _safe_relative(rel: str) -> Path | None:
    parts = [p for p in rel.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return Path(*parts)


def _dataset_summary(scan: DatasetScan) -> tuple:
    """Markdown summary, counts table, thumbnails and the skipped files of a scan."""
    counts = scan.counts()
    total = sum(counts.values())
    lines = [f"Found **{len(counts)} classes**, **{total} images**"
             + (" (with train/val split folders)." if scan.has_splits else ".")]
    lines += [f"- `{name}`: {n} images" for name, n in counts.items()]
    if scan.skipped:
        lines.append(f"\n{len(scan.skipped)} file{'s' if len(scan.skipped) > 1 else ''} skipped: "
                     "see the list below.")
    lines.append("\nReady to train: check the settings, then press **Train**.")
    thumbs = [(str(p), f"{c} ({i + 1}/{counts[c]})")
              for c, files in scan.files.items() for i, p in enumerate(files[:THUMBNAILS_PER_CLASS])]
    skipped = pd.DataFrame(scan.skipped, columns=["file", "reason"])
    return "\n".join(lines), thumbs, gr.Dataframe(value=skipped, visible=bool(scan.skipped))


def _scan(root: Path, session: Session, upload_name: str, unplaced: list[tuple[str, str]] = ()) -> tuple:
    scan = _call(scan_dataset, root, UploadLimits.from_env(), shown_as={str(root): upload_name})
    scan.skipped = list(unplaced) + list(scan.skipped)
    session.dataset = scan
    return (*_dataset_summary(scan), session)


def _refused(check):
    """Remember why a dataset check failed, for `show_refusal`, then fail as usual."""
    @functools.wraps(check)
    def run(*args, **kwargs):
        session = next(a for a in args if isinstance(a, Session))
        session.dataset, session.last_refusal = None, ""
        try:
            return check(*args, **kwargs)
        except gr.Error as exc:
            session.last_refusal = exc.message
            raise
    return run


def show_refusal(session: Session):
    """Put the reason an upload was refused (with the expected layout) where the summary goes."""
    text = (f"**This upload cannot be used for training.**\n\n```\n{session.last_refusal}\n```"
            if session.last_refusal else "*No dataset checked yet.*")
    return text, [], gr.Dataframe(visible=False)


@_refused
def check_zip(file, session: Session, request: gr.Request):
    """Extract an uploaded .zip (one sub-folder per class) and show what it holds."""
    if not file:
        raise gr.Error("Choose a .zip file with one sub-folder per class.")
    session.workdir(request)
    dest = session.new_path("dataset")
    name = Path(file).name
    _call(extract_zip, file, dest, UploadLimits.from_env(),
          shown_as={str(file): name, str(dest): name})
    return _scan(dest, session, name)


@_refused
def check_folder(files, layout: str, session: Session, request: gr.Request):
    """Rebuild an uploaded folder's class sub-folders in the session folder and show what it holds.

    Gradio stores uploads flat, so the browser sends each file's relative path
    (`layout`, JSON) next to them; files are matched by name and size.
    """
    if not files:
        raise gr.Error("Choose a folder with one sub-folder per class.")
    limits = UploadLimits.from_env()
    if len(files) > limits.max_files:
        raise gr.Error(f"{len(files)} files is more than the {limits.max_files} allowed per upload.")
    try:
        entries = json.loads(layout or "[]")
    except json.JSONDecodeError:
        entries = []
    if not entries:
        raise gr.Error("The browser did not send the folder's layout (dragging a folder in loses it). "
                       "Click the box and choose the folder instead, or upload a .zip.\n\n" + EXPECTED_LAYOUT)
    by_key: dict[tuple[str, int], deque[str]] = defaultdict(deque)
    for entry in entries:
        by_key[(Path(str(entry.get("path", ""))).name, int(entry.get("size", -1)))].append(entry["path"])
    session.workdir(request)
    dest = session.new_path("dataset")
    unplaced = []
    for item in files:
        path, name, size = item["path"], item.get("orig_name") or Path(item["path"]).name, item.get("size")
        rel = by_key[(name, int(size if size is not None else Path(path).stat().st_size))]
        rel_path = _safe_relative(rel.popleft()) if rel else None
        if rel_path is None:
            unplaced.append((name, "its folder is unknown (the browser did not send it)"))
            continue
        target = dest / rel_path  # the scan descends through the picked folder's own name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return _scan(dest, session, "your folder", unplaced)


# ---------------------------------------------------------------------------------------------
# Retrain tab: training
# ---------------------------------------------------------------------------------------------


def _init_choices(arch: str) -> tuple[list[str], str]:
    choices = []
    if arch == "resnet18" and imagenet_available():
        choices.append(INIT_IMAGENET)
    if arch in bundled_checkpoints():
        choices.append(INIT_BUNDLED)
    choices.append(INIT_SCRATCH)
    return choices, choices[0]


def init_for_arch(arch: str):
    """Initialisations on offer for an architecture (ImageNet only where the weights are here)."""
    choices, default = _init_choices(arch)
    return gr.Radio(choices=choices, value=default)


def _curves(history: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    loss, acc = [], []
    for h in history:
        for split, prefix in (("train", "train_"), ("validation", "val_")):
            if h.get(prefix + "loss") is not None:
                loss.append({"epoch": h["epoch"], "loss": h[prefix + "loss"], "split": split})
            if h.get(prefix + "acc") is not None:
                acc.append({"epoch": h["epoch"], "accuracy": h[prefix + "acc"], "split": split})
    return (pd.DataFrame(loss, columns=["epoch", "loss", "split"]),
            pd.DataFrame(acc, columns=["epoch", "accuracy", "split"]))


def _results(result, name: str, predictor: Predictor, root: Path, session: Session) -> tuple:
    """Metrics text, per-class table, confusion matrix and misclassified overlays of a finished run."""
    report = result.val_report
    if report is None:
        text = (f"Saved as **{name}**. Training was cancelled, so the best finished epoch was kept "
                "without a validation report.")
        return text, None, None, []
    m = report.metrics
    names = list(result.info.class_names)
    text = (f"Saved as **{name}**. Validation accuracy **{m['accuracy']:.1%}**"
            + (f", ROC AUC {m['roc_auc']:.3f}" if isinstance(m.get("roc_auc"), (int, float)) else "")
            + (f", calibration error (ECE) {m['ece']:.3f}" if isinstance(m.get("ece"), (int, float)) else "")
            + f" on {sum(v.get('support', 0) for v in m.get('per_class', {}).values())} validation images.")
    per_class = pd.DataFrame(
        [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
         for c, v in m.get("per_class", {}).items()],
        columns=["class", "precision", "recall", "F1", "images"],
    ).round(3)
    confusion = pd.DataFrame(m.get("confusion", []), columns=[f"predicted {c}" for c in names])
    confusion.insert(0, "true class", names[: len(confusion)])
    gallery = []
    for row in report.misclassified[:MAX_MISCLASSIFIED_SHOWN]:
        path = Path(row["file"])
        path = path if path.is_absolute() else root / path
        try:
            pred = predictor.predict(path)
        except PostureError:
            continue
        gallery.append((_shown(pred.overlay(0.5), session), f"{row['label']} → {row['predicted']} ({path.name})"))
    return text, per_class, confusion, gallery


def train_model(session: Session, arch: str, init: str, freeze: str, epochs: float, lr: float | None,
                batch_size: float, img_size: str, val_split: float, seed: float,
                request: gr.Request, progress=gr.Progress()):
    """Train on the checked dataset in a worker thread, streaming curves; Cancel keeps the best epoch."""
    scan = session.dataset
    if scan is None:
        raise gr.Error("Upload a dataset (a folder or a .zip) and wait for its check before training.\n\n"
                       + EXPECTED_LAYOUT)
    if init not in (INIT_IMAGENET, INIT_BUNDLED, INIT_SCRATCH):
        raise gr.Error(f"Unknown initialisation {init!r}: use {INIT_IMAGENET!r}, {INIT_BUNDLED!r} or "
                       f"{INIT_SCRATCH!r}.")
    if int(epochs) > MAX_EPOCHS:
        raise gr.Error(f"At most {MAX_EPOCHS} epochs on this server (POSTURE_MAX_EPOCHS).")
    bundled = bundled_checkpoints()
    init_value = {INIT_IMAGENET: "imagenet", INIT_SCRATCH: "scratch"}.get(init)
    if init == INIT_BUNDLED:
        if arch not in bundled:
            raise gr.Error(f"There is no bundled {arch} checkpoint to start from; choose another initialisation.")
        init_value = str(bundled[arch])
    config = TrainConfig(
        arch=arch, init=init_value, freeze=FREEZE_CHOICES.get(freeze), epochs=int(epochs),
        lr=_learning_rate(lr), batch_size=int(batch_size),
        img_size=None if img_size in (None, "", "automatic") else int(img_size),
        val_split=float(val_split), seed=int(seed or 0),
    )
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    session.cancel = cancel
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = train(scan, config, progress=events.put, cancel=cancel)
        except BaseException as exc:  # noqa: BLE001 - handed to the UI thread below
            outcome["error"] = exc
        finally:
            events.put(None)

    worker = threading.Thread(target=work, name="posture-train", daemon=True)
    history: list[dict] = []
    hidden = gr.Button(visible=False)
    yield {train_status: "Starting…", loss_plot: None, acc_plot: None, train_results: "",
           per_class_table: gr.Dataframe(visible=False), confusion_table: gr.Dataframe(visible=False),
           misclassified: gr.Gallery(value=[], visible=False),
           use_in_predict: hidden, use_in_compare: hidden, download_model: gr.DownloadButton(visible=False)}
    worker.start()
    try:
        last_yield = 0.0
        while (event := events.get()) is not None:
            if event.kind == "step" and event.steps:
                progress((event.step, event.steps), desc=f"epoch {event.epoch}/{event.epochs}", unit="batches")
                if time.monotonic() - last_yield < 1.0:
                    continue
            if event.kind == "epoch":
                history.append({"epoch": event.epoch, "train_loss": event.loss, "train_acc": event.acc,
                                "val_loss": event.val_loss, "val_acc": event.val_acc})
                loss, acc = _curves(history)
                yield {loss_plot: loss, acc_plot: acc, train_status: _status(event)}
            else:
                yield {train_status: _status(event)}
            last_yield = time.monotonic()
    finally:
        if worker.is_alive():  # the visitor left or the event was cancelled: stop the worker
            cancel.set()
        session.cancel = None
    if "error" in outcome:
        exc = outcome["error"]
        if isinstance(exc, (PostureError, ValueError)):
            hidden_paths = {str(scan.root): "your dataset", str(bundled_dir()): "checkpoints"}
            raise gr.Error(_public_message(exc, hidden_paths), print_exception=False) from exc
        raise exc
    result = outcome["result"]
    if result.model is None:
        yield {train_status: "Cancelled before the first epoch finished: no model was kept."}
        return
    session.workdir(request)
    name = next(n for i in range(1, 10_000) if (n := f"{arch}-trained-{i}") not in _model_names(session))
    path = session.new_path("trained", ".safetensors")
    _call(save_checkpoint, path, result.model, result.info)
    session.models[name] = path.rename(path.with_name(f"{name}.safetensors"))
    predictor = session.predictors[name] = Predictor(result.model, result.info, name=name)
    session.last_trained = name
    text, per_class, confusion, gallery = _results(result, name, predictor, Path(scan.root), session)
    loss, acc = _curves(result.history or history)
    done = "Cancelled: kept the best finished epoch." if result.cancelled else "Training finished."
    shown = gr.Button(visible=True)
    pick, cmp_a, cmp_b, table = _model_updates(session)
    yield {train_status: done, loss_plot: loss, acc_plot: acc, train_results: text,
           per_class_table: gr.Dataframe(per_class, visible=per_class is not None),
           confusion_table: gr.Dataframe(confusion, visible=confusion is not None),
           misclassified: gr.Gallery(gallery, visible=bool(gallery)),
           use_in_predict: shown, use_in_compare: shown,
           download_model: gr.DownloadButton(value=str(session.models[name]), visible=True),
           predict_model: pick, compare_a: cmp_a, compare_b: cmp_b, models_table: table, session_state: session}


def _learning_rate(value: str | float | None) -> float | None:
    if value in (None, "", "automatic"):
        return None
    try:
        lr = float(value)
    except ValueError:
        lr = -1.0
    if not 0.0 < lr < 1.0:
        raise gr.Error(f"Learning rate {value!r}: use a number between 0 and 1 (e.g. 0.001), or 'automatic'.")
    return lr


def _status(event) -> str:
    parts = [event.message] if event.message else []
    if event.kind in ("step", "epoch"):
        parts.insert(0, f"Epoch {event.epoch}/{event.epochs}")
    if event.kind == "epoch":
        for label, value in (("loss", event.loss), ("accuracy", event.acc),
                             ("validation loss", event.val_loss), ("validation accuracy", event.val_acc)):
            if value is not None:
                parts.append(f"{label} {value:.3f}")
    if event.eta_s is not None:
        parts.append(f"about {event.eta_s:.0f} s left")
    return " · ".join(parts)


def cancel_training(session: Session) -> str:
    """Ask the running training job to stop after the current batch."""
    if session.cancel is None:
        return "Nothing is training in this session."
    session.cancel.set()
    return "Stopping after the current batch; the best finished epoch will be kept…"


def use_trained(session: Session, tab: str):
    """Select the model just trained in Predict (or Compare) and switch to that tab."""
    name = session.last_trained
    if not name or name not in session.models:
        raise gr.Error("Train a model first.")
    choices = _model_choices(session)
    if tab == "compare":
        return gr.Tabs(selected="compare"), gr.Dropdown(choices=choices), gr.Dropdown(choices=choices, value=name)
    return gr.Tabs(selected="predict"), gr.Dropdown(choices=choices, value=name), gr.Dropdown(choices=choices)


# ---------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------


def _example_images() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES][:24]


# Gradio stores a folder's files flat; this sends their relative paths (class folders) along.
FOLDER_LAYOUT_JS = """
<script>
document.addEventListener("change", (event) => {
  const input = event.target;
  if (!(input instanceof HTMLInputElement) || input.type !== "file") return;
  if (!input.closest("#dataset-folder")) return;
  const layout = Array.from(input.files || []).map((f) => ({path: f.webkitRelativePath || f.name, size: f.size}));
  const box = document.querySelector("#dataset-folder-layout textarea");
  if (!box) return;
  box.value = JSON.stringify(layout);
  box.dispatchEvent(new Event("input", {bubbles: true}));
}, true);
</script>
"""

ABOUT = f"""
### What this detects
**Turtle neck** (forward head posture) is the head sitting forward of the shoulders, typically
after long hours looking down at screens. On a side view it is measured by the
**craniovertebral angle (CVA)**: the angle at the C7 vertebra (the bump at the base of the neck)
between the horizontal and the line from C7 to the tragus of the ear. The smaller the angle, the
further forward the head; **below about 50°** is the usual cut-off for forward head posture.

### How it works
A convolutional network (a ResNet) classifies one side-view photo as `normal` or `turtle_neck`.
**Grad-CAM** (via Captum) shows which regions drove the decision: warm colours mark the pixels
that raised the score of the explained class. Use it to check the model looked at the neck and
head, not at the background.

### The bundled models
`resnet18` (torchvision's ResNet-18) and `resnet14` (the small ResNet of the original design)
were both trained from scratch on **synthetic side-view renders with a known CVA** (no ImageNet
weights could be had where they were trained; retraining uses them when the server can download
them); their data, training settings and
metrics are in `checkpoints/README.md` and in the Models tab. Real photos differ from the renders:
expect mistakes, and retrain on your own labelled photos in the Retrain tab.

### Please note
- This is **not a medical device** and gives no diagnosis. See a professional about neck pain.
- Photos, datasets and models you upload or train stay in **your session only**, are never shown
  to other visitors, and are deleted when you close the page or after
  {SESSION_TTL_S / 60:.0f} minutes without changes.
- A Hugging Face Space's disk is **ephemeral**: a model retrained here disappears on restart, so
  **download** it (`.safetensors`) and upload it again in the Models tab later.
"""


def _banner() -> str:
    if bundled_checkpoints():
        return ""
    return (f"**No bundled models found** in `{bundled_dir()}`. Upload a posture checkpoint in the "
            "**Models** tab or train one in **Retrain**, or set `POSTURE_CHECKPOINTS` to a folder of "
            "`.safetensors` checkpoints.")


with gr.Blocks(title="Turtle-neck detector", analytics_enabled=False,
               delete_cache=(1800, int(SESSION_TTL_S))) as demo:
    session_state = gr.State(Session(), time_to_live=SESSION_TTL_S, delete_callback=_close_session)
    view_state = gr.State(None)
    gr.Markdown("# Turtle-neck detector\nA side-view photo in: a posture verdict and a Grad-CAM map of "
                "where the model looked.")
    gr.Markdown(_banner(), visible=bool(_banner()), elem_id="no-models-banner")
    first_model, second_model = _default_models()
    examples = _example_images()

    with gr.Tabs() as tabs:
        with gr.Tab("Predict", id="predict"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(label="Side-view photo", type="filepath", image_mode=None,
                                     sources=["upload", "webcam", "clipboard"], height=380, elem_id="photo")
                    predict_model = gr.Dropdown(_model_choices(Session()), value=first_model, label="Model",
                                                elem_id="predict-model")
                    analyse = gr.Button("Analyse", variant="primary", elem_id="analyse")
                    if examples:
                        gr.Examples([[p] for p in examples], inputs=[image], label="Examples (click one)")
                    else:
                        gr.Markdown("*No example photos in this installation: upload your own.*")
                with gr.Column():
                    verdict = gr.Label(label="Verdict and class probabilities", elem_id="verdict")
                    overlay = gr.Image(label="Grad-CAM overlay", type="pil", interactive=False, height=380,
                                       elem_id="overlay")
                    caption = gr.Markdown(label="Details", elem_id="caption")
                    with gr.Row():
                        alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity",
                                          elem_id="opacity")
                        target = gr.Dropdown([], value=None, label="Class to explain",
                                             info="The predicted class by default", elem_id="explain-class")

        with gr.Tab("Compare", id="compare"):
            with gr.Row():
                compare_image = gr.Image(label="Side-view photo", type="filepath", image_mode=None,
                                         sources=["upload", "webcam", "clipboard"], height=300,
                                         elem_id="compare-photo")
                with gr.Column():
                    compare_a = gr.Dropdown(_model_choices(Session()), value=first_model, label="Model A",
                                            elem_id="model-a")
                    compare_b = gr.Dropdown(_model_choices(Session()), value=second_model, label="Model B",
                                            elem_id="model-b")
                    compare_alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity")
                    compare_button = gr.Button("Compare", variant="primary", elem_id="compare-button")
                    if examples:
                        gr.Examples([[p] for p in examples], inputs=[compare_image], label="Examples")
            with gr.Row():
                with gr.Column():
                    verdict_a = gr.Label(label="Model A", elem_id="verdict-a")
                    overlay_a = gr.Image(label="Model A: Grad-CAM", interactive=False, height=320)
                    caption_a = gr.Markdown(label="Model A details")
                with gr.Column():
                    verdict_b = gr.Label(label="Model B", elem_id="verdict-b")
                    overlay_b = gr.Image(label="Model B: Grad-CAM", interactive=False, height=320)
                    caption_b = gr.Markdown(label="Model B details")

        with gr.Tab("Retrain", id="retrain"):
            gr.Markdown("Train a model on your own labelled photos: **one sub-folder per class**, the folder "
                        "name is the class name. Upload the folder, or a `.zip` of it.\n\n" + EXPECTED_LAYOUT)
            with gr.Row():
                folder = gr.File(file_count="directory", type="filepath", label="Dataset folder (click to choose)",
                                 height=140, elem_id="dataset-folder")
                zip_file = gr.File(file_types=[".zip"], label="…or a .zip of the same layout", height=140,
                                   elem_id="dataset-zip")
            folder_layout = gr.Textbox(visible="hidden", elem_id="dataset-folder-layout")
            dataset_summary = gr.Markdown("*No dataset checked yet.*", label="Dataset check", elem_id="dataset-summary")
            thumbnails = gr.Gallery(label="A few images per class", columns=8, height=200, elem_id="thumbnails")
            skipped = gr.Dataframe(label="Skipped files", headers=["file", "reason"], visible=False,
                                   interactive=False, elem_id="skipped")
            with gr.Accordion("Training settings", open=True):
                with gr.Row():
                    archs = list_models()
                    arch_default = "resnet18" if "resnet18" in archs else archs[0]
                    arch = gr.Dropdown(archs, value=arch_default, label="Architecture", elem_id="arch")
                    init_choices, init_default = _init_choices(arch_default)
                    init = gr.Radio(init_choices, value=init_default, label="Initialisation", elem_id="init",
                                    info="ImageNet is offered when its weights are on this server")
                    freeze = gr.Radio(list(FREEZE_CHOICES), value="automatic", label="Backbone",
                                      info="automatic: frozen when starting from pretrained weights")
                with gr.Row():
                    epochs = gr.Slider(1, MAX_EPOCHS, value=min(10, MAX_EPOCHS), step=1, label="Epochs",
                                       elem_id="epochs")
                    lr = gr.Dropdown(LR_CHOICES, value="automatic", allow_custom_value=True,
                                     label="Learning rate", elem_id="lr")
                    batch_size = gr.Slider(2, 128, value=32, step=1, label="Batch size")
                    img_size = gr.Dropdown(["automatic", "64", "96", "128", "160", "224"], value="automatic",
                                           label="Image size (px)", elem_id="img-size")
                    val_split = gr.Slider(0.05, 0.5, value=0.2, step=0.05, label="Validation share")
                    seed = gr.Number(0, label="Seed", precision=0)
            with gr.Row():
                train_button = gr.Button("Train", variant="primary", elem_id="train")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
            train_status = gr.Markdown(label="Training status", elem_id="train-status")
            with gr.Row():
                loss_plot = gr.LinePlot(x="epoch", y="loss", color="split", title="Loss", height=300,
                                        x_axis_format="d", label="Loss per epoch")
                acc_plot = gr.LinePlot(x="epoch", y="accuracy", color="split", title="Accuracy",
                                       y_lim=[0, 1], height=300, x_axis_format="d", label="Accuracy per epoch")
            train_results = gr.Markdown(label="Training results", elem_id="train-results")
            with gr.Row():
                per_class_table = gr.Dataframe(label="Per class (validation)", interactive=False,
                                               visible=False, elem_id="per-class")
                confusion_table = gr.Dataframe(label="Confusion matrix (rows: true class)", interactive=False,
                                               visible=False, elem_id="confusion")
            misclassified = gr.Gallery(label="Misclassified validation images (Grad-CAM of the predicted class)",
                                       columns=6, height=240, preview=False, fit_columns=False,
                                       visible=False, elem_id="misclassified")
            with gr.Row():
                use_in_predict = gr.Button("Use in Predict", visible=False, elem_id="use-in-predict")
                use_in_compare = gr.Button("Use in Compare", visible=False, elem_id="use-in-compare")
                download_model = gr.DownloadButton("Download model (.safetensors)", visible=False,
                                                   elem_id="download-model")

        with gr.Tab("Models", id="models"):
            models_table = gr.Dataframe(_model_rows(Session()), label="Models in this session",
                                        interactive=False, wrap=True, elem_id="models-table")
            model_file = gr.File(file_types=[".safetensors"], label="Add a posture checkpoint (.safetensors)",
                                 height=120, elem_id="model-upload")
            model_message = gr.Markdown(label="Upload result", elem_id="model-message")

        with gr.Tab("About", id="about"):
            gr.Markdown(ABOUT)

    # Predict: a model run on a new photo or model; explain caches per class; opacity only re-blends.
    prediction_outputs = [verdict, overlay, caption, target, view_state, session_state]  # session: TTL renewed
    analyse.click(predict, [image, predict_model, alpha, session_state], prediction_outputs,
                  api_name="predict", preprocess=False)
    gr.on([image.change, predict_model.change], predict_on_change,
          [image, predict_model, alpha, session_state], prediction_outputs,
          api_name="predict_on_change", api_visibility="private", preprocess=False)
    target.input(explain, [image, predict_model, target, alpha, view_state, session_state],
                 [overlay, caption, view_state], api_name="explain", preprocess=False)
    alpha.input(reblend, [alpha, target, view_state, session_state], [overlay, caption], api_name="reblend",
                show_progress="hidden", trigger_mode="always_last")
    compare_button.click(compare, [compare_image, compare_a, compare_b, compare_alpha, session_state],
                         [verdict_a, overlay_a, caption_a, verdict_b, overlay_b, caption_b],
                         api_name="compare", preprocess=False)

    # Models
    model_outputs = [predict_model, compare_a, compare_b, models_table]
    model_file.upload(upload_model, [model_file, session_state],
                      [model_message, *model_outputs, session_state], api_name="upload_model",
                      show_progress_on=[model_message])

    # Retrain
    dataset_outputs = [dataset_summary, thumbnails, skipped, session_state]
    checking = dict(fn=lambda: "*Checking the upload…*", outputs=dataset_summary, queue=False,
                    api_visibility="private", show_progress="hidden")
    refusal = dict(fn=show_refusal, inputs=session_state, outputs=dataset_outputs[:3], api_visibility="private",
                   show_progress="hidden")
    zip_file.upload(**checking).then(check_zip, [zip_file, session_state], dataset_outputs,
                                     api_name="check_zip", show_progress_on=[dataset_summary]).failure(**refusal)
    folder.upload(**checking).then(check_folder, [folder, folder_layout, session_state], dataset_outputs,
                                   api_name="check_folder", preprocess=False,
                                   show_progress_on=[dataset_summary]).failure(**refusal)
    arch.change(init_for_arch, arch, init, api_name="init_choices")
    train_button.click(
        train_model,
        [session_state, arch, init, freeze, epochs, lr, batch_size, img_size, val_split, seed],
        [train_status, loss_plot, acc_plot, train_results, per_class_table, confusion_table, misclassified,
         use_in_predict, use_in_compare, download_model, *model_outputs, session_state],
        api_name="train", concurrency_limit=1, concurrency_id="train", show_progress_on=[train_status],
    )
    cancel_button.click(cancel_training, session_state, train_status, api_name="cancel_training",
                        queue=False)
    use_in_predict.click(lambda s: use_trained(s, "predict"), session_state, [tabs, predict_model, compare_a],
                         api_name="use_in_predict")
    use_in_compare.click(lambda s: use_trained(s, "compare"), session_state, [tabs, compare_a, compare_b],
                         api_name="use_in_compare")

    # Sessions: the visitor's models are listed at page load; their files go when they leave.
    demo.load(list_models_in_session, session_state, model_outputs, api_name="models")
    demo.unload(_on_unload)


if __name__ == "__main__":
    if not bundled_checkpoints():
        print(f"No bundled checkpoints in {bundled_dir()}: the app starts without models. "
              "Upload or train one in the browser, or set POSTURE_CHECKPOINTS.")
    # No run history: it would keep visitors' photos in the browser beyond their session.
    demo.launch(head=FOLDER_LAYOUT_JS, max_file_size=UploadLimits.from_env().max_total_bytes, run_history=False)
