"""Generator settings (`SynthConfig`), the per-image record (`SampleInfo`) and the CVA/label rules."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


STYLES = ("flat", "lineart", "shaded", "silhouette", "photo", "webcam", "lowres")
NEGATIVE_KINDS = ("frontal", "back", "empty", "blank", "noise", "texture", "landscape", "objects", "strip", "tiny")


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes the synthetic data; only `threshold` and the CVA ranges touch the label."""

    threshold: float = 50.0  # CVA cut-off in degrees: cva < threshold -> turtle_neck
    normal_range: tuple[float, float] = (55.0, 70.0)
    turtle_range: tuple[float, float] = (25.0, 45.0)
    size_range: tuple[int, int] = (192, 320)  # longer image side in pixels, sampled per image
    jpeg_quality: tuple[int, int] = (70, 95)
    class_names: tuple[str, str] = ("normal", "turtle_neck")
    nuisance: float = 1.0  # 0 = clean studio shots; 1 = full clutter, lighting, blur, noise, patterns
    max_roll_deg: float = 4.0  # camera roll is uniform in +-this; keep <= margin so the image angle keeps its side
    max_head_tilt_deg: float = 12.0  # head rotation about the tragus (does not change the CVA)
    torso_lean_deg: tuple[float, float] = (-6.0, 14.0)  # forward lean of the torso about C7
    box_fraction: tuple[float, float] = (0.2, 0.45)  # sqrt(head-box area) / shorter image side
    sitting_prob: float = 0.6
    supersample: int = 2  # draw at this factor, then downscale for anti-aliasing
    styles: tuple[str, ...] = STYLES  # rendering styles drawn from, uniformly (see posture.synth.styles)
    negatives: float = 0.0  # share of pictures without a side view of a person (frontal views, empty rooms, ...)
    body_scale: tuple[float, float] = (0.85, 1.2)  # torso size relative to the head
    max_pitch_deg: float = 15.0  # camera pitch is uniform in +-this (slight vertical foreshortening)

    def __post_init__(self) -> None:
        lo_t, hi_t = self.turtle_range
        lo_n, hi_n = self.normal_range
        if not (0.0 < lo_t < hi_t <= self.threshold <= lo_n < hi_n < 90.0):
            raise ValueError(
                f"need 0 < turtle_range {self.turtle_range} <= threshold {self.threshold} "
                f"<= normal_range {self.normal_range} < 90 degrees"
            )
        if not (32 <= self.size_range[0] <= self.size_range[1]):
            raise ValueError(f"size_range {self.size_range} must be increasing and at least 32 px")
        if not (1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality {self.jpeg_quality} must be increasing within 1..100")
        if len(self.class_names) != 2 or self.class_names[0] == self.class_names[1]:
            raise ValueError(f"class_names {self.class_names} must be two distinct names (normal, turtle)")
        if not 0.0 <= self.nuisance <= 1.0:
            raise ValueError(f"nuisance {self.nuisance} must lie in [0, 1]")
        if not (0.1 <= self.box_fraction[0] <= self.box_fraction[1] <= 0.45):
            raise ValueError(f"box_fraction {self.box_fraction} must be increasing within 0.1..0.45")
        if self.supersample not in (1, 2, 3, 4):
            raise ValueError(f"supersample {self.supersample} must be 1, 2, 3 or 4")
        unknown = sorted(set(self.styles) - set(STYLES))
        if not self.styles or unknown:
            raise ValueError(f"styles {list(self.styles)}: choose one or more of {', '.join(STYLES)}")
        if not 0.0 <= self.negatives < 1.0:
            raise ValueError(f"negatives {self.negatives} must lie in [0, 1)")
        if not 0.0 <= self.max_pitch_deg <= 25.0:
            raise ValueError(f"max_pitch_deg {self.max_pitch_deg} must lie in [0, 25]")

    @classmethod
    def from_margin(
        cls, threshold: float = 50.0, margin: float = 5.0, low: float = 25.0, high: float = 70.0, **kwargs
    ) -> SynthConfig:
        """Build a config whose two CVA ranges leave `margin` degrees free on each side of `threshold`."""
        return cls(
            threshold=threshold,
            normal_range=(threshold + margin, high),
            turtle_range=(low, threshold - margin),
            **kwargs,
        )


@dataclass
class SampleInfo:
    """Everything known about one rendered image; coordinates are pixels of the final image.

    `cva_deg` is the body's true CVA (against the true horizontal) and the label follows it.
    The camera roll turns the picture, so the angle measured from `c7`/`tragus` in the image
    is `image_cva_deg` = cva_deg + roll_deg (facing right) or cva_deg - roll_deg (facing left),
    give or take the camera pitch's foreshortening (under 1 degree). Pictures without a side
    view (`view` != "side") have no label, angle, points or box: those fields stay empty.
    """

    cva_deg: float
    label: str
    facing: str  # "left" | "right": the direction the face points in the image
    c7: tuple[float, float]
    tragus: tuple[float, float]
    head_box: tuple[int, int, int, int]  # x0, y0, x1, y1 around the head and the whole neck band (frontal and
    # back views: head and neck; an empty room: where a head would be; other pictures without a side view: zeros)
    width: int
    height: int
    image_cva_deg: float = 0.0
    roll_deg: float = 0.0  # positive = picture turned counter-clockwise
    head_tilt_deg: float = 0.0  # positive = chin up
    torso_lean_deg: float = 0.0  # positive = leaning forward
    neck_length_px: float = 0.0
    head_height_px: float = 0.0
    pose: str = "standing"  # "sitting" | "standing"
    arms: str = "hanging"
    scene: str = "solid"
    props: str = ""  # "+"-joined list, e.g. "chair+desk+monitor"
    jpeg_quality: int = 90
    index: int = -1  # position in the seeded stream, -1 when rendered directly
    style: str = "flat"
    view: str = "side"  # "side", or what a picture without a side view shows (NEGATIVE_KINDS)
    pitch_deg: float = 0.0  # camera pitch (foreshortens the picture vertically by its cosine)

    @property
    def side_view(self) -> bool:
        """Whether the picture holds a side view of a person (the only kind with a CVA)."""
        return self.view == "side"

    def as_dict(self) -> dict:
        """Return the fields as a plain dict (for CSV rows and JSON)."""
        return asdict(self)


def label_for_cva(cva_deg: float, config: SynthConfig) -> str:
    """Return the class name for a true CVA: turtle when below the threshold."""
    return config.class_names[1] if cva_deg < config.threshold else config.class_names[0]


def sample_cva(rng: np.random.Generator, label: str, config: SynthConfig) -> float:
    """Draw a CVA in degrees, uniform over the range of the given class."""
    if label == config.class_names[0]:
        lo, hi = config.normal_range
    elif label == config.class_names[1]:
        lo, hi = config.turtle_range
    else:
        raise ValueError(f"unknown label {label!r}; expected one of {config.class_names}")
    return float(rng.uniform(lo, hi))


def cva_from_points(c7: tuple[float, float], tragus: tuple[float, float], facing: str) -> float:
    """Return the angle in degrees between the horizontal and C7->tragus, measured toward the face."""
    if facing not in ("left", "right"):
        raise ValueError(f"facing must be 'left' or 'right', got {facing!r}")
    forward = 1.0 if facing == "right" else -1.0
    dx = (tragus[0] - c7[0]) * forward
    dy = c7[1] - tragus[1]  # image y grows downward
    return math.degrees(math.atan2(dy, dx))
