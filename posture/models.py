"""The two model families, their registry, and the surface every model shares.

Every model is a `PostureNet`: named conv stages (the backbone), global average pooling and
a linear classifier, plus optional auxiliary heads on the same pooled features:

- `cva`: the craniovertebral angle in degrees (a regression);
- `side_view`: a logit saying whether the picture holds a side view of a person at all;
- `gate`: a familiarity gate (`posture.gate`) fitted after training; when present, the side-view
  logit is the smaller of the head's and the gate's, so unfamiliar pictures are no side view.

`resnet14` is the small CIFAR-style ResNet of the original design, trained from scratch.
`resnet18` is torchvision's ResNet-18 with a new head, for transfer learning. Both keep
torchvision's parameter names, so checkpoints without auxiliary heads load unchanged.
The registry (`ARCHS`) carries each architecture's settings: default input size and
initialisation, whether the backbone is frozen by default, the layer Grad-CAM explains.
This module does no I/O: pretrained weights are loaded by `posture.pretrained`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from posture.errors import UsageError, WeightsError
from posture.gate import FeatureGate

__all__ = [
    "ARCHS",
    "AUX_HEADS",
    "ArchConfig",
    "BasicBlock",
    "ModelOutput",
    "PostureNet",
    "ResNet14",
    "ResNet18",
    "arch_config",
    "build_model",
    "count_parameters",
    "cva_from_head",
    "cva_to_head",
    "freeze_backbone",
    "list_models",
    "load_backbone",
    "reset_classifier",
]

AUX_HEADS = ("cva", "side_view", "gate")
# The cva head predicts (degrees - centre) / scale: targets of order 1 for any loss.
_CVA_CENTRE, _CVA_SCALE = 50.0, 15.0
_AUX_HIDDEN = 128


def cva_to_head(deg: torch.Tensor) -> torch.Tensor:
    """Degrees -> the cva head's target scale."""
    return (deg - _CVA_CENTRE) / _CVA_SCALE


def cva_from_head(out: torch.Tensor) -> torch.Tensor:
    """The cva head's output -> degrees."""
    return out * _CVA_SCALE + _CVA_CENTRE


@dataclass
class ModelOutput:
    """Everything one forward pass gives: logits, and each auxiliary head's output when present."""

    logits: torch.Tensor  # (B, K)
    cva_deg: torch.Tensor | None = None  # (B,) degrees
    side_view_logit: torch.Tensor | None = None  # (B,) > 0: a side view of a person


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


class PostureNet(nn.Module):
    """The surface shared by every model: named stages, a pooled linear head, auxiliary heads.

    Subclasses set `stage_names` (the stem first, then the conv stages Grad-CAM may explain)
    and define `fc`, `avgpool` and `stem`; `heads` holds the auxiliary heads that exist.
    """

    stage_names: tuple[str, ...] = ()
    output_strides: tuple[int, ...] = ()  # input pixels per last-stage cell this model can be built with, default first
    fc: nn.Linear
    avgpool: nn.Module
    heads: nn.ModuleDict

    def stem(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @property
    def cam_layers(self) -> list[str]:
        """Stages whose output Grad-CAM can explain, input side first."""
        return list(self.stage_names[1:])

    def _stage(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.stem if name == "stem" else getattr(self, name)

    def forward_features(self, x: torch.Tensor, upto: str | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> the feature map after stage `upto` (default: the last conv stage)."""
        self._check_layer(upto)
        for name in self.stage_names:
            x = self._stage(name)(x)
            if name == upto:
                break
        return x

    def forward_after(self, features: torch.Tensor, after: str) -> torch.Tensor:
        """The output of stage `after` -> the last conv stage's feature map (the rest of the backbone)."""
        self._check_layer(after)
        for name in self.stage_names[self.stage_names.index(after) + 1 :]:
            features = self._stage(name)(features)
        return features

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) last-stage features -> (B, C) pooled features: what every head sees."""
        return torch.flatten(self.avgpool(features), 1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Last-stage features -> class logits (B, K)."""
        return self.fc(self.pool(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> class logits (B, K)."""
        return self.forward_head(self.forward_features(x))

    def outputs_from_features(self, features: torch.Tensor) -> ModelOutput:
        """Last-stage features -> logits and every auxiliary head's output."""
        pooled = self.pool(features)
        out = ModelOutput(self.fc(pooled))
        if "cva" in self.heads:
            out.cva_deg = cva_from_head(self.heads["cva"](pooled)[:, 0])
        if "side_view" in self.heads:
            out.side_view_logit = self.heads["side_view"](pooled)[:, 0]
            if "gate" in self.heads:
                out.side_view_logit = torch.minimum(out.side_view_logit, self.heads["gate"](pooled))
        return out

    def forward_outputs(self, x: torch.Tensor) -> ModelOutput:
        """(B, 3, H, W) -> logits and every auxiliary head's output, from one backbone pass."""
        return self.outputs_from_features(self.forward_features(x))

    def cam_layer(self, name: str | None = None) -> nn.Module:
        """The stage Grad-CAM hooks: `name` (e.g. "layer3"), default the last conv stage."""
        name = name or self.stage_names[-1]
        self._check_layer(name)
        return getattr(self, name)

    @property
    def output_stride(self) -> int:
        """Input pixels per cell of the last stage's feature map (and of its Grad-CAM)."""
        return self.output_strides[0]

    @classmethod
    def check_output_stride(cls, stride: int) -> None:
        """UsageError unless this architecture can be built with `stride`."""
        if stride not in cls.output_strides:
            strides = " or ".join(map(str, cls.output_strides))
            raise UsageError(f"{cls.__name__.lower()}'s output stride is {strides}, not {stride}")

    def set_output_stride(self, stride: int) -> "PostureNet":
        """Build the last stage for `stride` (one of `output_strides`); the weights are unchanged. Returns self."""
        self.check_output_stride(stride)  # a model with a single stride is already built for it
        return self

    def add_heads(self, names: Sequence[str]) -> "PostureNet":
        """Give the model fresh auxiliary heads (`AUX_HEADS`) it does not have yet; returns it."""
        for name in names:
            if name not in AUX_HEADS:
                raise UsageError(f"unknown auxiliary head {name!r}; choose from {', '.join(AUX_HEADS)}")
            if name not in self.heads:
                d = self.fc.in_features
                self.heads[name] = FeatureGate(d, self.fc.out_features) if name == "gate" else nn.Sequential(
                    nn.Linear(d, _AUX_HIDDEN), nn.ReLU(inplace=True), nn.Linear(_AUX_HIDDEN, 1))
        return self

    @property
    def head_names(self) -> list[str]:
        """The auxiliary heads this model has, in `AUX_HEADS` order."""
        return [n for n in AUX_HEADS if n in self.heads]

    def _check_layer(self, name: str | None) -> None:
        if name is not None and name not in self.cam_layers:
            raise UsageError(f"{type(self).__name__} has no layer {name!r}; choose from {', '.join(self.cam_layers)}")


class ResNet14(PostureNet):
    """CIFAR-style ResNet: 16/32/64 channels, two BasicBlocks per stage, GAP, linear."""

    stage_names = ("stem", "layer1", "layer2", "layer3")
    output_strides = (4,)

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
        self.heads = nn.ModuleDict()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(x)))


class ResNet18(tv_resnet.ResNet, PostureNet):
    """torchvision's ResNet-18 (same parameter names), with the PostureNet surface."""

    stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")
    output_strides = (32, 16)

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
        self.heads = nn.ModuleDict()

    @property
    def output_stride(self) -> int:
        return 16 if self.layer4[0].conv1.stride == (1, 1) else 32

    def set_output_stride(self, stride: int) -> "ResNet18":
        """32: torchvision's layout. 16: `layer4` keeps `layer3`'s resolution (its first block
        does not subsample), so the last stage and its Grad-CAM are twice as fine, for about 1.7x
        the compute; every weight keeps its shape, so ImageNet or stride-32 weights still load."""
        self.check_output_stride(stride)
        first = self.layer4[0]
        for conv in (first.conv1, first.downsample[0]):
            conv.stride = (stride // 16, stride // 16)
        return self

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    forward = PostureNet.forward


@dataclass(frozen=True)
class ArchConfig:
    """One architecture's settings: everything that used to be spelled out per name elsewhere."""

    name: str
    builder: type[PostureNet]
    input_size: int  # default training input (px, square)
    init: str  # default initialisation for training: "scratch" or "imagenet"
    pretrained: bool  # published backbone weights exist ("imagenet" and weights files work)
    cam_layer: str  # the layer Grad-CAM explains unless a checkpoint records another
    lr_scratch: float = 2e-3  # default learning rates: training everything from scratch,
    lr_finetune: float = 3e-4  # fine-tuning pretrained weights,
    lr_head: float = 1e-2  # training the head alone on a frozen backbone

    @property
    def cam_layers(self) -> list[str]:
        """The stages Grad-CAM can explain, input side first."""
        return list(self.builder.stage_names[1:])  # type: ignore[attr-defined]

    def freeze_by_default(self, init: str) -> bool:
        """A backbone starting from published weights is frozen unless asked otherwise."""
        return self.pretrained and init not in ("scratch",)

    def default_lr(self, init: str, frozen: bool) -> float:
        """The learning rate for this initialisation and freeze choice."""
        if frozen:
            return self.lr_head
        return self.lr_scratch if init == "scratch" else self.lr_finetune


ARCHS: dict[str, ArchConfig] = {
    "resnet14": ArchConfig("resnet14", ResNet14, input_size=96, init="scratch", pretrained=False,
                           cam_layer="layer3"),
    "resnet18": ArchConfig("resnet18", ResNet18, input_size=224, init="imagenet", pretrained=True,
                           cam_layer="layer4"),
}


def list_models() -> list[str]:
    """Names accepted by `build_model`."""
    return sorted(ARCHS)


def arch_config(name: str) -> ArchConfig:
    """The registry entry of an architecture; UsageError names the known ones."""
    if name not in ARCHS:
        raise UsageError(f"unknown model {name!r}; choose one of {', '.join(list_models())}")
    return ARCHS[name]


def build_model(
    name: str, num_classes: int = 2, weights: str | None = None, heads: Sequence[str] = (),
    imagenet_file: str | Path | None = None, output_stride: int | None = None,
) -> PostureNet:
    """Build a model by registry name with a fresh head for `num_classes` classes.

    `weights` initialises the backbone: None (random), "imagenet" (from `imagenet_file`, a
    local copy, if given; else downloaded) or a path to a torchvision-format state dict (see
    `posture.pretrained`); only for architectures with published weights. `heads` adds
    auxiliary heads (`AUX_HEADS`). `output_stride` (None: the architecture's default) sets how
    many input pixels one cell of the last stage covers (see `PostureNet.set_output_stride`).
    """
    cfg = arch_config(name)
    if num_classes < 2:
        raise UsageError(f"a classifier needs at least 2 classes, got {num_classes}")
    model = cfg.builder(num_classes)
    if output_stride is not None:
        model.set_output_stride(output_stride)
    if weights is not None:
        if not cfg.pretrained:
            raise UsageError(f"{name} has no pretrained weights; it is trained from scratch")
        from posture.pretrained import backbone_state_dict  # the only I/O, kept out of this module

        load_backbone(model, backbone_state_dict(weights, imagenet_file))
    return model.add_heads(heads)


def _is_head(key: str) -> bool:
    return key.startswith(("fc.", "heads."))


def load_backbone(model: PostureNet, state: dict[str, torch.Tensor]) -> None:
    """Copy every backbone tensor of `state` into `model`, leaving the heads as they are."""
    state = {k: v for k, v in state.items() if not _is_head(k)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"weights do not fit {type(model).__name__}: {exc}") from exc
    missing = [k for k in missing if not _is_head(k)]
    if missing or unexpected:
        raise WeightsError(
            f"weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def reset_classifier(model: PostureNet, num_classes: int) -> None:
    """Replace the classifier with a fresh linear layer for `num_classes` classes."""
    model.fc = nn.Linear(model.fc.in_features, num_classes)


def freeze_backbone(model: PostureNet, frozen: bool = True) -> PostureNet:
    """Make every parameter but the heads' untrainable (or trainable again); returns `model`."""
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen or _is_head(name))
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
