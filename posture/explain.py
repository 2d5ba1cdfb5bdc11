"""Grad-CAM with Captum's LayerGradCam on one of a model's conv stages.

One forward pass serves the prediction, the auxiliary heads' outputs and the
explanation: the forward function handed to Captum keeps everything it computed, and when the caller asks
for the predicted class it returns that class's logit (argmax is piecewise
constant, so its gradient is the predicted class's gradient). The backbone's
parameters do not record a graph; only the layer output does (Captum asks for its
gradient), so the backward pass runs through the pooling and the head alone.

Captum registers its hooks on the shared layer for the duration of a call, so
calls on one model are serialised by a per-model lock; different models run in
parallel. The caller's train/eval mode and requires_grad flags are restored.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from posture.models import ModelOutput

__all__ = ["CamResult", "grad_cam", "mirror_mean", "model_lock"]

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.Lock:
    """The lock that serialises hook-based work on `model`."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


@contextmanager
def _inference_setup(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the duration; restores both afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


@dataclass
class CamResult:
    """Outputs of one forward pass and the Grad-CAM of the explained class per image."""

    outputs: ModelOutput  # logits (B, num_classes) and any auxiliary outputs, detached
    targets: torch.Tensor  # (B,) class index explained for each image
    cams: torch.Tensor  # (B, h, w) at the layer's resolution, ReLU applied, not normalised

    @property
    def logits(self) -> torch.Tensor:
        return self.outputs.logits


def mirror_mean(out: ModelOutput) -> ModelOutput:
    """Outputs of a batch `[x, x mirrored]` (2B rows) -> each image's and its mirror's mean, in both halves.

    A side view mirrored is a side view with the same angle, and the models train on mirrored
    pictures, so averaging the two predictions removes the part of the answer that depends on
    which way the person faces. Logits are averaged (then turned into probabilities), as are the
    angle and the side-view logit.
    """

    def mean(v: torch.Tensor) -> torch.Tensor:
        if v.shape[0] % 2:
            raise ValueError(f"mirror_mean needs an even batch ([x, x mirrored]), got {v.shape[0]} rows")
        m = (v[: v.shape[0] // 2] + v[v.shape[0] // 2 :]) / 2
        return torch.cat([m, m])

    return ModelOutput(*(None if v is None else mean(v) for v in (out.logits, out.cva_deg, out.side_view_logit)))


def _detached(out: ModelOutput | torch.Tensor) -> ModelOutput:
    if isinstance(out, torch.Tensor):
        return ModelOutput(out.detach())
    return ModelOutput(*(None if v is None else v.detach() for v in (out.logits, out.cva_deg, out.side_view_logit)))


def grad_cam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | list[int] | None = None,
    layer: nn.Module | None = None,
    combine: Callable[[ModelOutput], ModelOutput] | None = None,
) -> CamResult:
    """Forward `inputs` once and return the outputs plus Grad-CAM for `target` at `layer`.

    `model` returns logits or a `ModelOutput`; `layer` is one of its modules (default: a
    PostureNet's last conv stage). `target=None` explains each image's predicted class.
    `combine` (optional) maps the model's outputs to the ones explained and returned, keeping
    the batch size: e.g. `mirror_mean`, which gives each image and its mirror image their mean.
    """
    layer = layer if layer is not None else model.cam_layer()
    captured: dict[str, ModelOutput] = {}

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        if combine is not None:
            out = combine(out if isinstance(out, ModelOutput) else ModelOutput(out))
        captured["out"] = _detached(out)
        logits = out if isinstance(out, torch.Tensor) else out.logits
        if target is None:
            return logits.gather(1, logits.argmax(dim=1, keepdim=True))  # (B, 1)
        return logits

    from captum.attr import LayerGradCam  # imported on first use: captum costs ~0.6 s at start-up

    with model_lock(model), _inference_setup(model), torch.enable_grad():
        attr = LayerGradCam(forward, layer).attribute(
            inputs, target=0 if target is None else target, relu_attributions=True
        )  # (B, 1, h, w)
    outputs = captured["out"]
    if target is None:
        targets = outputs.logits.argmax(dim=1)
    else:
        targets = torch.as_tensor(target).expand(outputs.logits.shape[0]).clone()
    return CamResult(outputs=outputs, targets=targets, cams=attr.detach()[:, 0])
