"""Training examples: image tensors and their targets, with angle-preserving augmentation.

An `Item` is one picture and what is known about it: its class (or none, for a picture without a
side view), the angle in the picture, whether it is a side view, the head-and-neck box. Images are
decoded per item, or once into memory (`ImageDataset.preload`) when the set is reused epoch after
epoch. Augmentation keeps the neck angle meaningful: horizontal flips (a person facing the other
way: the angle, measured toward the face, is unchanged), colour changes, a small zoom/shift and,
when asked for, a low-quality capture (`Augment.degrade`: fewer pixels, blur or camera shake, JPEG)
or another drawing style that keeps every outline where it is (`Augment.restyle`); never rotation
or shear. Its randomness comes from (seed, epoch, index), so a run is reproducible and does not
depend on loader workers or on torch's global RNG.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from posture.images import load_image
from posture.labels import Annotation
from posture.preprocess import IMAGENET_MEAN, IMAGENET_STD, letterbox, normalize

__all__ = ["RESTYLE_OPS", "RESTYLE_OPS_ALL", "Augment", "ImageDataset", "Item", "annotate", "augment_image",
           "closeup_crop", "degrade_image", "otsu_threshold", "restyle_image", "square_box"]

RESTYLE_OPS = ("posterize", "solarize", "equalize", "autocontrast", "invert", "sharpen", "outline")  # the default
RESTYLE_OPS_ALL = RESTYLE_OPS + ("silhouette",)  # every op `restyle_image` knows

NAN = float("nan")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Item:
    """One training picture: path and targets (NaN: unknown)."""

    path: Path
    label: int = -1  # class index; -1 for a picture without a side view (it has no class)
    cva_deg: float = NAN  # the angle as seen in the picture
    box: Box = (NAN, NAN, NAN, NAN)  # head-and-neck box, fractions of the picture's width and height
    aspect: float = NAN  # the picture's width / height (places the box in the letterboxed square)
    style: str = ""  # synthetic rendering style, "" when unknown
    view: str = ""  # "side", or what a picture without a side view shows; "" when unknown

    @property
    def side_view(self) -> bool:
        return self.label >= 0

    @property
    def has_box(self) -> bool:
        """Whether the head-and-neck box and the picture's aspect are known (the box can be placed)."""
        return not (math.isnan(self.box[0]) or math.isnan(self.aspect))


def annotate(pairs: Sequence[tuple[Path, int]], notes: Mapping[Path, Annotation]) -> list[Item]:
    """(path, class index or -1) pairs -> Items carrying what labels.csv says about each picture."""
    items = []
    for path, label in pairs:
        note = notes.get(path)
        if note is None:
            items.append(Item(path, label, view="side" if label >= 0 else ""))
            continue
        has_box = note.box is not None and note.size is not None
        items.append(Item(
            path, label,
            cva_deg=note.cva_deg if note.cva_deg is not None and label >= 0 else NAN,
            box=note.box if has_box else (NAN,) * 4,  # type: ignore[arg-type]
            aspect=note.size[0] / note.size[1] if note.size else NAN,
            style=note.style or "",
            view=note.view or ("side" if label >= 0 else ""),
        ))  # fmt: skip
    return items


def square_box(box: Box, width: float, height: float) -> Box:
    """A box given as fractions of a (width, height) picture -> fractions of its letterboxed square."""
    scale = 1.0 / max(width, height)
    cw, ch = width * scale, height * scale
    x0, y0 = (1.0 - cw) / 2.0, (1.0 - ch) / 2.0
    return (x0 + box[0] * cw, y0 + box[1] * ch, x0 + box[2] * cw, y0 + box[3] * ch)


# The head-and-neck box's longer side, as a share of a close-up's side: from a head and shoulders
# at desk distance to a face that all but fills a webcam's frame. Models trained before the upper
# end was a setting used 0.75 (`LEGACY_CLOSEUP_LARGEST`).
CLOSEUP_SHARE = (0.45, 0.95)
LEGACY_CLOSEUP_LARGEST = 0.75


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
    grey: float = 0.1  # probability of dropping the colour
    degrade: float = 0.0  # probability of a low-quality capture (`degrade_image`)
    restyle: float = 0.0  # probability of a change of drawing style (`restyle_image`)
    restyle_ops: tuple[str, ...] = RESTYLE_OPS  # the ops `restyle_image` draws from, each as likely
    closeup: float = 0.0  # probability of a head-and-shoulders close-up (`closeup_crop`; pictures with a box)
    closeup_largest: float = CLOSEUP_SHARE[1]  # a close-up's largest box share (`closeup_crop`)

    @classmethod
    def none(cls) -> "Augment":
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name not in ("closeup_largest", "restyle_ops")})

    @property
    def active(self) -> bool:
        return self != Augment.none()


def augment_image(img: Image.Image, aug: Augment, rng: np.random.Generator, box: Box | None = None) -> tuple[Image.Image, Box | None]:
    """Apply `aug` to a letterboxed square with parameters drawn from `rng`; move `box` (fractions
    of the square) with it."""
    if aug.closeup and box is not None and rng.random() < aug.closeup:
        img, box = closeup_crop(img, box, rng, aug.closeup_largest)
    if rng.random() < aug.flip:
        img = TF.horizontal_flip(img)
        if box is not None:
            box = (1.0 - box[2], box[1], 1.0 - box[0], box[3])
    if aug.brightness:
        img = TF.adjust_brightness(img, 1.0 + rng.uniform(-aug.brightness, aug.brightness))
    if aug.contrast:
        img = TF.adjust_contrast(img, 1.0 + rng.uniform(-aug.contrast, aug.contrast))
    if aug.saturation:
        img = TF.adjust_saturation(img, 1.0 + rng.uniform(-aug.saturation, aug.saturation))
    if aug.hue:
        img = TF.adjust_hue(img, rng.uniform(-aug.hue, aug.hue))
    if aug.grey and rng.random() < aug.grey:
        img = TF.rgb_to_grayscale(img, num_output_channels=3)
    if aug.restyle and rng.random() < aug.restyle:
        img = restyle_image(img, rng, ops=aug.restyle_ops)
    if aug.scale or aug.translate:
        shift = [int(round(rng.uniform(-aug.translate, aug.translate) * img.width)) for _ in range(2)]
        scale = 1.0 + rng.uniform(-aug.scale, aug.scale)
        fill = [int(round(c * 255)) for c in IMAGENET_MEAN]
        img = TF.affine(img, angle=0.0, translate=shift, scale=scale, shear=[0.0, 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR, fill=fill)
        if box is not None:  # about the centre: p' = c + scale * (p - c) + shift
            dx, dy = shift[0] / img.width, shift[1] / img.height
            box = (0.5 + scale * (box[0] - 0.5) + dx, 0.5 + scale * (box[1] - 0.5) + dy,
                   0.5 + scale * (box[2] - 0.5) + dx, 0.5 + scale * (box[3] - 0.5) + dy)
    if aug.degrade and rng.random() < aug.degrade:
        img = degrade_image(img, rng)
    return img, box


def restyle_image(img: Image.Image, rng: np.random.Generator, op: str | None = None,
                  ops: Sequence[str] = RESTYLE_OPS) -> Image.Image:
    """The same picture drawn otherwise: `op`, or one of `ops` drawn from `rng`.

    Each changes tones, textures or lines and keeps every outline in place, so the model has to
    read the shape rather than one renderer's shading: posterize (1-3 bits per channel), solarize,
    equalize, autocontrast, invert, sharpen, outline (PIL's contour filter: line art of the
    picture's edges), or silhouette (not among the default `RESTYLE_OPS`: the picture's tones
    split in two where they separate best, each part one flat colour, one dark and one light; on a
    plain background the person becomes a silhouette without eyes, ears or clothes)."""
    op = op or ops[int(rng.integers(len(ops)))]
    if op == "posterize":
        return TF.posterize(img, int(rng.integers(1, 4)))
    if op == "solarize":
        return TF.solarize(img, float(rng.uniform(96, 224)))
    if op == "equalize":
        return TF.equalize(img)
    if op == "autocontrast":
        return TF.autocontrast(img)
    if op == "invert":
        return TF.invert(img)
    if op == "sharpen":
        return TF.adjust_sharpness(img, float(rng.uniform(2.0, 8.0)))
    if op == "outline":  # PIL leaves a filter's outermost pixels as they were: filter a copy one pixel larger
        grey = np.pad(np.asarray(img.convert("L")), 1, mode="edge")
        lines = Image.fromarray(grey).filter(ImageFilter.CONTOUR).crop((1, 1, img.width + 1, img.height + 1))
        return lines.convert("RGB")
    if op == "silhouette":  # a median filter first, so that small marks do not split off
        grey = np.asarray(img.convert("L").filter(ImageFilter.MedianFilter(5)))
        light = grey > otsu_threshold(grey)
        colours = [rng.integers(0, 110, 3), rng.integers(146, 256, 3)]
        if rng.random() < 0.5:
            colours.reverse()
        return Image.fromarray(np.where(light[..., None], colours[1], colours[0]).astype(np.uint8))
    raise ValueError(f"unknown restyle op {op!r}; choose from {', '.join(RESTYLE_OPS_ALL)}")


def otsu_threshold(grey: np.ndarray) -> int:
    """Otsu's threshold of a uint8 picture: the tone t that splits it into tones <= t and > t with
    the largest variance between the two parts (the smallest within them)."""
    share = np.bincount(grey.ravel(), minlength=256) / grey.size
    below = np.cumsum(share)  # share of tones <= t
    mass = np.cumsum(share * np.arange(256))  # their summed tone
    between = (mass[-1] * below - mass) ** 2 / np.maximum(below * (1.0 - below), 1e-12)
    return int(np.argmax(between))


def closeup_crop(img: Image.Image, box: Box, rng: np.random.Generator,
                 largest: float = CLOSEUP_SHARE[1]) -> tuple[Image.Image, Box]:
    """The same picture as a head-and-shoulders close-up: a square crop around the head-and-neck
    `box` (fractions of the square picture), scaled back to the picture's size, in which the box's
    longer side is 45% to `largest` of the side (as in a webcam close-up at desk distance). The box
    lies wholly inside the crop, so the head and neck are never cut; a box that is already that
    large leaves the picture as it is. Returns the picture and the box in the crop's fractions."""
    n = img.width
    if img.height != n:
        raise ValueError(f"a close-up is cut from a letterboxed square, not {img.width}x{img.height}")
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) * n for v in box)
    longer = max(x1 - x0, y1 - y0)
    side = longer / rng.uniform(CLOSEUP_SHARE[0], max(largest, CLOSEUP_SHARE[0]))
    if longer <= 0 or side >= 0.95 * n:
        return img, box
    # anywhere the box stays inside both the crop and the picture
    left = rng.uniform(max(0.0, x1 - side), min(x0, n - side))
    top = rng.uniform(max(0.0, y1 - side), min(y0, n - side))
    crop = img.resize((n, n), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return crop, ((x0 - left) / side, (y0 - top) / side, (x1 - left) / side, (y1 - top) / side)


def degrade_image(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The same picture as a small, shaky or cheap camera would take it, at the same size and
    geometry: 40-100% of the pixels along each side, then a slight blur or camera shake, then JPEG
    at quality 30-90."""
    from posture.synth.styles import motion_blur  # the renderer's camera shake; synth loads only when used

    w, h = img.size
    f = rng.uniform(0.4, 1.0)
    small = img.resize((max(8, round(w * f)), max(8, round(h * f))), Image.Resampling.BOX)
    if rng.random() < 0.5:
        small = motion_blur(small, rng, rng.uniform(0.5, 2.5))
    else:
        small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.0)))
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=int(rng.integers(30, 91)))
    buf.seek(0)
    return Image.open(buf).convert("RGB").resize((w, h), Image.Resampling.BILINEAR)


class ImageDataset(Dataset):
    """Items -> (normalised (3, S, S) tensor, targets: label, cva_deg, side_view, box)."""

    def __init__(
        self,
        items: Sequence[Item | tuple[Path, int]],
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.items = [it if isinstance(it, Item) else Item(Path(it[0]), int(it[1])) for it in items]
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.epoch = 0  # set by the training loop so each epoch sees new augmentations
        self._squares: np.ndarray | None = None  # (N, S, S, 3) uint8 after `preload`

    def __len__(self) -> int:
        return len(self.items)

    @property
    def squares(self) -> np.ndarray | None:
        """The preloaded (N, S, S, 3) uint8 letterboxed images, if `preload` ran."""
        return self._squares

    def subset(self, indices: Sequence[int]) -> "ImageDataset":
        """The same dataset restricted to `indices` (sharing preloaded images, not copying them)."""
        out = ImageDataset([self.items[i] for i in indices], self.size, self.mean, self.std, self.augment, self.seed)
        if self._squares is not None:
            out._squares = self._squares[np.asarray(indices, dtype=np.int64)]
        return out

    def preload(self, progress: Callable[[int, int], None] | None = None, squares: np.ndarray | None = None) -> None:
        """Decode and letterbox every image once, into memory (or take `squares` decoded before)."""
        if squares is not None:
            if squares.shape != (len(self.items), self.size, self.size, 3):
                raise ValueError(f"squares {squares.shape} do not fit {len(self.items)} items at {self.size} px")
            self._squares = squares
            return
        out = np.empty((len(self.items), self.size, self.size, 3), dtype=np.uint8)
        for i in range(len(self.items)):
            out[i] = np.asarray(self._decode(i))
            if progress is not None and (i + 1) % 256 == 0:
                progress(i + 1, len(self.items))
        self._squares = out

    def _decode(self, index: int) -> Image.Image:
        # Decode at about twice the input size: enough detail, little memory.
        img = load_image(self.items[index].path, max_side=2 * self.size)
        return letterbox(img, self.size, fill=self.mean)[0]

    def load_square(self, index: int) -> Image.Image:
        """The letterboxed, not yet augmented, image of item `index`."""
        if self._squares is not None:
            return Image.fromarray(self._squares[index], "RGB")
        return self._decode(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        item = self.items[index]
        img = self.load_square(index)
        box = square_box(item.box, item.aspect, 1.0) if item.has_box else None
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            img, box = augment_image(img, self.augment, rng, box)
        targets = {
            "label": torch.tensor(item.label, dtype=torch.long),
            "cva_deg": torch.tensor(item.cva_deg, dtype=torch.float32),
            "side_view": torch.tensor(float(item.side_view), dtype=torch.float32),
            "box": torch.tensor(box if box is not None else (NAN,) * 4, dtype=torch.float32),
        }
        return normalize(img, self.mean, self.std), targets
