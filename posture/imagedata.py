"""Streaming image tensors for training and evaluation, with angle-preserving augmentation.

Images are decoded from disk per item (memory stays bounded whatever the dataset
size). Augmentation keeps the neck angle meaningful: horizontal flips (a person
facing the other way), colour changes and a small zoom/shift; never rotation or
shear. Its randomness comes from (seed, epoch, index), so a run is reproducible
and does not depend on loader workers or on torch's global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from posture.images import load_image
from posture.preprocess import IMAGENET_MEAN, IMAGENET_STD, letterbox, normalize

__all__ = ["Augment", "ImageDataset", "augment_image"]


@dataclass(frozen=True)
class Augment:
    """Strengths of the training augmentation; `Augment.none()` turns it off."""

    flip: float = 0.5  # probability of a horizontal flip
    brightness: float = 0.25  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03
    scale: float = 0.10  # zoom drawn from [1 - s, 1 + s]
    translate: float = 0.06  # shift, as a share of the side

    @classmethod
    def none(cls) -> "Augment":
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)

    @property
    def active(self) -> bool:
        return self != Augment.none()


def augment_image(img: Image.Image, aug: Augment, rng: np.random.Generator) -> Image.Image:
    """Apply `aug` to a letterboxed square with parameters drawn from `rng`."""
    if rng.random() < aug.flip:
        img = TF.horizontal_flip(img)
    if aug.brightness:
        img = TF.adjust_brightness(img, 1.0 + rng.uniform(-aug.brightness, aug.brightness))
    if aug.contrast:
        img = TF.adjust_contrast(img, 1.0 + rng.uniform(-aug.contrast, aug.contrast))
    if aug.saturation:
        img = TF.adjust_saturation(img, 1.0 + rng.uniform(-aug.saturation, aug.saturation))
    if aug.hue:
        img = TF.adjust_hue(img, rng.uniform(-aug.hue, aug.hue))
    if aug.scale or aug.translate:
        shift = [int(round(rng.uniform(-aug.translate, aug.translate) * img.width)) for _ in range(2)]
        fill = [int(round(c * 255)) for c in IMAGENET_MEAN]
        img = TF.affine(
            img,
            angle=0.0,
            translate=shift,
            scale=1.0 + rng.uniform(-aug.scale, aug.scale),
            shear=[0.0, 0.0],
            interpolation=TF.InterpolationMode.BILINEAR,
            fill=fill,
        )
    return img


class ImageDataset(Dataset):
    """(path, class index) items -> (normalised (3, S, S) tensor, class index)."""

    def __init__(
        self,
        items: Sequence[tuple[Path, int]],
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.items = list(items)
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.epoch = 0  # set by the training loop so each epoch sees new augmentations

    def __len__(self) -> int:
        return len(self.items)

    def load_square(self, index: int) -> Image.Image:
        """The letterboxed, not yet augmented, image of item `index`."""
        path, _ = self.items[index]
        # Decode at about twice the input size: enough detail, little memory.
        img = load_image(path, max_side=2 * self.size)
        return letterbox(img, self.size, fill=self.mean)[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.load_square(index)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            img = augment_image(img, self.augment, rng)
        return normalize(img, self.mean, self.std), self.items[index][1]
