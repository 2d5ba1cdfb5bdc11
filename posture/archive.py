"""Safe extraction of an upload: an untrusted zip, or a folder's files sent one by one, in; a dataset folder out.

Every member's name, type, flags and sizes are checked before a byte is written;
real bytes are counted while streaming (declared sizes can lie); writes stay inside
the destination, and whatever was written is removed on failure. A folder uploaded
from a browser arrives as flat files, each with the relative path the browser reported:
`rebuild_folder` puts them back under the same name rules and limits as a zip's members.
"""

from __future__ import annotations

import errno
import re
import shutil
import stat
import unicodedata
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

from posture.errors import DatasetError
from posture.limits import (
    IMAGE_SUFFIXES,
    MB,
    UploadLimits,
    find_dataset_root,
    is_ignored,
    too_many_bytes,
    too_many_files,
)

__all__ = ["extract_zip", "rebuild_folder"]

_DRIVE = re.compile(r"^[A-Za-z]:")
_CHUNK = 1 << 16
# Ratios only matter above this size: a tiny file of zeros is harmless at any ratio.
_RATIO_FLOOR = 1 << 20


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
        return find_dataset_root(dest, limits.max_depth)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        raise


def rebuild_folder(
    files: Sequence[tuple[str, str | Path]], dest_dir: str | Path, limits: UploadLimits = UploadLimits()
) -> Path:
    """Copy (relative path as reported, file on disk) pairs into dest_dir (empty or new); returns the dataset root.

    The reported paths obey a zip member's rules: no absolute paths, no '..', no duplicates,
    litter ignored, nesting, per-file, count and total limits; refusals raise DatasetError
    and leave nothing behind.
    """
    dest = Path(dest_dir)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest}: uploads are rebuilt into an empty folder only")
    planned: list[tuple[tuple[str, ...], Path]] = []
    seen: dict[str, str] = {}
    images = total = 0
    for name, source in files:
        parts = _member_parts(name, what="upload")
        if not parts or any(is_ignored(part) for part in parts):
            continue
        _check_depth(name, len(parts) - 1, limits, "upload")
        key = "/".join(parts)
        if key in seen:
            raise DatasetError(f"upload refused: {seen[key]!r} and {name!r} are the same path (duplicate names)")
        seen[key] = name
        size = Path(source).stat().st_size
        _check_file_size(name, size, limits, "upload")
        images += Path(key).suffix.lower() in IMAGE_SUFFIXES
        total += size
        planned.append((parts, Path(source)))
    if images > limits.max_files:
        raise DatasetError(too_many_files(images, limits))
    if total > limits.max_total_bytes:
        raise DatasetError(too_many_bytes(total, limits))
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for parts, source in planned:
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with source.open("rb") as src, open(target, "xb") as out:  # "xb": never overwrite or follow a link
                shutil.copyfileobj(src, out, _CHUNK)
        return find_dataset_root(dest, limits.max_depth)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _check_depth(name: str, folders: int, limits: UploadLimits, what: str) -> None:
    if folders > limits.max_depth:
        raise DatasetError(f"{what} refused: {name!r} is nested more than {limits.max_depth} folders deep")


def _check_file_size(name: str, size: int, limits: UploadLimits, what: str) -> None:
    if size > limits.max_file_bytes:
        raise DatasetError(
            f"{what} refused: {name!r} is {size / MB:.0f} MB, more than the "
            f"{limits.max_file_bytes / MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
        )


def _open_zip(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise DatasetError(f"{path.name}: no such file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise DatasetError(f"{path.name}: not a zip archive, or a damaged or truncated one ({exc})") from exc


def _member_parts(name: str, what: str = "zip") -> tuple[str, ...]:
    """The member's path as safe relative parts; backslashes count as separators (Windows zippers)."""
    path = unicodedata.normalize("NFC", name.replace("\\", "/"))
    if path.startswith("/") or _DRIVE.match(path):
        raise DatasetError(f"{what} refused: {name!r} has an absolute path; upload the dataset folder itself")
    parts = tuple(part for part in path.split("/") if part not in ("", "."))
    if ".." in parts:
        raise DatasetError(f"{what} refused: {name!r} points outside the upload ('..' in its path)")
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
        if not parts or any(is_ignored(part) for part in parts):
            continue
        is_folder = name.replace("\\", "/").endswith("/") or kind == stat.S_IFDIR
        _check_depth(name, len(parts) - (0 if is_folder else 1), limits, "zip")
        key = "/".join(parts)
        if key in seen:
            raise DatasetError(f"zip refused: {seen[key]!r} and {name!r} are the same path (duplicate names)")
        seen[key] = name
        if is_folder:
            folders.append(parts)
            continue
        _check_file_size(name, info.file_size, limits, "zip")
        if info.file_size > _RATIO_FLOOR and info.file_size > limits.max_ratio * max(info.compress_size, 1):
            raise DatasetError(
                f"zip refused: {name!r} has a compression ratio above {limits.max_ratio:.0f}:1 (a zip bomb?)"
            )
        images += Path(key).suffix.lower() in IMAGE_SUFFIXES
        declared += info.file_size
        compressed += info.compress_size
        files.append((info, parts))
    if images > limits.max_files:
        raise DatasetError(too_many_files(images, limits))
    if declared > limits.max_total_bytes:
        raise DatasetError(too_many_bytes(declared, limits))
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
        why = f"more than the {limits.max_file_bytes / MB:.0f} MB per-file limit (POSTURE_MAX_FILE_MB)"
    elif cap == ratio_cap:
        why = f"a compression ratio above {limits.max_ratio:.0f}:1 (a zip bomb?)"
    else:
        why = "more than the archive's size allows (POSTURE_MAX_UPLOAD_MB, compression ratio)"
    return f"zip refused: {name!r} unpacks to over {written} bytes, {why}; its header understated its size"
