"""Exceptions the library raises for problems a user can fix; the CLI and app show their message.
And `warn_caller`, for warnings about something the library worked around."""

from __future__ import annotations

import os
import sys
import warnings


class PostureError(Exception):
    """Base class: a problem with the user's input, not a bug. Its message says what to do."""


class UsageError(PostureError, ValueError):
    """A request that cannot be met as asked: an unknown name, an out-of-range setting."""


class ImageError(PostureError, ValueError):
    """A file or upload that cannot be used as an image."""


class CheckpointError(PostureError, ValueError):
    """A file that is not a valid posture checkpoint."""


class WeightsError(PostureError, RuntimeError):
    """Pretrained weights that cannot be had or do not fit."""


class DatasetError(PostureError, ValueError):
    """A folder or archive whose layout or contents cannot be trained on."""


class TrainingCancelled(PostureError):
    """Training stopped because the caller asked it to."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_caller(message: str, category: type[Warning] = RuntimeWarning) -> None:
    """Warn, attributing the warning to the first caller outside this package (the line a user wrote),
    however deep inside the package it was raised."""
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
