"""Furniture and devices placed around the person: chair, desk, keyboard, monitor, laptop, phone.

All placements are relative to the body (C7 and torso) and never depend on the CVA, so they cannot
give the label away; they stay clear of the head and neck (behind the back, below the chest, or
further forward than the face of the most forward head).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posture.synth.canvas import Color, Painter, rotate, shade
from posture.synth.config import SynthConfig
from posture.synth.head import to_world
from posture.synth.person import Person, shoulder_point, torso_polygon, tragus_point

FURNITURE: tuple[Color, ...] = (
    (40, 40, 42), (70, 72, 78), (150, 110, 70), (190, 150, 105), (225, 225, 220), (35, 50, 90), (120, 30, 30),
)  # fmt: skip
DEVICE: tuple[Color, ...] = ((25, 25, 28), (55, 55, 60), (175, 178, 185), (215, 215, 220))


@dataclass(frozen=True)
class Setup:
    """Pose and props of one picture, all in world coordinates."""

    pose: str  # "sitting" | "standing"
    arms: str  # "desk" | "lap" | "hanging" | "phone" | "chin" (hand at the chin or cheek)
    hand: tuple[float, float]
    chair: Color | None
    chair_top: float
    desk: Color | None
    desk_x: float  # front edge of the desk top
    desk_y: float  # height of the desk top (y down)
    device: str  # "monitor" | "laptop" | "none"
    device_color: Color
    device_x: float
    device_size: float
    phone_angle: float

    def props(self) -> str:
        """Return a '+'-joined list of the props in the picture."""
        items = [("chair", self.chair is not None), ("desk", self.desk is not None)]
        items += [(self.device, self.device != "none"), ("phone", self.arms == "phone")]
        return "+".join(name for name, present in items if present)


def _pick(rng: np.random.Generator, colors: tuple[Color, ...]) -> Color:
    c = colors[rng.integers(len(colors))]
    return tuple(int(np.clip(v * rng.uniform(0.85, 1.15), 0, 255)) for v in c)  # type: ignore[return-value]


def sample_setup(rng: np.random.Generator, person: Person, config: SynthConfig) -> Setup:
    """Draw pose, arm position and props for a person (independently of the CVA)."""
    torso = torso_polygon(person)
    sitting = bool(rng.random() < config.sitting_prob)
    chair = _pick(rng, FURNITURE) if sitting and rng.random() < 0.8 else None
    has_desk = sitting and rng.random() < 0.75
    desk_y = float(rng.uniform(1.45, 1.85))
    chest = torso[(torso[:, 1] < desk_y + 0.4) & (torso[:, 0] > 0.3)]
    desk_x = float(chest[:, 0].max() + rng.uniform(0.1, 0.45))
    device = "none"
    if has_desk:
        u = rng.random()
        device = "monitor" if u < 0.45 else ("laptop" if u < 0.8 else "none")
    shoulder = np.asarray(shoulder_point(person))
    if rng.random() < 0.12 * config.nuisance:  # resting the chin or cheek on a hand
        arms = "chin"
        spot = (rng.uniform(0.15, 0.4), rng.uniform(0.5, 0.62))  # under the jaw, head coordinates
        hand = to_world(np.array([spot]), tragus_point(person), person.tilt_deg)[0]
    elif has_desk and rng.random() < 0.85:
        arms = "desk"
        hand = (desk_x + rng.uniform(0.25, 0.8), desk_y - 0.09)
    elif rng.random() < 0.5:
        arms = "phone"
        hand = (chest[:, 0].max() + rng.uniform(0.1, 0.45), rng.uniform(0.6, 1.0))
    elif sitting:
        arms = "lap"
        hand = (rng.uniform(0.6, 1.2), rng.uniform(2.0, 2.4))
    else:
        arms = "hanging"
        hand = (shoulder[0] + rng.uniform(-0.15, 0.35), shoulder[1] + 2.3)
    return Setup(
        pose="sitting" if sitting else "standing",
        arms=arms,
        hand=(float(hand[0]), float(hand[1])),
        chair=chair,
        chair_top=float(rng.uniform(0.35, 1.1)),
        desk=_pick(rng, FURNITURE) if has_desk else None,
        desk_x=desk_x,
        desk_y=desk_y,
        device=device,
        device_color=_pick(rng, DEVICE),
        device_x=desk_x + float(rng.uniform(0.9, 2.0)),
        device_size=float(rng.uniform(0.85, 1.2)),
        phone_angle=float(rng.uniform(45.0, 80.0)),
    )


def _slab(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def draw_behind(painter: Painter, setup: Setup, person: Person) -> None:
    """Draw what stands behind the person or beside it: chair back, desk, keyboard, monitor, laptop."""
    if setup.chair is not None:
        back = -0.2 * person.depth - 0.06
        slab = np.array([(back - 0.22, setup.chair_top + 0.08), (back - 0.16, setup.chair_top),
                         (back, setup.chair_top), (back, 4.5), (back - 0.22, 4.5)])  # fmt: skip
        painter.polygon(rotate(slab, -person.lean_deg * 0.7), setup.chair)
        painter.line(rotate(np.array([(back - 0.11, 2.3), (back - 0.11, 4.5)]), -person.lean_deg * 0.7),
                     0.1, shade(setup.chair, 0.7))  # fmt: skip
    if setup.desk is None:
        return
    x, y = setup.desk_x, setup.desk_y
    painter.polygon(_slab(x + 0.15, y, x + 0.3, y + 4.0), shade(setup.desk, 0.75))  # leg
    painter.polygon(_slab(x, y, x + 8.0, y + 0.1), setup.desk)
    color, k = setup.device_color, setup.device_size
    if setup.device == "monitor":
        mx, bottom = setup.device_x, y - 0.55 * k
        painter.polygon(_slab(mx - 0.3 * k, y - 0.04, mx + 0.35 * k, y), shade(color, 0.8))  # foot
        painter.polygon(_slab(mx + 0.02, bottom, mx + 0.1, y), shade(color, 0.9))  # stand
        painter.polygon(np.array([(mx + 0.08, bottom - 0.3 * k), (mx + 0.3 * k, bottom - 0.45 * k),
                                  (mx + 0.3 * k, bottom - 1.05 * k), (mx + 0.08, bottom - 1.2 * k)]),
                        shade(color, 0.9))  # fmt: skip
        painter.polygon(_slab(mx - 0.06, bottom - 1.55 * k, mx + 0.08, bottom), color)  # screen edge-on
    elif setup.device == "laptop":
        lx = setup.desk_x + 0.15
        painter.polygon(_slab(lx, y - 0.07, lx + 1.3 * k, y), color)
        hinge = np.array([lx + 1.3 * k, y - 0.04])
        a = math.radians(setup.phone_angle + 25.0)  # screen opened past vertical, leaning away
        top = hinge + 1.0 * k * np.array([math.cos(a), -math.sin(a)])
        painter.line(np.array([hinge, top]), 0.05, shade(color, 0.9))
    elif setup.arms == "desk":
        hx = setup.hand[0]
        painter.polygon(_slab(hx - 0.35, y - 0.06, hx + 0.4, y), (50, 50, 55))  # keyboard


def draw_in_front(painter: Painter, setup: Setup) -> None:
    """Draw what the hand holds (a phone, seen edge-on, tipped toward the face)."""
    if setup.arms != "phone":
        return
    hand = np.asarray(setup.hand)
    a = math.radians(setup.phone_angle)
    d = np.array([math.cos(a), -math.sin(a)])
    painter.line(np.array([hand - d * 0.25, hand + d * 0.4]), 0.06, setup.device_color, round_ends=False)

