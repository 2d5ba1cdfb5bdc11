"""Aspect-safe model input: letterbox to a square, normalise, and map results back.

The craniovertebral angle is the signal, so an image is never stretched and never
center-cropped (that can cut the head away): it is scaled to fit the square and
padded. `Letterbox` remembers how, so a heatmap goes back onto the source frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Letterbox", "letterbox", "normalize", "resize_map", "to_input"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Letterbox:
    """How a (src_w, src_h) image was placed in a size x size square."""

    src_w: int
    src_h: int
    size: int

    @property
    def scale(self) -> float:
        return self.size / max(self.src_w, self.src_h)

    @property
    def content(self) -> tuple[int, int, int, int]:
        """(x0, y0, w, h) of the scaled image inside the square."""
        w = max(1, round(self.src_w * self.scale))
        h = max(1, round(self.src_h * self.scale))
        return (self.size - w) // 2, (self.size - h) // 2, w, h

    def to_input(self, x: float, y: float) -> tuple[float, float]:
        """Source pixel coordinates -> model input coordinates (continuous, pixel centres at .5)."""
        x0, y0, w, h = self.content
        return x0 + x * w / self.src_w, y0 + y * h / self.src_h

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Model input coordinates -> source pixel coordinates; inverse of `to_input`."""
        x0, y0, w, h = self.content
        return (x - x0) * self.src_w / w, (y - y0) * self.src_h / h

    def crop(self, heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
        """A (h, w) map over the input square -> float32 map over the content area only, at the
        square's resolution (bilinear): the source image's frame at the model's scale."""
        t = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]  # (1, 1, h, w)
        if t.shape[-2:] != (self.size, self.size):
            t = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x0, y0, w, h = self.content
        return t[0, 0, y0 : y0 + h, x0 : x0 + w].numpy()

    def unletterbox(self, heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
        """A (h, w) map over the input square -> float32 (src_h, src_w) map over the source image.

        The map is first brought to the square's resolution, then the content area is
        cut out (`crop`) and resized to the source size, both bilinearly.
        """
        return resize_map(self.crop(heatmap), self.src_h, self.src_w)


def resize_map(heatmap: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a float (h, w) map to (height, width) (pixel centres aligned)."""
    t = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]
    if t.shape[-2:] != (height, width):
        t = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t[0, 0].numpy()


def letterbox(
    img: Image.Image, size: int, fill: Sequence[float] = IMAGENET_MEAN
) -> tuple[Image.Image, Letterbox]:
    """Scale `img` to fit a size x size square, keep its aspect ratio, pad with `fill` (0..1 RGB)."""
    box = Letterbox(img.width, img.height, size)
    x0, y0, w, h = box.content
    colour = tuple(int(round(c * 255)) for c in fill)
    out = Image.new("RGB", (size, size), colour)
    out.paste(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0), (x0, y0))
    return out, box


def normalize(
    img: Image.Image, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """RGB image -> float tensor (3, H, W), normalised with mean/std (0..1 scale)."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())  # (H, W, 3)
    t = arr.permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return (t - m) / s


def to_input(
    img: Image.Image,
    size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> tuple[torch.Tensor, Letterbox]:
    """Letterbox and normalise one image: -> (3, size, size) tensor and its Letterbox."""
    square, box = letterbox(img, size, fill=mean)
    return normalize(square, mean, std), box
