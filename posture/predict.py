"""Prediction with explanation: image in; verdict, probabilities, CVA estimate, side-view flag and Grad-CAM out."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from posture.checkpoints import ModelInfo, load_checkpoint, resolve_checkpoint
from posture.devices import resolve_device
from posture.errors import UsageError
from posture.backends import EXPORT_GUARD
from posture.explain import grad_cam, mirror_mean
from posture.images import DEFAULT_MAX_SIDE, ImageSource, load_image
from posture.models import ModelOutput
from posture.overlay import encode_image, overlay_heatmap
from posture.preprocess import Letterbox, resize_map, to_input
from posture.serving import ServingModel

__all__ = ["Prediction", "Predictor"]


@dataclass
class Prediction:
    """A verdict on one image, with the Grad-CAM heatmap over that same image.

    `cam` is the explanation as computed, over the image's frame at the model's input
    scale (e.g. 96 x 72 for a 4:3 photo and a 96 px model); `heatmap` is the same map
    brought to the image's pixels, computed on first use. Overlays are drawn from `cam`.
    """

    label: str
    probabilities: dict[str, float]  # every class, in the checkpoint's order
    image: Image.Image  # upright RGB image the heatmap lies on (reduced-scale decode)
    target: str | None = None  # the class explained
    layer: str | None = None  # the layer Grad-CAM explained
    cva_deg: float | None = None  # estimated craniovertebral angle; None when the model has no cva head
    side_view_prob: float | None = None  # P(the picture holds a side view of a person); None without that head
    cam: np.ndarray | None = field(default=None, repr=False)  # (h, w) float32 in [0, 1], peak 1
    cam_empty: bool = False  # Grad-CAM was zero everywhere: nothing to show for `target`
    latency_ms: float = 0.0
    letterbox: Letterbox | None = field(default=None, repr=False)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    @property
    def side_view(self) -> bool | None:
        """Whether the picture holds a side view of a person; None when the model cannot tell."""
        return None if self.side_view_prob is None else self.side_view_prob >= 0.5

    @cached_property
    def heatmap(self) -> np.ndarray | None:
        """(image.height, image.width) float32 in [0, 1], peak 1 unless empty; None without Grad-CAM."""
        if self.cam is None:
            return None
        full = resize_map(self.cam, self.image.height, self.image.width)
        peak = float(full.max())
        return full / peak if peak > 0.0 else np.zeros_like(full)

    def overlay(self, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
        """The heatmap blended over the image; the plain image when there is nothing to show."""
        if self.cam is None or self.cam_empty:
            return self.image.copy()
        return overlay_heatmap(self.image, self.cam, alpha=alpha, colormap=colormap)

    def overlay_bytes(self, alpha: float = 0.5, fmt: str = "jpeg", colormap: str = "jet") -> bytes:
        """The overlay encoded for a browser: "jpeg" (quality 90, fastest) or "png" (fast, lossless)."""
        return encode_image(self.overlay(alpha, colormap), fmt)

    def to_dict(self) -> dict:
        """JSON-friendly summary (no pixels)."""
        return {
            "label": self.label,
            "probabilities": self.probabilities,
            "target": self.target,
            "layer": self.layer,
            "cva_deg": None if self.cva_deg is None else round(self.cva_deg, 2),
            "side_view": self.side_view,
            "side_view_prob": None if self.side_view_prob is None else round(self.side_view_prob, 4),
            "cam_empty": self.cam_empty,
            "latency_ms": round(self.latency_ms, 2),
        }


class Predictor:
    """One read-only model and its metadata; safe to share between threads.

    The model it is given is left untouched: the Predictor serves a private copy, in eval
    mode, on `device` ("auto": CUDA, then MPS, then the CPU; see `posture.devices`).
    `precision` ("auto", "fp32", "bf16" or "int8"; None means "auto") picks the
    serving path (see `posture.serving`); the fast backbone for a layer is built on its first
    prediction. With `mirror` (the default) every picture is run together with its mirror image
    and the two answers are averaged (`posture.explain.mirror_mean`; the Grad-CAM of the mirror
    image is mirrored back): a verdict that does not depend on which way the person faces, at
    the cost of a second pass through the model.
    """

    def __init__(
        self,
        model: nn.Module,
        info: ModelInfo,
        name: str | None = None,
        precision: str | None = None,
        device: str | torch.device | None = "auto",
        mirror: bool = True,
    ) -> None:
        self._setup(copy.deepcopy(model), info, name, precision, device, mirror)

    def _setup(
        self, model: nn.Module, info: ModelInfo, name: str | None, precision: str | None,
        device: str | torch.device | None, mirror: bool,
    ) -> None:
        """Take ownership of `model` (no copy) and prepare it for serving."""
        self.mirror = bool(mirror)
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval().requires_grad_(False)  # Grad-CAM needs activation gradients only
        self.info = info
        self.name = name or info.arch
        self.serving = ServingModel(self.model, info.input_size, precision, self.device, info.mean, info.std)

    @property
    def precision(self) -> str:
        """The precision asked for, resolved for this machine: "fp32", "bf16" (or "fp16" on a GPU)."""
        return self.serving.precision

    def backend(self, layer: str | None = None) -> str:
        """What computes the backbone through `layer` (default: the explained layer), e.g. "onnxruntime-fp32"."""
        return self.serving.backend(self._layer(layer))

    @classmethod
    def from_checkpoint(
        cls, name_or_path: str | Path, precision: str | None = None, device: str | torch.device | None = "auto",
        checkpoints: str | Path | None = None, mirror: bool = True,
    ) -> "Predictor":
        """Load a bundled model by name (e.g. "resnet18", from `checkpoints`, default the repo's
        checkpoints/) or a checkpoint file."""
        path = resolve_checkpoint(name_or_path, checkpoints)
        model, info = load_checkpoint(path)
        predictor = cls.__new__(cls)
        predictor._setup(model, info, path.stem, precision, device, mirror)  # the freshly loaded model needs no copy
        return predictor

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def cam_layers(self) -> list[str]:
        """Layers Grad-CAM can explain, input side first; `cam_layer` is the default."""
        return self.model.cam_layers

    @property
    def cam_layer(self) -> str:
        """The layer Grad-CAM explains unless a call asks for another (recorded in the checkpoint)."""
        return self.info.default_cam_layer

    def _layer(self, layer: str | None) -> str:
        if layer is None:
            return self.cam_layer
        if layer not in self.cam_layers:
            raise UsageError(f"{self.name} has no layer {layer!r}; choose from {', '.join(self.cam_layers)}")
        return layer

    def class_index(self, target: str | int) -> int:
        """A class name or index -> index; UsageError names the valid classes."""
        names = self.class_names
        if isinstance(target, int) and 0 <= target < len(names):
            return target
        if target in names:
            return names.index(target)
        raise UsageError(f"unknown class {target!r}; this model knows {', '.join(names)}")

    def prepare(self, source: ImageSource) -> tuple[Image.Image, torch.Tensor, Letterbox]:
        """Decode and letterbox: -> upright image, (1, 3, S, S) input, its Letterbox."""
        image = load_image(source, max_side=max(DEFAULT_MAX_SIDE, self.info.input_size))
        x, box = to_input(image, self.info.input_size, self.info.mean, self.info.std)
        return image, x[None], box

    def predict(
        self, source: ImageSource, target: str | int | None = None, explain: bool = True, layer: str | None = None
    ) -> Prediction:
        """Classify one image; with `explain`, add Grad-CAM for `target` (default: predicted) at
        `layer` (default: the checkpoint's `cam_layer`)."""
        return self.predict_batch([source], target=target, explain=explain, layer=layer)[0]

    def predict_batch(
        self,
        sources: Sequence[ImageSource],
        target: str | int | None = None,
        explain: bool = True,
        layer: str | None = None,
    ) -> list[Prediction]:
        """Classify several images in one forward pass; `latency_ms` is the batch's per image."""
        start = time.perf_counter()
        layer = self._layer(layer)
        index = None if target is None else self.class_index(target)
        prepared = [self.prepare(s) for s in sources]
        x = torch.cat([p[1] for p in prepared])  # (B, 3, S, S)
        outputs, cams, explained = self._run(x, index, explain, layer)
        probs = torch.softmax(outputs.logits.float(), dim=1).cpu().numpy()
        side = None if outputs.side_view_logit is None else torch.sigmoid(outputs.side_view_logit.float()).tolist()
        cva = None if outputs.cva_deg is None else outputs.cva_deg.float().tolist()
        names = self.class_names
        out = []
        for i, (image, _, box) in enumerate(prepared):
            pred = Prediction(
                label=names[int(np.argmax(probs[i]))],
                probabilities={n: float(p) for n, p in zip(names, probs[i])},
                image=image,
                letterbox=box,
                cva_deg=None if cva is None else float(cva[i]),
                side_view_prob=None if side is None else float(side[i]),
            )
            if cams is not None:
                cam = box.crop(cams[i])
                peak = float(cam.max())
                pred.target = names[explained[i]]
                pred.layer = layer
                pred.cam_empty = not peak > 0.0
                pred.cam = cam / peak if peak > 0.0 else np.zeros_like(cam)
            out.append(pred)
        per_image = (time.perf_counter() - start) * 1000.0 / max(1, len(out))
        for pred in out:
            pred.latency_ms = per_image
        return out

    def _run(
        self, x: torch.Tensor, index: int | None, explain: bool, layer: str
    ) -> tuple[ModelOutput, torch.Tensor | None, list[int] | None]:
        """(B, 3, S, S) -> outputs (on the CPU), Grad-CAMs (B, h, w) or None, explained class per image or None."""
        b = x.shape[0]
        if self.mirror:
            x = torch.cat([x, x.flip(-1)])  # rows b.. are the mirror images
        if not explain:  # the whole model on the fast path
            self.serving.outputs_backend()  # built (and exported) before any model call below
            with EXPORT_GUARD.running():
                outputs = self.serving.outputs(x.to(self.device))
            return _on_cpu(mirror_mean(outputs) if self.mirror else outputs, b), None, None
        head = self.serving.head(layer)
        self.serving.backend(layer)  # built (and, for ONNX Runtime, exported) before any model call below
        with EXPORT_GUARD.running():
            features = self.serving.features(x.to(self.device), layer)
            result = grad_cam(head, features, target=index, layer=head.cam,
                              combine=mirror_mean if self.mirror else None)
        cams = result.cams.float().cpu()
        if self.mirror:  # both halves explain the same (mean) answer; the mirror's map is mirrored back
            cams = (cams[:b] + cams[b:].flip(-1)) / 2
        return _on_cpu(result.outputs, b), cams, result.targets[:b].tolist()


def _on_cpu(out: ModelOutput, rows: int) -> ModelOutput:
    """The first `rows` rows of every output, as float32 on the CPU."""
    return ModelOutput(*(None if v is None else v[:rows].float().cpu()
                         for v in (out.logits, out.cva_deg, out.side_view_logit)))
