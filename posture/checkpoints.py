"""Self-describing checkpoints: one safetensors file per model, metadata in its header.

The header says everything needed to use the model (architecture, ordered class
names, input size, normalisation) and where it came from (initialisation,
training configuration, metrics, learning curves), so nothing downstream
hard-codes labels. Loading parses JSON and raw tensors only: nothing is unpickled.
Saving goes to a temporary file that is renamed into place, so a crash or a full
disk never leaves a half-written model where a good one was.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from posture._version import __version__
from posture.errors import CheckpointError, UsageError
from posture.models import AUX_HEADS, arch_config, build_model, list_models
from posture.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "FORMAT",
    "ModelInfo",
    "BUNDLED_DIR",
    "CHECKPOINTS_ENV",
    "bundled_checkpoints",
    "bundled_dir",
    "load_checkpoint",
    "read_info",
    "record_metrics",
    "resolve_checkpoint",
    "save_checkpoint",
]

FORMAT = "posture-checkpoint/1"
# Our headers hold a few KB of JSON; anything near this is not one of ours.
MAX_HEADER_BYTES = 4 * 1024 * 1024
_STORAGE = {"float32": torch.float32, "float16": torch.float16}
_JSON_FIELDS = ("class_names", "mean", "std", "metrics", "train_config", "history", "heads")


@dataclass
class ModelInfo:
    """What a checkpoint says about its model."""

    arch: str
    class_names: list[str]
    input_size: int
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    init: str = "scratch"  # where the weights started: scratch, imagenet, a file or checkpoint
    created_at: str = ""
    posture_version: str = __version__
    metrics: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)  # one dict per epoch
    storage_dtype: str = "float32"  # "float16" halves the file; weights load back as float32
    heads: list[str] = field(default_factory=list)  # auxiliary heads: "cva", "side_view" (see posture.models)
    cam_layer: str = ""  # the layer Grad-CAM explains by default; "" = the architecture's default
    cva_threshold: float = 50.0  # degrees: a CVA below this counts as turtle neck (shown with the estimate)
    output_stride: int = 0  # input pixels per last-stage cell; 0 = the architecture's default

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def default_cam_layer(self) -> str:
        """The layer Grad-CAM explains unless the caller picks another."""
        return self.cam_layer or arch_config(self.arch).cam_layer

    def to_metadata(self) -> dict[str, str]:
        """Flatten to the str -> str mapping a safetensors header holds."""
        out = {"format": FORMAT}
        for key, value in asdict(self).items():
            out[key] = json.dumps(value) if key in _JSON_FIELDS else str(value)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> "ModelInfo":
        """Parse and validate a header's metadata; raises CheckpointError."""
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{source}: not a posture checkpoint (no '{FORMAT}' header)")
        try:
            kwargs: dict[str, Any] = {
                k: json.loads(v) if k in _JSON_FIELDS else v
                for k, v in meta.items()
                if k in cls.__dataclass_fields__
            }
            kwargs["input_size"] = int(kwargs["input_size"])
            if "cva_threshold" in kwargs:
                kwargs["cva_threshold"] = float(kwargs["cva_threshold"])
            kwargs["output_stride"] = int(kwargs.get("output_stride", 0))
            info = cls(**kwargs)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: damaged checkpoint metadata ({exc})") from exc
        if info.arch not in list_models():
            raise CheckpointError(f"{source}: unknown architecture {info.arch!r}")
        names = info.class_names
        if (
            not isinstance(names, list)
            or len(names) < 2
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise CheckpointError(f"{source}: class_names must be 2 or more distinct strings")
        if not isinstance(info.heads, list) or not set(info.heads) <= set(AUX_HEADS):
            raise CheckpointError(f"{source}: unknown auxiliary heads {info.heads!r}")
        if info.cam_layer and info.cam_layer not in arch_config(info.arch).cam_layers:
            raise CheckpointError(f"{source}: {info.arch} has no layer {info.cam_layer!r} to explain")
        if info.output_stride:
            try:
                arch_config(info.arch).builder.check_output_stride(info.output_stride)
            except UsageError as exc:
                raise CheckpointError(f"{source}: {exc}") from exc
        if info.storage_dtype not in _STORAGE:
            raise CheckpointError(f"{source}: unknown storage_dtype {info.storage_dtype!r}")
        if not 16 <= info.input_size <= 1024 or len(info.mean) != 3 or len(info.std) != 3:
            raise CheckpointError(f"{source}: implausible input_size or normalisation")
        return info


def save_checkpoint(path: str | Path, model: nn.Module, info: ModelInfo) -> Path:
    """Write `model` and `info` to `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not info.created_at:
        info.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if info.storage_dtype not in _STORAGE:
        raise ValueError(f"storage_dtype must be one of {', '.join(_STORAGE)}, got {info.storage_dtype!r}")
    dtype = _STORAGE[info.storage_dtype]
    state = {  # the side-view gate's statistics stay float32: float16 would blur its distances
        k: (v.to(dtype) if v.is_floating_point() and not k.startswith("heads.gate.") else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=info.to_metadata())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a model file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_header_size(path: Path) -> None:
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from exc
    if len(head) < 8:
        raise CheckpointError(f"{path}: not a safetensors file (too short)")
    (size,) = struct.unpack("<Q", head)
    if size > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: not a posture checkpoint (header claims {size} bytes)")


def read_info(path: str | Path) -> ModelInfo:
    """Read only the metadata of a checkpoint (cheap: no tensors are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_header_size(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(
            f"{path}: not a safetensors checkpoint ({exc}). Only .safetensors files made by "
            "posture can be loaded; pickled .pt/.pth files are refused"
        ) from exc
    return ModelInfo.from_metadata(meta, str(path))


def load_checkpoint(path: str | Path) -> tuple[nn.Module, ModelInfo]:
    """Rebuild the model a checkpoint describes, in eval mode; raises CheckpointError."""
    info = read_info(path)
    model = build_model(info.arch, num_classes=info.num_classes, heads=info.heads,
                        output_stride=info.output_stride or None)
    try:
        state: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                state[key] = f.get_tensor(key)
        model.load_state_dict(state, strict=True)
    except Exception as exc:  # noqa: BLE001 - shape/key mismatches and decode errors
        raise CheckpointError(f"{path}: tensors do not match a {info.arch} model ({exc})") from exc
    return model.eval(), info


BUNDLED_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
CHECKPOINTS_ENV = "POSTURE_CHECKPOINTS"  # read by the CLI and the app, which pass the folder in


def bundled_dir(folder: str | Path | None = None) -> Path:
    """Folder of the bundled checkpoints: `folder` if given, else the repo's checkpoints/."""
    return Path(folder) if folder else BUNDLED_DIR


def bundled_checkpoints(folder: str | Path | None = None) -> dict[str, Path]:
    """Name -> path of every bundled checkpoint in `bundled_dir(folder)` (the file stem is the name)."""
    folder = bundled_dir(folder)
    return {p.stem: p for p in sorted(folder.glob("*.safetensors"))} if folder.is_dir() else {}


def resolve_checkpoint(name_or_path: str | Path, folder: str | Path | None = None) -> Path:
    """A bundled model's name (e.g. "resnet18", looked up in `bundled_dir(folder)`) or a path -> an existing checkpoint path."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = bundled_checkpoints(folder)
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    known = ", ".join(bundled) or f"none found in {bundled_dir(folder)}"
    raise CheckpointError(f"{name_or_path}: no such checkpoint file or bundled model (bundled: {known})")


def record_metrics(path: str | Path, name: str, metrics: dict[str, Any]) -> ModelInfo:
    """Store `metrics` under `name` (e.g. "test") in a checkpoint's header, atomically."""
    model, info = load_checkpoint(path)
    info.metrics = {**info.metrics, name: metrics}
    save_checkpoint(path, model, info)
    return info
