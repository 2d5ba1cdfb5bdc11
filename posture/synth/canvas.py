"""Drawing in body coordinates: an affine `Frame` (scale, mirror, camera roll and pitch, shift) and a `Painter`.

Body ("world") coordinates: origin at C7, unit = head height, x toward the face, y down.
Canvas coordinates: continuous pixels of the supersampled canvas (pixel i spans [i, i+1)).

Besides colours, a `Painter` can write every shape's id into a part map (an "I" image): the
rendering styles (posture.synth.styles) turn that map into outlines, silhouettes and shading.
Ids are grouped by what was drawn (`Group`): the scene, props, the person.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
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
    squash: float = 1.0  # vertical foreshortening of a camera pitched up or down (cos of the pitch)

    def apply(self, pts: np.ndarray) -> np.ndarray:
        """Map (N, 2) world points to (N, 2) canvas points."""
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        x = pts[:, 0] * (self.facing * self.scale)
        y = pts[:, 1] * (self.scale * self.squash)
        c, s = math.cos(math.radians(self.roll_deg)), math.sin(math.radians(self.roll_deg))
        return np.stack([x * c + y * s + self.origin[0], -x * s + y * c + self.origin[1]], axis=1)

    def moved(self, origin: tuple[float, float]) -> Frame:
        """Return the same frame with another canvas origin."""
        return Frame(self.scale, self.facing, self.roll_deg, origin, self.squash)


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


class Group:
    """Id ranges of the part map: what kind of thing a shape belongs to."""

    SCENE, PROPS, PERSON = 1, 1 << 20, 2 << 20

    @staticmethod
    def of(ids: np.ndarray) -> np.ndarray:
        """Group base of every id (0 where nothing was drawn)."""
        return np.where(ids >= Group.PERSON, Group.PERSON, np.where(ids >= Group.PROPS, Group.PROPS,
                                                                   np.where(ids > 0, Group.SCENE, 0)))


class Parts:
    """A part map beside the picture: each drawn shape writes its own id (see `Group`)."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.image = Image.new("I", size, 0)
        self.draw = ImageDraw.Draw(self.image)
        self.group = Group.SCENE
        self._next = {Group.SCENE: Group.SCENE, Group.PROPS: Group.PROPS, Group.PERSON: Group.PERSON}

    def new_id(self) -> int:
        """A fresh id in the current group."""
        self._next[self.group] += 1
        return self._next[self.group]

    def array(self) -> np.ndarray:
        """(H, W) int32 ids."""
        return np.asarray(self.image, dtype=np.int32)


class Painter:
    """Draw world-coordinate shapes onto a PIL image through a `Frame` (and into a part map)."""

    def __init__(self, image: Image.Image, frame: Frame, parts: Parts | None = None) -> None:
        self.image = image
        self.frame = frame
        self.draw = ImageDraw.Draw(image)
        self.parts = parts
        self._part: int | None = None  # the id every shape gets inside `part()`

    @contextmanager
    def part(self) -> Iterator[None]:
        """Shapes drawn inside form one part (one id in the part map), e.g. skull + face."""
        if self.parts is None or self._part is not None:
            yield
            return
        self._part = self.parts.new_id()
        try:
            yield
        finally:
            self._part = None

    @contextmanager
    def group(self, group: int) -> Iterator[None]:
        """Shapes drawn inside belong to `group` (Group.SCENE, PROPS or PERSON) in the part map."""
        if self.parts is None:
            yield
            return
        saved = self.parts.group
        self.parts.group = group
        try:
            yield
        finally:
            self.parts.group = saved

    def _id(self) -> int:
        assert self.parts is not None
        return self._part if self._part is not None else self.parts.new_id()

    def xy(self, pts: np.ndarray) -> list[float]:
        """Return world points as the flat canvas coordinate list PIL expects."""
        # PIL puts integer coordinates at pixel centres; our canvas space puts them at pixel corners
        return (self.frame.apply(pts) - 0.5).ravel().tolist()

    def polygon(self, pts: np.ndarray, fill: Color) -> None:
        """Fill a polygon given in world units."""
        xy = self.xy(pts)
        self.draw.polygon(xy, fill=fill)
        if self.parts is not None:
            self.parts.draw.polygon(xy, fill=self._id())

    def ellipse(self, center: tuple[float, float], rx: float, ry: float, fill: Color) -> None:
        """Fill an axis-aligned (in world) ellipse; drawn as a polygon so it follows the roll."""
        n = int(min(64, max(12, self.frame.scale * max(rx, ry) * 0.8)))
        self.polygon(ellipse_points(center, rx, ry, n=n), fill)

    def circle(self, center: tuple[float, float], r: float, fill: Color, part_id: int | None = None) -> None:
        """Fill a circle given in world units (`part_id`: the id to write, default a new one)."""
        c = self.frame.apply(np.asarray([center]))[0] - 0.5
        rr = r * self.frame.scale
        box = [c[0] - rr, c[1] - rr, c[0] + rr, c[1] + rr]
        self.draw.ellipse(box, fill=fill)
        if self.parts is not None:
            self.parts.draw.ellipse(box, fill=part_id if part_id is not None else self._id())

    def line(self, pts: np.ndarray, width: float, fill: Color, round_ends: bool = True) -> None:
        """Draw a thick polyline (width in world units) with rounded joints and ends."""
        w = max(1, int(round(width * self.frame.scale)))
        xy = self.xy(pts)
        self.draw.line(xy, fill=fill, width=w, joint="curve")
        part_id = None
        if self.parts is not None:
            part_id = self._id()
            self.parts.draw.line(xy, fill=part_id, width=w, joint="curve")
        if round_ends:
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
            for p in (pts[0], pts[-1]):
                self.circle((p[0], p[1]), width / 2.0, fill, part_id)
