"""The Retrain tab's dataset: an uploaded zip or folder plus pictures captured with the webcam.

Both sources live in the session folder. Training uses them together: when there are both,
a folder of hard links (copies where links fail) joins the upload's tree and the captured
pictures, and that folder is checked like any upload. Removing the upload leaves the
captured pictures; nothing is trained on that the visitor removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict, deque
from pathlib import Path

import gradio as gr
import pandas as pd
from PIL import Image

from posture.archive import extract_zip, rebuild_folder
from posture.data import DatasetScan, scan_dataset
from posture.errors import PostureError
from posture.limits import LAYOUT_HELP, UploadLimits
from webapp.errors import ask, public_message
from webapp.session import Session

__all__ = ["EXPECTED_LAYOUT", "capture_counts", "check_folder", "check_zip", "clear_captures", "current_dataset",
           "empty_summary", "refused_summary", "save_capture", "summary", "toast_text"]

THUMBNAILS_PER_CLASS = 4
# Short lines: it must fit a phone screen without scrolling sideways.
EXPECTED_LAYOUT = """my_dataset/       the folder or zip
  normal/         a folder per class,
    img001.jpg    named after it
  turtle_neck/
    img101.jpg
  no_side_view/   optional: pictures
    img201.jpg    with no side view"""
_RESERVED = {"train", "val"}


def empty_summary() -> tuple:
    """Summary, thumbnails and skipped list when there is no dataset."""
    return "*No dataset yet: upload a folder or a .zip, or capture pictures with the webcam.*", [], \
        gr.Dataframe(visible=False)


def refused_summary(message: str) -> tuple:
    """Why an upload cannot be trained on, with the expected layout laid out beneath."""
    text = (f"**This upload cannot be used for training.** {message}\n\nThe layout it needs:\n\n"
            f"```\n{EXPECTED_LAYOUT}\n```")
    return text, [], gr.Dataframe(visible=False)


def toast_text(message: str) -> str:
    """A refusal as one readable paragraph for a toast: the layout example is shown under the upload."""
    short = message.split(LAYOUT_HELP)[0].strip().rstrip(".;")
    return short + (". The layout it needs is shown under the upload boxes." if LAYOUT_HELP in message else "")


def summary(scan: DatasetScan, sources: str) -> tuple:
    """Markdown summary, thumbnails and the skipped files of a checked dataset."""
    counts = scan.counts()
    lines = [f"Found **{len(counts)} classes**, **{sum(counts.values())} images** in {sources}"
             + (" (with train/val split folders)." if scan.has_splits else ".")]
    lines += [f"- `{name}`: {n} images" for name, n in counts.items()]
    negatives = len(scan.negatives) + len(scan.val_negatives)
    if negatives:
        lines.append(f"- `no_side_view`: {negatives} pictures without a side view (they teach the side-view flag)")
    if scan.skipped:
        many = len(scan.skipped) > 1
        lines.append(f"\n{len(scan.skipped)} file{'s' if many else ''} skipped: see the list below.")
    lines.append("\nReady to train: check the settings, then press **Train**.")
    thumbs = [(str(p), f"{c} ({i + 1}/{counts[c]})")
              for c, files in scan.files.items() for i, p in enumerate(files[:THUMBNAILS_PER_CLASS])]
    skipped = pd.DataFrame(scan.skipped, columns=["file", "reason"])
    return "\n".join(lines), thumbs, gr.Dataframe(value=skipped, visible=bool(scan.skipped))


def capture_counts(session: Session) -> dict[str, int]:
    """Pictures captured with the webcam, per class."""
    folder = session.captures
    if not folder.is_dir():
        return {}
    return {c.name: sum(1 for _ in c.glob("*.jpg")) for c in sorted(folder.iterdir()) if c.is_dir()}


def _link_tree(source: Path, dest: Path) -> None:
    """Mirror `source`'s files under `dest` as hard links (copies where the file system refuses links)."""
    for path in sorted(source.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        target = dest / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def current_dataset(session: Session, limits: UploadLimits) -> tuple[DatasetScan | None, str]:
    """The dataset training would use now, checked, and a phrase naming its sources."""
    captured = {c: n for c, n in capture_counts(session).items() if n}
    upload = session.upload_root
    if upload is None and not captured:
        return None, ""
    if not captured:
        root, sources = upload, session.upload_name
    elif upload is None:
        root, sources = session.captures, "your webcam pictures"
    else:
        root = session.new_path("dataset")
        _link_tree(upload, root)
        names = {c.name.lower() for c in upload.iterdir() if c.is_dir()}
        into = root / "train" if _RESERVED <= names else root  # split uploads: pictures join train/
        for cls in captured:
            _link_tree(session.captures / cls, into / cls)
        sources = f"{session.upload_name} and your webcam pictures"
    try:
        return scan_dataset(root, limits), sources
    except PostureError as exc:
        raise type(exc)(public_message(exc, {str(root): "your dataset"})) from exc


def check_zip(file: str | None, session: Session, limits: UploadLimits) -> Path:
    """Extract an uploaded zip into the session folder; returns the dataset root (nothing left on refusal)."""
    if not file:
        raise ask("Choose a .zip file with one sub-folder per class.")
    dest = session.new_path("upload")
    name = Path(file).name
    try:
        root = extract_zip(file, dest, limits)
    except PostureError as exc:
        raise type(exc)(public_message(exc, {str(file): name, str(dest): name})) from exc
    session.upload_root, session.upload_name = root, name
    return root


def check_folder(files: list[dict] | None, layout: str, session: Session, limits: UploadLimits
                 ) -> list[tuple[str, str]]:
    """Rebuild an uploaded folder's class sub-folders in the session folder; -> files that could not be placed.

    Gradio stores uploaded files flat, so the page sends each file's relative path (`layout`,
    JSON, see FOLDER_LAYOUT_JS) beside them; files are matched to paths by name and size.
    """
    if not files:
        raise ask("Choose a folder with one sub-folder per class.")
    try:
        entries = json.loads(layout or "[]")
    except json.JSONDecodeError:
        entries = []
    if not entries:
        raise ask("The browser did not send the folder's layout (dragging a folder in loses it). "
                  "Click the box and choose the folder instead, or upload a .zip.")
    by_key: dict[tuple[str, int], deque[str]] = defaultdict(deque)
    for entry in entries:
        by_key[(Path(str(entry.get("path", ""))).name, int(entry.get("size", -1)))].append(str(entry["path"]))
    placed, unplaced = [], []
    for item in files:
        path, name = item["path"], item.get("orig_name") or Path(item["path"]).name
        size = item.get("size")
        paths = by_key[(name, int(size if size is not None else Path(path).stat().st_size))]
        if paths:
            placed.append((paths.popleft(), path))
        else:
            unplaced.append((name, "its folder is unknown (the browser did not send it)"))
    dest = session.new_path("upload")
    session.upload_root, session.upload_name = rebuild_folder(placed, dest, limits), "your folder"
    return unplaced


def save_capture(frame: Image.Image, class_name: str | None, session: Session, limits: UploadLimits) -> None:
    """Store one webcam picture under captures/<class>/ (JPEG), within the upload limits."""
    name = (class_name or "").strip()
    if not name or name.startswith(".") or "/" in name or "\\" in name or len(name) > 40 \
            or name.lower() in _RESERVED:
        raise ask(f"{name!r} cannot be a class name: use a short name without slashes (e.g. normal, turtle_neck).")
    if sum(capture_counts(session).values()) >= limits.max_files:
        raise ask(f"{limits.max_files} pictures is the most this server keeps (POSTURE_MAX_UPLOAD_FILES).")
    folder = session.captures / name
    folder.mkdir(parents=True, exist_ok=True)
    index = sum(1 for _ in folder.glob("*.jpg")) + 1
    frame.convert("RGB").save(folder / f"webcam-{index:05d}.jpg", "JPEG", quality=90)


def clear_captures(session: Session, class_name: str | None = None) -> None:
    """Delete the captured pictures of one class, or of all classes."""
    target = session.captures / class_name if class_name else session.captures
    if target.is_dir() and target.resolve().is_relative_to(session.captures.resolve()):
        shutil.rmtree(target, ignore_errors=True)

