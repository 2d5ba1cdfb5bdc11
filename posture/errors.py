"""Exceptions the library raises for problems a user can fix; the CLI and app show their message."""

from __future__ import annotations


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
