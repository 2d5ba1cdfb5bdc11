"""The rules a dataset upload follows: its limits on a shared server, its layout, the litter it may carry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "IMAGE_SUFFIXES",
    "LAYOUT_HELP",
    "NO_SIDE_VIEW",
    "UploadLimits",
    "find_dataset_root",
    "is_ignored",
    "visible_entries",
]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
NO_SIDE_VIEW = "no_side_view"  # reserved folder name: pictures without a side view of a person, not a class
LAYOUT_HELP = """expected one folder per class, e.g.
  my_data/
    normal/       img001.jpg ...
    turtle_neck/  img101.jpg ...
    no_side_view/ (optional) pictures with no side view of a person
or my_data/train/<class>/... with my_data/val/<class>/... beside it"""

_IGNORED_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}
MB = 2**20


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may contain; defaults suit a public Space; the app's settings (POSTURE_MAX_UPLOAD_*) change them."""

    max_files: int = 2000  # images per upload
    max_total_bytes: int = 200 * MB  # uncompressed total
    max_file_bytes: int = 20 * MB
    max_members: int = 5000  # zip entries of any kind
    max_ratio: float = 200.0  # per-member and total compression ratio
    max_depth: int = 8  # folder nesting
    min_per_class: int = 2  # training needs >= 1 train + 1 val image per class

    @classmethod
    def local(cls) -> UploadLimits:
        """For folders on the user's own disk (CLI, library): no caps on count or total size."""
        return cls(max_files=2**62, max_total_bytes=2**62, max_members=2**62)


def is_ignored(name: str) -> bool:
    """macOS/Windows litter and hidden files: never classes, never images."""
    return name.startswith(".") or name.lower() in _IGNORED_NAMES



def too_many_files(count: int, limits: UploadLimits) -> str:
    return (
        f"{count} images is more than the limit of {limits.max_files} per upload "
        f"(the server's POSTURE_MAX_UPLOAD_FILES setting); upload fewer"
    )


def too_many_bytes(total: int, limits: UploadLimits) -> str:
    return (
        f"the upload holds {total / MB:.0f} MB, over the limit of {limits.max_total_bytes / MB:.0f} MB "
        f"(the server's POSTURE_MAX_UPLOAD_MB setting); upload fewer or smaller images"
    )


def visible_entries(folder: Path) -> list[Path]:
    """A folder's entries, sorted, without OS litter and hidden files."""
    return sorted(child for child in folder.iterdir() if not is_ignored(child.name))


def find_dataset_root(root: Path, max_depth: int) -> Path:
    """Descend through single-folder wrappers (`upload/mydata/normal/...` -> `upload/mydata`)."""
    for _ in range(max_depth):
        children = visible_entries(root)
        folders = [c for c in children if c.is_dir() and not c.is_symlink()]
        images = [c for c in children if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES]
        # A lone folder of images is one class, not a wrapper: stop so the error says "one class".
        if len(folders) != 1 or images or not any(c.is_dir() for c in visible_entries(folders[0])):
            break
        root = folders[0]
    return root
