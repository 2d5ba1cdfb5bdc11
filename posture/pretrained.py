"""Backbone weights for transfer learning: ImageNet through torchvision, or a local file.

Online, "imagenet" goes through torchvision's weights API, which downloads
`ResNet18_Weights.IMAGENET1K_V1` once into the torch cache. Offline, pass a local copy in
torchvision's state-dict format, e.g. `resnet18-f37072fd.pth` (`local=`, `TrainConfig.imagenet_weights`;
the CLI and the app read it from `POSTURE_RESNET18_WEIGHTS`), or give the file as `--init FILE`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import ResNet18_Weights

from posture.errors import WeightsError

__all__ = ["IMAGENET_ENV", "backbone_state_dict", "imagenet_available", "load_state_dict_file"]

IMAGENET_ENV = "POSTURE_RESNET18_WEIGHTS"
_WEIGHTS = ResNet18_Weights.IMAGENET1K_V1
_FILENAME = Path(_WEIGHTS.url).name
_HOW_TO = (
    f"To work offline, download {_WEIGHTS.url} where there is internet access, then either set "
    f"{IMAGENET_ENV}=/path/to/{_FILENAME}, pass --init /path/to/{_FILENAME}, or copy it into "
    "the torch cache ($TORCH_HOME/hub/checkpoints/, by default ~/.cache/torch/hub/checkpoints/). "
    "Or train without pretrained weights: --init scratch."
)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision-format state dict (.pth/.pt, tensors only; or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist. {_HOW_TO}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            # weights_only=True unpickles tensors and plain containers only, never code.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure means a bad file
        raise WeightsError(f"{path} is not a readable state dict: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return state


def _cached_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _FILENAME


def imagenet_available(local: str | Path | None = None) -> bool:
    """Whether ImageNet weights can be had without a download (the `local` file, or the torch cache)."""
    return Path(local).is_file() if local else _cached_file().is_file()


def backbone_state_dict(weights: str | Path, local: str | Path | None = None) -> dict[str, torch.Tensor]:
    """"imagenet" (the `local` copy if given, else torchvision's download) or a file path."""
    if str(weights) != "imagenet":
        return load_state_dict_file(weights)
    if local:
        return load_state_dict_file(local)
    try:
        return _WEIGHTS.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # noqa: BLE001 - network, proxy, hash and disk errors alike
        raise WeightsError(f"could not get ImageNet weights for resnet18 ({exc}). {_HOW_TO}") from exc
