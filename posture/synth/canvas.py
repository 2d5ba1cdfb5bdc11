"""Drawing in body coordinates: an affine `Frame` (scale, mirror, camera roll, shift) and a `Painter`.

Body ("world") coordinates: origin at C7, unit = head height, x toward the face, y down.
Canvas coordinates: continuous pixels of the supersampled canvas (pixel i spans [i, i+1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Frame:
    """Map world points to canvas pixels: mirror by facing, scale, turn by the camera roll, shift."""

    scale: float  # canvas pixels per world unit
    facing: int  # +1 face points to +x (right), -1 mirrored (left)
    roll_deg: float  # picture turned counter-clockwise by this
    origin: tuple[float, float]  # canvas position of the world origin (C7)

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Map (N, 2) world points to (N, 2) canvas points."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x = pts[:, 0] * (self.facing * self.scale)
        y = pts[:, 1] * self.scale
        c, s = math.cos(math.radians(self.roll_deg)), math.sin(math.radians(self.roll_deg))
        return np.stack([x * c + y * s + self.origin[0], -x * s + y * c + self.origin[1]], axis=1)

    def moved(self, origin: tuple[float, float]) -> Frame:
        """Return the same frame with another canvas origin."""
        return Frame(self.scale, self.facing, self.roll_deg, origin)


def rotate(pts: np.ndarray, deg: float, about: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Turn (N, 2) y-down points counter-clockwise (as seen on screen) by `deg` about a point."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    d = pts - np.asarray(about)
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1) + np.asarray(about)


def ellipse_points(
    center: tuple[float, float], rx: float, ry: float, start: float = 0.0, stop: float = 360.0, n: int = 36
) -> np.ndarray:
    """Return (n, 2) points on an axis-aligned ellipse from angle `start` to `stop` (degrees, y down)."""
    t = np.radians(np.linspace(start, stop, n, endpoint=(stop - start) % 360.0 != 0.0))
    return np.stack([center[0] + rx * np.cos(t), center[1] + ry * np.sin(t)], axis=1)


def shade(color: Color, factor: float) -> Color:
    """Scale a colour's brightness, clipped to 0..255."""
    return tuple(int(min(255, max(0, round(c * factor)))) for c in color)  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    """Blend two colours: t=0 gives a, t=1 gives b."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))  # type: ignore[return-value]


class Painter:
    """Draw world-coordinate shapes onto a PIL image through a `Frame`."""

    def __init__(self, image: Image.Image, frame: Frame) -> None:
        self.image = image
        self.frame = frame
        self.draw = ImageDraw.Draw(image)

    def xy(self, pts: np.ndarray) -> list[float]:
        """Return world points as the flat canvas coordinate list PIL expects."""
        # PIL puts integer coordinates at pixel centres; our canvas space puts them at pixel corners
        return (self.frame.apply(pts) - 0.5).ravel().tolist()

    def polygon(self, pts: np.ndarray, fill: Color) -> None:
        """Fill a polygon given in world units."""
        self.draw.polygon(self.xy(pts), fill=fill)

    def ellipse(self, center: tuple[float, float], rx: float, ry: float, fill: Color) -> None:
        """Fill an axis-aligned (in world) ellipse; drawn as a polygon so it follows the roll."""
        n = int(min(64, max(12, self.frame.scale * max(rx, ry) * 0.8)))
        self.polygon(ellipse_points(center, rx, ry, n=n), fill)

    def circle(self, center: tuple[float, float], r: float, fill: Color) -> None:
        """Fill a circle given in world units."""
        c = self.frame.apply(np.asarray([center]))[0] - 0.5
        rr = r * self.frame.scale
        self.draw.ellipse([c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr], fill=fill)

    def line(self, pts: np.ndarray, width: float, fill: Color, round_ends: bool = True) -> None:
        """Draw a thick polyline (width in world units) with rounded joints and ends."""
        w = max(1, int(round(width * self.frame.scale)))
        self.draw.line(self.xy(pts), fill=fill, width=w, joint="curve")
        if round_ends:
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
            for p in (pts[0], pts[-1]):
                self.circle((p[0], p[1]), width / 2.0, fill)
