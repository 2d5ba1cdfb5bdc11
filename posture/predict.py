"""Prediction with explanation: image in, verdict, probabilities and Grad-CAM out."""

from __future__ import annotations

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
from posture.explain import grad_cam
from posture.images import DEFAULT_MAX_SIDE, ImageSource, load_image
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
    cam: np.ndarray | None = field(default=None, repr=False)  # (h, w) float32 in [0, 1], peak 1
    cam_empty: bool = False  # Grad-CAM was zero everywhere: nothing to show for `target`
    latency_ms: float = 0.0
    letterbox: Letterbox | None = field(default=None, repr=False)

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

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
            "cam_empty": self.cam_empty,
            "latency_ms": round(self.latency_ms, 2),
        }


class Predictor:
    """One read-only model and its metadata; safe to share between threads.

    `precision` ("auto", "fp32" or "bf16"; default $POSTURE_PRECISION, else "auto") picks
    the serving path: "auto" runs the backbone in bfloat16 where the CPU supports it
    natively, else in fp32 (see `posture.serving`). The fast backbone is built on the
    first prediction.
    """

    def __init__(
        self, model: nn.Module, info: ModelInfo, name: str | None = None, precision: str | None = None
    ) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)  # serving only; Grad-CAM needs gradients of activations alone
        self.info = info
        self.name = name or info.arch
        self.serving = ServingModel(self.model, info.input_size, precision)

    @property
    def precision(self) -> str:
        """The precision the backbone runs in: "fp32" or "bf16"."""
        return self.serving.precision if self.serving.split else "fp32"

    @classmethod
    def from_checkpoint(cls, name_or_path: str | Path, precision: str | None = None) -> "Predictor":
        """Load a bundled model by name (e.g. "resnet18") or a checkpoint file."""
        path = resolve_checkpoint(name_or_path)
        model, info = load_checkpoint(path)
        return cls(model, info, name=path.stem, precision=precision)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    def class_index(self, target: str | int) -> int:
        """A class name or index -> index; ValueError names the valid classes."""
        names = self.class_names
        if isinstance(target, int) and 0 <= target < len(names):
            return target
        if target in names:
            return names.index(target)
        raise ValueError(f"unknown class {target!r}; this model knows {', '.join(names)}")

    def prepare(self, source: ImageSource) -> tuple[Image.Image, torch.Tensor, Letterbox]:
        """Decode and letterbox: -> upright image, (1, 3, S, S) input, its Letterbox."""
        image = load_image(source, max_side=max(DEFAULT_MAX_SIDE, self.info.input_size))
        x, box = to_input(image, self.info.input_size, self.info.mean, self.info.std)
        return image, x[None], box

    def predict(
        self, source: ImageSource, target: str | int | None = None, explain: bool = True
    ) -> Prediction:
        """Classify one image; with `explain`, add Grad-CAM for `target` (default: predicted)."""
        return self.predict_batch([source], target=target, explain=explain)[0]

    def predict_batch(
        self, sources: Sequence[ImageSource], target: str | int | None = None, explain: bool = True
    ) -> list[Prediction]:
        """Classify several images in one forward pass; `latency_ms` is the batch's per image."""
        start = time.perf_counter()
        prepared = [self.prepare(s) for s in sources]
        x = torch.cat([p[1] for p in prepared])  # (B, 3, S, S)
        index = None if target is None else self.class_index(target)
        logits, cams, explained = self._run(x, index, explain)
        probs = torch.softmax(logits.float(), dim=1).numpy()
        names = self.class_names
        out = []
        for i, (image, _, box) in enumerate(prepared):
            pred = Prediction(
                label=names[int(np.argmax(probs[i]))],
                probabilities={n: float(p) for n, p in zip(names, probs[i])},
                image=image,
                letterbox=box,
            )
            if cams is not None:
                cam = box.crop(cams[i])
                peak = float(cam.max())
                pred.target = names[explained[i]]
                pred.cam_empty = not peak > 0.0
                pred.cam = cam / peak if peak > 0.0 else np.zeros_like(cam)
            out.append(pred)
        per_image = (time.perf_counter() - start) * 1000.0 / max(1, len(out))
        for pred in out:
            pred.latency_ms = per_image
        return out

    def _run(
        self, x: torch.Tensor, index: int | None, explain: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[int] | None]:
        """(B, 3, S, S) -> logits, Grad-CAMs (B, h, w) or None, explained class per image or None."""
        serving = self.serving
        if serving.split:
            model, x, layer = serving.head, serving.features(x), serving.head.cam
        else:
            model, layer = self.model, None
        if explain:
            result = grad_cam(model, x, target=index, layer=layer)
            return result.logits, result.cams, result.targets.tolist()
        with torch.inference_mode():
            return model(x), None, None
