"""The app's settings: read from the environment once, at start-up, and checked there.

A value that cannot be used stops the app with a message naming the variable, instead of
surfacing later as a visitor's error. Every variable and its default is listed in `VARIABLES`
(the README's table of limits shows the same).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from posture.errors import UsageError
from posture.limits import MB, UploadLimits

__all__ = ["Settings", "SettingsError", "VARIABLES"]

REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("auto", "cpu", "cuda", "mps")
SWITCH = ("on", "off")

# variable -> (default, meaning)
VARIABLES = {
    "POSTURE_MAX_UPLOAD_FILES": ("2000", "images per dataset or batch upload"),
    "POSTURE_MAX_UPLOAD_MB": ("200", "MB per dataset upload (uncompressed), also the largest file accepted"),
    "POSTURE_MAX_FILE_MB": ("20", "MB per image"),
    "POSTURE_MAX_EPOCHS": ("30", "epochs per training run"),
    "POSTURE_SESSION_TTL_MIN": ("120", "minutes a session's files are kept after its last action"),
    "POSTURE_MAX_STREAMS": ("8", "live-monitor webcam streams served at once"),
    "POSTURE_CHECKPOINTS": ("checkpoints/", "folder of the bundled models"),
    "POSTURE_EXAMPLES": ("examples/", "folder of example photos (empty: none)"),
    "POSTURE_PRECISION": ("auto", "fp32, bf16, int8, or auto (bf16 on CPUs with native bf16)"),
    "POSTURE_DEVICE": ("auto", "cpu, cuda, mps, or auto"),
    "POSTURE_MIRROR": ("on", "on: answer with the mean of the picture and its mirror image; off: the picture alone"),
    "POSTURE_RESNET18_WEIGHTS": ("", "a local copy of the ImageNet weights for resnet18 (empty: download)"),
}


class SettingsError(UsageError):
    """An environment variable the app cannot start with."""


@dataclass(frozen=True)
class Settings:
    """Everything the app is configured with; `from_env` builds it, tests build it directly."""

    limits: UploadLimits = UploadLimits()
    max_epochs: int = 30
    session_ttl_min: float = 120.0
    max_streams: int = 8
    checkpoints: Path = REPO / "checkpoints"
    examples: Path | None = REPO / "examples"
    precision: str = "auto"
    device: str = "auto"
    mirror: bool = True
    imagenet_weights: Path | None = None

    @property
    def session_ttl_s(self) -> float:
        """How long a session's files outlive its last action, in seconds."""
        return 60.0 * self.session_ttl_min

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read and check every POSTURE_* variable; raises SettingsError naming the first bad one."""
        env = os.environ if env is None else env
        limits = UploadLimits(
            max_files=int(_number(env, "POSTURE_MAX_UPLOAD_FILES", integer=True, low=1)),
            max_total_bytes=int(_number(env, "POSTURE_MAX_UPLOAD_MB", low=0.001) * MB),
            max_file_bytes=int(_number(env, "POSTURE_MAX_FILE_MB", low=0.001) * MB),
        )
        return cls(
            limits=limits,
            max_epochs=int(_number(env, "POSTURE_MAX_EPOCHS", integer=True, low=1, high=1000)),
            session_ttl_min=_number(env, "POSTURE_SESSION_TTL_MIN", low=0.01),
            max_streams=int(_number(env, "POSTURE_MAX_STREAMS", integer=True, low=1, high=64)),
            checkpoints=_folder(env, "POSTURE_CHECKPOINTS") or REPO / "checkpoints",
            examples=_folder(env, "POSTURE_EXAMPLES", empty_means_none=True),
            precision=_choice(env, "POSTURE_PRECISION", PRECISIONS),
            device=_choice(env, "POSTURE_DEVICE", DEVICES),
            mirror=_choice(env, "POSTURE_MIRROR", SWITCH) == "on",
            imagenet_weights=_file(env, "POSTURE_RESNET18_WEIGHTS"),
        )


def _raw(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def _number(env: Mapping[str, str], name: str, integer: bool = False, low: float | None = None,
            high: float | None = None) -> float:
    raw = _raw(env, name) or VARIABLES[name][0]
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise SettingsError(f"{name}={raw!r}: expected {kind} ({VARIABLES[name][1]})") from None
    if (low is not None and value < low) or (high is not None and value > high) or value != value:
        bounds = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
        raise SettingsError(f"{name}={raw!r}: must be {bounds} ({VARIABLES[name][1]})")
    return value


def _folder(env: Mapping[str, str], name: str, empty_means_none: bool = False) -> Path | None:
    if name not in env:
        default = REPO / VARIABLES[name][0].rstrip("/")
        return default if default.is_dir() or not empty_means_none else None
    raw = _raw(env, name)
    if not raw:
        if empty_means_none:
            return None
        raise SettingsError(f"{name} is set but empty: name a folder ({VARIABLES[name][1]})")
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise SettingsError(f"{name}={raw!r}: no such folder ({VARIABLES[name][1]})")
    return path


def _file(env: Mapping[str, str], name: str) -> Path | None:
    """An optional file: unset or empty is None; set, it must exist."""
    raw = _raw(env, name)
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise SettingsError(f"{name}={raw!r}: no such file ({VARIABLES[name][1]})")
    return path


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = (_raw(env, name) or VARIABLES[name][0]).lower()
    if raw not in choices:
        raise SettingsError(f"{name}={raw!r}: choose one of {', '.join(choices)}")
    return raw
