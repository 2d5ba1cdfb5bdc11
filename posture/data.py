"""Dataset ingestion: a user's labelled folder or zip in, a checked list of images per class out.

Layout: one folder per class (two or more classes, any names, unicode welcome), or
`train/` and `val/` folders each holding the same class folders. A folder named `no_side_view`
beside the class folders is not a class: it holds pictures without a side view of a person
(frontal views, empty rooms, anything else), which train the model's side-view flag. A
`labels.csv` at the top (the layout `python -m posture synth` writes) may add each picture's
angle (`cva_deg`), which trains the angle estimate; see `posture.labels`. Single-folder
wrappers (`mydata/normal/...`) are descended through. Images inside subfolders of a
class folder belong to that class, down to `max_depth` levels; deeper folders are
skipped and reported. macOS and Windows litter (`__MACOSX`, dot-files, `Thumbs.db`,
`desktop.ini`) is ignored silently. Symbolic links are never followed. Non-images
and damaged images are skipped with a reason and training goes on with the rest.

Zip uploads are unpacked by `posture.archive.extract_zip` (re-exported here); the
limits an upload must respect live in `posture.limits`.
"""

from __future__ import annotations

import random
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from posture.archive import extract_zip
from posture.errors import DatasetError, UsageError
from posture.images import MAX_PIXELS
from posture.limits import (
    IMAGE_SUFFIXES,
    LAYOUT_HELP,
    MB,
    NO_SIDE_VIEW,
    UploadLimits,
    find_dataset_root,
    too_many_bytes,
    too_many_files,
    visible_entries,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUT_HELP",
    "NO_SIDE_VIEW",
    "DatasetScan",
    "UploadLimits",
    "extract_zip",
    "scan_dataset",
    "stratified_split",
]


# ---------------------------------------------------------------- folders


@dataclass
class DatasetScan:
    """What a dataset folder holds: usable images per class, and every file left out with the reason."""

    root: Path
    class_names: list[str]  # sorted, deterministic; a class's index is its position here
    files: dict[str, list[Path]]  # per class, readable images (sorted); train/ ones when has_splits
    skipped: list[tuple[str, str]]  # (path relative to root, reason) for every file not used
    has_splits: bool  # root had train/ and val/
    val_files: dict[str, list[Path]] | None  # the val/ images when has_splits
    negatives: list[Path] = field(default_factory=list)  # no_side_view/ images (train/ ones when has_splits)
    val_negatives: list[Path] = field(default_factory=list)  # val/no_side_view/ images when has_splits

    def counts(self) -> dict[str, int]:
        """Usable images per class, train and val together."""
        val = self.val_files or {}
        return {name: len(self.files[name]) + len(val.get(name, [])) for name in self.class_names}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


def _walk_images(folder: Path, root: Path, depth_left: int, skipped: list[tuple[str, str]]) -> list[Path]:
    """Image files under `folder`, recursively; everything else goes to `skipped` with a reason."""
    found = []
    for entry in visible_entries(folder):
        rel = entry.relative_to(root).as_posix()
        if entry.is_symlink():
            skipped.append((rel, "symbolic link, not followed"))
        elif entry.is_dir():
            if depth_left > 0:
                found += _walk_images(entry, root, depth_left - 1, skipped)
            else:
                skipped.append((rel + "/", "folder nested too deep, not read"))
        elif not entry.is_file():
            skipped.append((rel, "not a regular file"))
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            found.append(entry)
        else:
            skipped.append((rel, f"not an image ({entry.suffix or 'no extension'})"))
    return found


def _class_folders(
    folder: Path, root: Path, limits: UploadLimits, skipped: list[tuple[str, str]]
) -> dict[str, list[Path]]:
    """Map each class folder under `folder` to its candidate images; refuse images lying beside them."""
    classes: dict[str, list[Path]] = {}
    for entry in visible_entries(folder):
        if entry.is_dir() and not entry.is_symlink():
            depth_left = limits.max_depth - len(entry.relative_to(root).parts)
            classes[entry.name] = _walk_images(entry, root, depth_left, skipped)
    _refuse_loose_images(folder, skipped, root)
    return classes


def _refuse_loose_images(folder: Path, skipped: list[tuple[str, str]], root: Path | None = None) -> None:
    """Files lying beside class folders: images mean a wrong layout, anything else is skipped."""
    loose = []
    for entry in visible_entries(folder):
        rel = entry.relative_to(root or folder).as_posix()
        if entry.is_symlink():
            skipped.append((rel, "symbolic link, not followed"))
        elif entry.is_dir():
            continue
        elif entry.suffix.lower() in IMAGE_SUFFIXES:
            loose.append(rel)
        else:
            skipped.append((rel, "file beside the class folders, not used"))
    if loose:
        shown = ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else "")
        raise DatasetError(f"found {len(loose)} image(s) outside any class folder ({shown}); {LAYOUT_HELP}")


def _image_problem(path: Path, limits: UploadLimits) -> str | None:
    """Why `path` cannot be trained on, or None; reads the header and verifies, without decoding."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if size > limits.max_file_bytes:
        return f"larger than the {limits.max_file_bytes / MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                img.verify()
    except UnidentifiedImageError:
        return "not an image this app can read (JPEG, PNG, WebP, BMP, GIF, TIFF are supported)"
    # verify() raises whatever the format plugin trips over; each is reported, none is fatal.
    except Exception as exc:  # noqa: BLE001
        return f"damaged or truncated image ({type(exc).__name__}: {exc})"
    if width * height > MAX_PIXELS:
        return f"{width}x{height} is more pixels than can be decoded safely"
    return None


def scan_dataset(root: str | Path, limits: UploadLimits = UploadLimits(), verify: bool = True) -> DatasetScan:
    """Find the classes and usable images under `root`; raise DatasetError if it cannot be trained on."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    root = find_dataset_root(root, limits.max_depth)
    skipped: list[tuple[str, str]] = []
    names = {c.name.lower(): c for c in visible_entries(root) if c.is_dir() and not c.is_symlink()}
    has_splits = "train" in names and "val" in names
    if has_splits:
        files = _class_folders(names.pop("train"), root, limits, skipped)
        val_files: dict[str, list[Path]] | None = _class_folders(names.pop("val"), root, limits, skipped)
        _refuse_loose_images(root, skipped)
        skipped += [(c.name + "/", "only train/ and val/ are read when both exist") for c in names.values()]
    else:
        files, val_files = _class_folders(root, root, limits, skipped), None
    negatives = _pop_negatives(files)
    val_negatives = _pop_negatives(val_files) if val_files is not None else {}
    _check_classes(files, val_files)
    groups = [files] + ([val_files] if val_files else []) + [negatives, val_negatives]
    candidates = [path for group in groups for paths in group.values() for path in paths]
    if len(candidates) > limits.max_files:
        raise DatasetError(too_many_files(len(candidates), limits))
    if (total := sum(path.stat().st_size for path in candidates)) > limits.max_total_bytes:
        raise DatasetError(too_many_bytes(total, limits))
    for group in groups:
        for name, paths in group.items():
            kept = []
            for path in paths:
                problem = _image_problem(path, limits) if verify else None
                if problem:
                    skipped.append((path.relative_to(root).as_posix(), problem))
                else:
                    kept.append(path)
            group[name] = sorted(kept, key=str)
    _check_counts(files, val_files, limits.min_per_class)
    return DatasetScan(root, sorted(files), files, sorted(skipped), has_splits, val_files,
                       negatives.get(NO_SIDE_VIEW, []), val_negatives.get(NO_SIDE_VIEW, []))


def _pop_negatives(files: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Take the `no_side_view` folder (any letter case) out of the class folders."""
    found = [name for name in files if name.casefold() == NO_SIDE_VIEW]
    return {NO_SIDE_VIEW: [p for name in found for p in files.pop(name)]}


def _check_classes(files: dict[str, list[Path]], val_files: dict[str, list[Path]] | None) -> None:
    if len(files) < 2:
        found = f"only {list(files)[0]!r}" if files else "no class folders"
        raise DatasetError(f"found {found}; training needs at least 2 classes. {LAYOUT_HELP}")
    folded: dict[str, str] = {}
    for name in sorted(files):
        key = unicodedata.normalize("NFC", name).casefold()
        if key in folded:
            raise DatasetError(
                f"class folders {folded[key]!r} and {name!r} differ only in letter case; merge or rename one"
            )
        folded[key] = name
    if val_files is not None and set(val_files) != set(files):
        only_train = sorted(set(files) - set(val_files))
        only_val = sorted(set(val_files) - set(files))
        raise DatasetError(
            "train/ and val/ must hold the same class folders "
            f"(only in train/: {only_train}, only in val/: {only_val})"
        )


def _check_counts(
    files: dict[str, list[Path]], val_files: dict[str, list[Path]] | None, min_per_class: int
) -> None:
    split = val_files is not None
    for name in sorted(files):
        n_train, n_val = len(files[name]), len(val_files[name]) if split else 0
        if n_train + n_val < min_per_class or (split and not (n_train and n_val)):
            where = f" ({n_train} in train/, {n_val} in val/)" if split else ""
            need = f"at least {min_per_class}" + (", one or more in each of train/ and val/" if split else "")
            raise DatasetError(
                f"class {name!r} has {n_train + n_val} usable image(s){where}; each class needs {need} "
                "(unreadable files are listed as skipped)"
            )


def stratified_split(
    files: dict[str, list[Path]], val_fraction: float, seed: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Seeded per-class split into (train, val) lists of (path, class_index); deterministic.

    A class with >= 2 images gets >= 1 on each side; a class of one goes to train.
    """
    if not 0.0 < val_fraction < 1.0:
        raise UsageError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    rng = random.Random(seed)
    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    # Class index = position in sorted names, the same order as DatasetScan.class_names.
    for index, name in enumerate(sorted(files)):
        paths = sorted(files[name], key=str)
        rng.shuffle(paths)
        n_val = min(max(round(len(paths) * val_fraction), 1), len(paths) - 1) if len(paths) >= 2 else 0
        val += [(path, index) for path in sorted(paths[:n_val], key=str)]
        train += [(path, index) for path in sorted(paths[n_val:], key=str)]
    return train, val
