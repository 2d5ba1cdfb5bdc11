"""Dataset ingestion: a user's labelled folder or zip in, a checked list of images per class out.

Layout: one folder per class (two or more classes, any names, unicode welcome), or
`train/` and `val/` folders each holding the same class folders. Single-folder
wrappers (`mydata/normal/...`) are descended through. Images inside subfolders of a
class folder belong to that class, down to `max_depth` levels; deeper folders are
skipped and reported. macOS and Windows litter (`__MACOSX`, dot-files, `Thumbs.db`,
`desktop.ini`) is ignored silently. Symbolic links are never followed. Non-images
and damaged images are skipped with a reason and training goes on with the rest.

A zip is an untrusted upload: `extract_zip` checks every member's name, type, flags
and sizes before writing a byte, counts real bytes while streaming (declared sizes
can lie), writes only inside the destination and removes what it wrote on failure.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import stat
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from posture.errors import DatasetError
from posture.images import MAX_PIXELS

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUT_HELP",
    "DatasetScan",
    "UploadLimits",
    "extract_zip",
    "scan_dataset",
    "stratified_split",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
LAYOUT_HELP = """expected one folder per class, e.g.
  my_data/
    normal/       img001.jpg ...
    turtle_neck/  img101.jpg ...
or my_data/train/<class>/... with my_data/val/<class>/... beside it"""

_IGNORED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 16
# Ratios only matter above this size: a tiny file of zeros is harmless at any ratio.
_RATIO_FLOOR = 1 << 20
_MB = 2**20


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may contain; defaults suit a public Space, `from_env` lets operators change them."""

    max_files: int = 2000  # images per upload
    max_total_bytes: int = 200 * _MB  # uncompressed total
    max_file_bytes: int = 20 * _MB
    max_members: int = 5000  # zip entries of any kind
    max_ratio: float = 200.0  # per-member and total compression ratio
    max_depth: int = 8  # folder nesting
    min_per_class: int = 2  # training needs >= 1 train + 1 val image per class

    @classmethod
    def local(cls) -> UploadLimits:
        """For folders on the user's own disk (CLI, library): no caps on count or total size."""
        return cls(max_files=2**62, max_total_bytes=2**62, max_members=2**62)

    @classmethod
    def from_env(cls) -> UploadLimits:
        """Defaults, overridden by POSTURE_MAX_UPLOAD_FILES, _MAX_UPLOAD_MB (total), _MAX_FILE_MB."""
        changes: dict[str, int] = {}
        if (files := _env_number("POSTURE_MAX_UPLOAD_FILES")) is not None:
            changes["max_files"] = int(files)
        if (total_mb := _env_number("POSTURE_MAX_UPLOAD_MB")) is not None:
            changes["max_total_bytes"] = int(total_mb * _MB)
        if (file_mb := _env_number("POSTURE_MAX_FILE_MB")) is not None:
            changes["max_file_bytes"] = int(file_mb * _MB)
        return cls(**changes)


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{name}={raw!r}: expected a positive number")
    return value


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in _IGNORED_NAMES


# ---------------------------------------------------------------- zip archives


def extract_zip(zip_path: str | Path, dest_dir: str | Path, limits: UploadLimits = UploadLimits()) -> Path:
    """Safely extract into dest_dir (which must be empty or not exist); returns the dataset root."""
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest}: zips are extracted into an empty folder only")
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        zf = _open_zip(Path(zip_path))
        with zf:
            files, folders = _plan_extraction(zf, limits)
            # The archive's real size bounds the total too: declared sizes are the attacker's word.
            ratio_total = max(_RATIO_FLOOR, int(limits.max_ratio * Path(zip_path).stat().st_size))
            budget = min(limits.max_total_bytes, ratio_total)
            for parts in folders:
                dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
            for info, parts in files:
                budget -= _copy_member(zf, info, dest.joinpath(*parts), budget, limits)
        return _find_root(dest, limits.max_depth)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DatasetError(f"{path.name}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise DatasetError(f"{path.name}: not a zip archive, or a damaged or truncated one ({exc})") from exc


def _member_parts(name: str) -> tuple[str, ...]:
    """The member's path as safe relative parts; backslashes count as separators (Windows zippers)."""
    path = unicodedata.normalize("NFC", name.replace("\\", "/"))
    if path.startswith("/") or _DRIVE.match(path):
        raise DatasetError(f"zip refused: member {name!r} has an absolute path; zip the dataset folder")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise DatasetError(f"zip refused: member {name!r} points outside the archive ('..' in its path)")
    return parts


def _plan_extraction(zf: zipfile.ZipFile, limits: UploadLimits):
    """Check every member before anything is written; returns (files, folders) to create."""
    infos = zf.infolist()
    if len(infos) > limits.max_members:
        raise DatasetError(f"zip refused: {len(infos)} entries, more than the limit of {limits.max_members}")
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    folders: list[tuple[str, ...]] = []
    seen: dict[str, str] = {}
    images = declared = compressed = 0
    for info in infos:
        name = info.filename
        parts = _member_parts(name)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise DatasetError(f"zip refused: member {name!r} is a symbolic link; zip the real files instead")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise DatasetError(f"zip refused: member {name!r} is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise DatasetError(f"zip refused: member {name!r} is encrypted; upload a zip without a password")
        if not parts or any(_is_ignored(part) for part in parts):
            continue
        is_folder = name.replace("\\", "/").endswith("/") or kind == stat.S_IFDIR
        if len(parts) - (0 if is_folder else 1) > limits.max_depth:
            raise DatasetError(f"zip refused: {name!r} is nested more than {limits.max_depth} folders deep")
        key = "/".join(parts)
        if key in seen:
            raise DatasetError(f"zip refused: {seen[key]!r} and {name!r} are the same path (duplicate names)")
        seen[key] = name
        if is_folder:
            folders.append(parts)
            continue
        if info.file_size > limits.max_file_bytes:
            raise DatasetError(
                f"zip refused: {name!r} is {info.file_size / _MB:.0f} MB, more than the "
                f"{limits.max_file_bytes / _MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise DatasetError(
                f"zip refused: {name!r} has a compression ratio above {limits.max_ratio:.0f}:1 (a zip bomb?)"
            )
        images += Path(key).suffix.lower() in IMAGE_SUFFIXES
        declared += info.file_size
        compressed += info.compress_size
        files.append((info, parts))
    if images > limits.max_files:
        raise DatasetError(_too_many_files(images, limits))
    if declared > limits.max_total_bytes:
        raise DatasetError(_too_many_bytes(declared, limits))
    if declared > _RATIO_FLOOR and declared > limits.max_ratio * max(compressed, 1):
        raise DatasetError(f"zip refused: overall compression ratio above {limits.max_ratio:.0f}:1 (a bomb?)")
    file_keys = {"/".join(parts) for _, parts in files}
    for key in file_keys:
        parents = key.split("/")[:-1]
        for depth in range(1, len(parents) + 1):
            if "/".join(parents[:depth]) in file_keys:
                raise DatasetError(f"zip refused: {'/'.join(parents[:depth])!r} is both a file and a folder")
    if file_keys & {"/".join(parts) for parts in folders}:
        raise DatasetError("zip refused: a name is used both for a file and a folder")
    return files, folders


def _copy_member(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: UploadLimits
) -> int:
    """Stream one member to `target`, counting real bytes against the limits; returns bytes written."""
    ratio_cap = max(_RATIO_FLOOR, int(limits.max_ratio * max(info.compress_size, 1)))
    cap = min(limits.max_file_bytes, budget, ratio_cap)
    target.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        # "xb": never overwrite, never follow a link planted at the target.
        with zf.open(info) as src, open(target, "xb") as out:
            while chunk := src.read(_CHUNK):
                written += len(chunk)
                if written > cap:
                    raise DatasetError(_over_cap(info.filename, written, cap, budget, ratio_cap, limits))
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"zip refused: member {info.filename!r} is damaged ({exc})") from exc
    except NotImplementedError as exc:
        raise DatasetError(f"zip refused: {info.filename!r} uses an unsupported compression; re-zip") from exc
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
            raise DatasetError(f"zip refused: {info.filename!r} cannot be used as a file name") from exc
        raise
    return written


def _over_cap(name: str, written: int, cap: int, budget: int, ratio_cap: int, limits: UploadLimits) -> str:
    if cap == limits.max_file_bytes:
        why = f"more than the {limits.max_file_bytes / _MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
    elif cap == ratio_cap:
        why = f"a compression ratio above {limits.max_ratio:.0f}:1 (a zip bomb?)"
    else:
        why = "more than the archive's size allows (POSTURE_MAX_UPLOAD_MB, compression ratio)"
    return f"zip refused: {name!r} unpacks to over {written} bytes, {why}; its header understated its size"


def _too_many_files(count: int, limits: UploadLimits) -> str:
    return (
        f"{count} images is more than the limit of {limits.max_files} per upload "
        f"(the server's POSTURE_MAX_UPLOAD_FILES setting); upload fewer"
    )


def _too_many_bytes(total: int, limits: UploadLimits) -> str:
    return (
        f"the upload holds {total / _MB:.0f} MB, over the limit of {limits.max_total_bytes / _MB:.0f} MB "
        f"(the server's POSTURE_MAX_UPLOAD_MB setting); upload fewer or smaller images"
    )


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

    def counts(self) -> dict[str, int]:
        """Usable images per class, train and val together."""
        val = self.val_files or {}
        return {name: len(self.files[name]) + len(val.get(name, [])) for name in self.class_names}

    @property
    def total(self) -> int:
        return sum(self.counts().values())


def _visible(folder: Path) -> list[Path]:
    return sorted(child for child in folder.iterdir() if not _is_ignored(child.name))


def _find_root(root: Path, max_depth: int) -> Path:
    """Descend through single-folder wrappers (`upload/mydata/normal/...` -> `upload/mydata`)."""
    for _ in range(max_depth):
        children = _visible(root)
        folders = [c for c in children if c.is_dir() and not c.is_symlink()]
        images = [c for c in children if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES]
        # A lone folder of images is one class, not a wrapper: stop so the error says "one class".
        if len(folders) != 1 or images or not any(c.is_dir() for c in _visible(folders[0])):
            break
        root = folders[0]
    return root


def _walk_images(folder: Path, root: Path, depth_left: int, skipped: list[tuple[str, str]]) -> list[Path]:
    """Image files under `folder`, recursively; everything else goes to `skipped` with a reason."""
    found = []
    for entry in _visible(folder):
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
    for entry in _visible(folder):
        if entry.is_dir() and not entry.is_symlink():
            depth_left = limits.max_depth - len(entry.relative_to(root).parts)
            classes[entry.name] = _walk_images(entry, root, depth_left, skipped)
    _refuse_loose_images(folder, skipped, root)
    return classes


def _refuse_loose_images(folder: Path, skipped: list[tuple[str, str]], root: Path | None = None) -> None:
    """Files lying beside class folders: images mean a wrong layout, anything else is skipped."""
    loose = []
    for entry in _visible(folder):
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
        return f"larger than the {limits.max_file_bytes / _MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
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
    root = _find_root(root, limits.max_depth)
    skipped: list[tuple[str, str]] = []
    names = {c.name.lower(): c for c in _visible(root) if c.is_dir() and not c.is_symlink()}
    has_splits = "train" in names and "val" in names
    if has_splits:
        files = _class_folders(names.pop("train"), root, limits, skipped)
        val_files: dict[str, list[Path]] | None = _class_folders(names.pop("val"), root, limits, skipped)
        _refuse_loose_images(root, skipped)
        skipped += [(c.name + "/", "only train/ and val/ are read when both exist") for c in names.values()]
    else:
        files, val_files = _class_folders(root, root, limits, skipped), None
    _check_classes(files, val_files)
    groups = [files] + ([val_files] if val_files else [])
    candidates = [path for group in groups for paths in group.values() for path in paths]
    if len(candidates) > limits.max_files:
        raise DatasetError(_too_many_files(len(candidates), limits))
    if (total := sum(path.stat().st_size for path in candidates)) > limits.max_total_bytes:
        raise DatasetError(_too_many_bytes(total, limits))
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
    return DatasetScan(root, sorted(files), files, sorted(skipped), has_splits, val_files)


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
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
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
