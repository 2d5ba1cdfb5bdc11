"""The person in profile: torso and clothing, the neck band from C7 toward the tragus, the near arm.

World coordinates (see canvas.py): origin at C7, unit = head height, x toward the face, y down.
The tragus sits at C7 + L * (cos(cva), -sin(cva)): this is the only place the label enters the picture.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from posture.synth.canvas import Color, Painter, ellipse_points, rotate, shade
from posture.synth.config import SynthConfig
from posture.synth.head import (
    OCCIPUT,
    UNDER_JAW,
    HeadLook,
    draw_head,
    hair_shapes,
    head_outline,
    sample_head_look,
    to_world,
)

SKIN_TONES: tuple[Color, ...] = (
    (250, 220, 196), (238, 193, 165), (222, 170, 135), (198, 136, 98),
    (168, 112, 76), (140, 88, 58), (110, 68, 44), (82, 52, 34),
)  # fmt: skip
# torso outline before depth/length scaling and lean: back from C7 down, then the front up to the neckline
TORSO = np.array([
    (0.0, 0.0), (-0.10, 0.25), (-0.17, 0.60), (-0.20, 1.00), (-0.17, 1.50), (-0.10, 2.10), (-0.06, 2.70),
    (-0.06, 4.00), (0.62, 4.00), (0.68, 2.70), (0.72, 2.00), (0.80, 1.40), (0.86, 0.90), (0.82, 0.52),
    (0.66, 0.30), (0.46, 0.19), (0.22, 0.07),
])  # fmt: skip
SHOULDER = (0.30, 0.36)
UPPER_ARM, FOREARM = 1.25, 1.10


@dataclass(frozen=True)
class Person:
    """One person's pose and looks; everything but `cva_deg` is drawn independently of the label."""

    cva_deg: float
    neck_length: float  # C7 -> tragus distance in head heights
    tilt_deg: float  # head rotation about the tragus, chin up > 0
    lean_deg: float  # torso lean about C7, forward > 0
    depth: float  # torso front-to-back scale
    look: HeadLook
    shirt: Color
    shirt_accent: Color
    pattern: str  # "plain" | "hstripes" | "vstripes" | "jacket"
    sleeve: str  # "long" | "short"
    body_scale: float = 1.0  # torso size relative to the head: proportions differ between people
    neck_width: float = 1.0  # thickness of the neck band
    wear: str = "none"  # what covers part of the neck: "none" | "collar" | "turtleneck" | "hood" | "scarf"
    wear_color: Color = (90, 90, 90)

WEAR = ("none", "collar", "turtleneck", "hood", "scarf")
WEAR_WEIGHTS = np.array([0.5, 0.16, 0.1, 0.12, 0.12])


def _random_color(rng: np.random.Generator) -> Color:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.8), rng.uniform(0.15, 0.95))
    return int(r * 255), int(g * 255), int(b * 255)


def sample_person(rng: np.random.Generator, cva_deg: float, config: SynthConfig) -> Person:
    """Draw a person with the given CVA; all other attributes come from `rng` alone."""
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))]
    skin = tuple(int(np.clip(c * rng.uniform(0.94, 1.06), 0, 255)) for c in skin)
    patterns = ("hstripes", "vstripes", "jacket")
    pattern = patterns[rng.integers(3)] if rng.random() < 0.5 * config.nuisance else "plain"
    look = sample_head_look(rng, skin)  # type: ignore[arg-type]
    wear = WEAR[rng.choice(len(WEAR), p=WEAR_WEIGHTS)] if rng.random() < config.nuisance else "none"
    return Person(
        cva_deg=cva_deg,
        neck_length=float(rng.uniform(0.82, 0.96)),
        tilt_deg=float(rng.uniform(-1.0, 1.0) * config.max_head_tilt_deg),
        lean_deg=float(rng.uniform(*config.torso_lean_deg)),
        depth=float(rng.uniform(0.85, 1.25)),
        look=look,
        shirt=_random_color(rng),
        shirt_accent=_random_color(rng),
        pattern=pattern,
        sleeve="long" if rng.random() < 0.5 else "short",
        body_scale=float(rng.uniform(*config.body_scale)),
        neck_width=float(rng.uniform(0.75, 1.3)),
        wear=wear,
        wear_color=_random_color(rng),
    )


def tragus_point(person: Person) -> tuple[float, float]:
    """Return the tragus in world coordinates: C7 + L * (cos cva, -sin cva)."""
    a = math.radians(person.cva_deg)
    return person.neck_length * math.cos(a), -person.neck_length * math.sin(a)


def _body(pts: np.ndarray | tuple[float, float], person: Person) -> np.ndarray:
    """Scale torso-frame points by the body's size and depth and turn them by the lean about C7."""
    pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) * (person.depth * person.body_scale, person.body_scale)
    return rotate(pts, -person.lean_deg)


def torso_polygon(person: Person) -> np.ndarray:
    """Return the torso outline in world coordinates (top edge runs forward from C7)."""
    return _body(TORSO, person)


def shoulder_point(person: Person) -> tuple[float, float]:
    """Return the shoulder joint in world coordinates."""
    x, y = _body(SHOULDER, person)[0]
    return float(x), float(y)


def neck_polygon(person: Person) -> np.ndarray:
    """Return the neck band: from C7 up the back to the skull, across under the jaw, down into the chest."""
    tragus = tragus_point(person)
    a = math.radians(person.cva_deg)
    across = np.array([math.sin(a), math.cos(a)])  # perpendicular to C7->tragus, toward the throat
    top = to_world(np.array([OCCIPUT, UNDER_JAW]), tragus, person.tilt_deg)
    throat = across * 0.5 * person.neck_width + (0.0, 0.15)
    return np.array([(0.0, 0.0), top[0], top[1], throat, (0.2, 0.35)])


def _lerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


def _draw_wear(painter: Painter, person: Person, stage: str) -> None:
    """Clothing over part of the neck: a hood behind the head ("behind"), or a collar, a
    turtleneck or a scarf over the base of the neck ("over"); the neck stays partly visible."""
    neck = neck_polygon(person)
    c7, back_top, front_top, throat, chest = neck
    color = person.wear_color
    if stage == "behind" and person.wear == "hood":
        tragus = np.asarray(tragus_point(person))
        ring = to_world(ellipse_points((-0.05, -0.12), 0.58, 0.56, 120.0, 300.0, 18), tuple(tragus), person.tilt_deg)
        painter.polygon(np.concatenate([ring, [(0.25, 0.1), (-0.35, 0.35), (-0.4, 0.05)]]), color)
    if stage != "over":
        return
    if person.wear == "collar":
        up = 0.18
        painter.polygon(np.array([c7 + (-0.06, 0.04), _lerp(c7, back_top, up), _lerp(throat, front_top, up * 0.6),
                                  throat + (0.06, 0.02), chest]), color)
    elif person.wear == "turtleneck":
        up = 0.55
        painter.polygon(np.array([c7 + (-0.05, 0.05), _lerp(c7, back_top, up), _lerp(throat, front_top, up),
                                  throat + (0.05, 0.0), chest]), person.shirt)
    elif person.wear == "scarf":
        lo, hi = 0.05, 0.4
        band = np.array([_lerp(c7, back_top, lo) + (-0.06, 0.0), _lerp(c7, back_top, hi) + (-0.05, 0.0),
                         _lerp(throat, front_top, hi) + (0.05, 0.0), _lerp(throat, front_top, lo) + (0.06, 0.02)])
        with painter.part():
            painter.polygon(band, color)
            tail = throat + (0.05, 0.0)
            painter.polygon(np.array([tail, tail + (0.1, 0.0), tail + (0.14, 0.7), tail + (-0.02, 0.72)]), color)


def head_neck_points(person: Person) -> np.ndarray:
    """Return world points whose bounding box covers the head (with hair) and the neck down to C7."""
    tragus = tragus_point(person)
    head = to_world(head_outline(person.look), tragus, person.tilt_deg)
    return np.concatenate([head, neck_polygon(person)[:3]])


def _draw_pattern(painter: Painter, person: Person, outline: np.ndarray) -> None:
    """Paint stripes or an open jacket inside the torso outline (masked paste)."""
    image = painter.image
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon(painter.xy(outline), fill=255)
    layer = image.copy()
    pp = Painter(layer, painter.frame)
    if person.pattern == "jacket":  # shirt shows in a strip at the front, jacket colour elsewhere
        pp.polygon(outline, person.shirt_accent)
        pp.polygon(_body(np.array([(-0.3, -0.2), (0.45, -0.2), (0.5, 0.6), (0.52, 4.2), (-0.3, 4.2)]), person),
                   person.shirt)  # fmt: skip
    else:
        step = 0.16 if person.pattern == "hstripes" else 0.13
        for k in range(-4, 30):
            t = k * step
            if person.pattern == "hstripes":
                band = np.array([(-0.5, t), (1.5, t), (1.5, t + step / 2), (-0.5, t + step / 2)])
            else:
                band = np.array([(t - 1.0, -0.5), (t - 1.0 + step / 2, -0.5), (t - 1.0 + step / 2, 4.5), (t - 1.0, 4.5)])
            pp.polygon(_body(band / (person.depth, 1.0), person), person.shirt_accent)
    image.paste(layer, (0, 0), mask)


def _elbow(shoulder: np.ndarray, hand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-link inverse kinematics: return (elbow, reachable hand) with the elbow bent downward."""
    v = hand - shoulder
    d = float(np.hypot(*v))
    reach = UPPER_ARM + FOREARM - 0.03
    if d > reach:
        hand, v, d = shoulder + v * (reach / d), v * (reach / d), reach
    d = max(d, abs(UPPER_ARM - FOREARM) + 0.05)
    cos_a = (UPPER_ARM**2 + d**2 - FOREARM**2) / (2 * UPPER_ARM * d)
    a = math.degrees(math.acos(max(-1.0, min(1.0, cos_a))))
    u = v / max(np.hypot(*v), 1e-9) * UPPER_ARM
    options = [shoulder + rotate(u, s * a)[0] for s in (1.0, -1.0)]
    return max(options, key=lambda e: e[1]), hand


def draw_person(painter: Painter, person: Person, hand: tuple[float, float]) -> None:
    """Draw neck, torso (with clothing), head and the near arm reaching for `hand` (world coordinates)."""
    skin = person.look.skin
    _draw_wear(painter, person, "behind")
    if person.look.hair_style == "long":  # long hair falls behind the neck and shoulders
        with painter.part():
            for shape in hair_shapes(person.look)[1:]:
                painter.polygon(to_world(shape, tragus_point(person), person.tilt_deg), person.look.hair_color)
    painter.polygon(neck_polygon(person), shade(skin, 0.86))  # neck sits a little in the jaw's shadow
    outline = torso_polygon(person)
    painter.polygon(outline, person.shirt)
    if person.pattern != "plain":
        _draw_pattern(painter, person, outline)
    # collar rim along the neckline keeps C7 and the shirt edge crisp
    painter.line(outline[[-3, -2, -1, 0]], 0.045, shade(person.shirt, 0.8), round_ends=False)
    _draw_wear(painter, person, "over")
    draw_head(painter, person.look, tragus_point(person), person.tilt_deg)

    shoulder = np.asarray(shoulder_point(person))
    elbow, wrist = _elbow(shoulder, np.asarray(hand, dtype=np.float64))
    sleeve = shade(person.shirt if person.pattern != "jacket" else person.shirt, 0.92)
    painter.circle(tuple(shoulder), 0.2 * person.depth, sleeve)
    if person.sleeve == "long":
        painter.line(np.array([shoulder, elbow]), 0.27, sleeve)
        painter.line(np.array([elbow, wrist]), 0.23, sleeve)
    else:
        mid = shoulder + (elbow - shoulder) * 0.55
        painter.line(np.array([mid, elbow, wrist]), 0.21, skin)
        painter.line(np.array([shoulder, mid]), 0.29, sleeve)
    painter.circle(tuple(wrist + (wrist - elbow) / FOREARM * 0.1), 0.11, shade(skin, 0.97))
