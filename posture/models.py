"""The two model families and their registry.

`resnet14` is the small CIFAR-style ResNet of the original design, trained from
scratch. `resnet18` is torchvision's ImageNet ResNet-18 with a new head, for
transfer learning. Both expose the same small surface: `forward_features`,
`reset_classifier`, `classifier` and `cam_layer` (the last conv stage, where
Grad-CAM hooks). This module does no I/O: pretrained weights are loaded by
`posture.pretrained`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from posture.errors import WeightsError

__all__ = [
    "BasicBlock",
    "ResNet14",
    "build_model",
    "cam_layer",
    "classifier",
    "count_parameters",
    "freeze_backbone",
    "list_models",
    "load_backbone",
    "pooled_features",
    "reset_classifier",
]


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet14(nn.Module):
    """CIFAR-style ResNet: 16/32/64 channels, two BasicBlocks per stage, GAP, linear."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(16, 16), BasicBlock(16, 16))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, stride=2), BasicBlock(32, 32))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, stride=2), BasicBlock(64, 64))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 64, H/4, W/4) feature map of the last conv stage."""
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


class ResNet18(tv_resnet.ResNet):
    """torchvision's ResNet-18, with the same small surface as ResNet14."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 512, H/32, W/32) feature map of the last conv stage."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# Which names are the trainable head: the only part left trainable by freeze_backbone.
_HEAD = "fc"

# Architectures with published backbone weights (torchvision's ImageNet ResNet-18).
_PRETRAINED = {"resnet18"}

_REGISTRY: dict[str, Callable[[int], nn.Module]] = {
    "resnet14": ResNet14,
    "resnet18": ResNet18,
}


def list_models() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 2, weights: str | None = None) -> nn.Module:
    """Build a model by registry name with a fresh head for `num_classes` classes.

    `weights` initialises the backbone: None (random), "imagenet" or a path to a
    torchvision-format state dict (see `posture.pretrained`); resnet18 only.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    if num_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {num_classes}")
    model = _REGISTRY[name](num_classes)
    if weights is not None:
        if name not in _PRETRAINED:
            raise ValueError(f"{name} has no pretrained weights; it is trained from scratch")
        from posture.pretrained import backbone_state_dict  # the only I/O, kept out of this module

        load_backbone(model, backbone_state_dict(weights))
    return model


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy every backbone tensor of `state` into `model`, leaving the head as it is."""
    state = {k: v for k, v in state.items() if not k.startswith(_HEAD + ".")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"weights do not fit {type(model).__name__}: {exc}") from exc
    missing = [k for k in missing if not k.startswith(_HEAD + ".")]
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def cam_layer(model: nn.Module) -> nn.Module:
    """The last conv stage of `model`: the layer Grad-CAM explains."""
    if isinstance(model, ResNet14):
        return model.layer3
    if isinstance(model, tv_resnet.ResNet):
        return model.layer4
    raise TypeError(f"no Grad-CAM layer known for {type(model).__name__}")


def classifier(model: nn.Module) -> nn.Linear:
    """The model's final linear layer."""
    return getattr(model, _HEAD)


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, D) globally pooled features: what the head sees."""
    return torch.flatten(model.avgpool(model.forward_features(x)), 1)


def reset_classifier(model: nn.Module, num_classes: int) -> None:
    """Replace the head with a fresh linear layer for `num_classes` classes."""
    old = classifier(model)
    setattr(model, _HEAD, nn.Linear(old.in_features, num_classes))


def freeze_backbone(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Make every parameter but the head's untrainable (or trainable again); returns `model`."""
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or name.startswith(_HEAD + "."))
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
