"""The head in profile: skull, face (forehead, nose, lips, chin), ear with the tragus, eye, hair styles.

Head coordinates: origin at the tragus, unit = head height, x toward the face, y down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posture.synth.canvas import Color, Painter, ellipse_points, mix, rotate, shade

HAIR_STYLES = ("short", "buzz", "bun", "ponytail", "bob", "curly", "bald", "receding", "long")
HAIR_WEIGHTS = np.array([0.22, 0.1, 0.08, 0.1, 0.12, 0.1, 0.05, 0.07, 0.16])
HAIR_COLORS: tuple[Color, ...] = (
    (20, 17, 15), (45, 30, 22), (75, 50, 32), (110, 75, 45), (170, 130, 80),
    (205, 170, 110), (130, 55, 30), (150, 145, 140), (215, 210, 205),
)  # fmt: skip

SKULL_CENTER, SKULL_RX, SKULL_RY = (0.02, -0.14), 0.43, 0.42
FACE = np.array([
    (0.28, -0.44), (0.42, -0.32), (0.47, -0.17), (0.45, -0.09), (0.52, 0.01), (0.60, 0.10),
    (0.58, 0.13), (0.50, 0.14), (0.52, 0.20), (0.50, 0.235), (0.515, 0.27), (0.47, 0.31),
    (0.50, 0.38), (0.46, 0.44), (0.35, 0.47), (0.15, 0.42), (0.02, 0.30), (-0.06, 0.12),
    (-0.06, -0.10), (0.10, -0.35),
])  # fmt: skip
LIPS = np.array([(0.50, 0.17), (0.527, 0.20), (0.50, 0.235), (0.52, 0.265), (0.48, 0.29), (0.47, 0.20)])
EYE = np.array([(0.355, -0.085), (0.415, -0.11), (0.445, -0.085), (0.415, -0.068)])
BEARD = np.array([
    (-0.04, 0.06), (0.0, 0.30), (0.15, 0.45), (0.35, 0.49), (0.47, 0.45), (0.515, 0.37),
    (0.49, 0.30), (0.44, 0.31), (0.40, 0.36), (0.25, 0.33), (0.10, 0.20), (0.02, 0.04),
])  # fmt: skip
EAR_CENTER, EAR_RX, EAR_RY = (-0.078, -0.03), 0.075, 0.12  # front edge of the ear = tragus at (0, 0)
OCCIPUT = (-0.24, 0.20)  # where the back of the neck meets the skull
UNDER_JAW = (0.16, 0.40)  # where the front of the neck meets the jaw
HAIRLINE = np.array([(-0.30, 0.13), (-0.17, 0.03), (-0.14, -0.17), (0.10, -0.30), (0.27, -0.43)])
RECEDING_HAIRLINE = np.array([(-0.30, 0.13), (-0.17, 0.03), (-0.14, -0.17), (-0.06, -0.45)])


@dataclass(frozen=True)
class HeadLook:
    """How one head looks; sampled independently of the label."""

    skin: Color
    hair_style: str
    hair_color: Color
    beard: bool
    glasses: bool
    glasses_color: Color
    headphones: bool = False
    headphones_color: Color = (30, 30, 34)
    nose: float = 1.0  # profile depth of the face in front of the ear (face shapes differ)
    hair_length: float = 1.0  # how far long hair falls below the nape (head heights)


def sample_head_look(rng: np.random.Generator, skin: Color) -> HeadLook:
    """Draw a hair style, hair colour and accessories."""
    hair = HAIR_COLORS[rng.integers(len(HAIR_COLORS))]
    hair = tuple(int(np.clip(c + rng.normal(0, 8), 0, 255)) for c in hair)
    glasses_color = ((20, 20, 20), (90, 60, 30), (150, 150, 160), (120, 20, 30))[rng.integers(4)]
    phones = ((30, 30, 34), (230, 230, 235), (170, 40, 40), (40, 70, 150))[rng.integers(4)]
    return HeadLook(
        skin=skin,
        hair_style=HAIR_STYLES[rng.choice(len(HAIR_STYLES), p=HAIR_WEIGHTS)],
        hair_color=hair,  # type: ignore[arg-type]
        beard=bool(rng.random() < 0.18),
        glasses=bool(rng.random() < 0.25),
        glasses_color=glasses_color,
        headphones=bool(rng.random() < 0.15),
        headphones_color=phones,
        nose=float(rng.uniform(0.85, 1.12)),
        hair_length=float(rng.uniform(0.35, 0.9)),
    )


def _cap(grow: float, front_deg: float = -50.0, hairline: np.ndarray = HAIRLINE) -> np.ndarray:
    """Hair cap: the skull outline grown by `grow` from the front hairline over the top to the nape."""
    outer = ellipse_points(SKULL_CENTER, SKULL_RX + grow, SKULL_RY + grow, front_deg, -220.0, n=28)
    return np.concatenate([outer, hairline])  # hairline runs nape -> front, closing the loop


def hair_shapes(look: HeadLook) -> list[np.ndarray]:
    """Return the hair polygons in head coordinates (empty for bald)."""
    style = look.hair_style
    if style == "bald":
        return []
    if style == "receding":
        return [_cap(0.03, -115.0, RECEDING_HAIRLINE)]
    if style == "buzz":
        return [_cap(0.012)]
    shapes = [_cap(0.04)]
    if style == "bun":
        shapes.append(ellipse_points((-0.33, -0.48), 0.14, 0.13, n=20))
    elif style == "ponytail":
        shapes.append(np.array([(-0.38, -0.25), (-0.58, -0.15), (-0.62, 0.10), (-0.52, 0.22), (-0.43, 0.02)]))
    elif style == "bob":
        shapes.append(np.array([(-0.44, -0.15), (-0.47, 0.18), (-0.40, 0.28), (-0.24, 0.26), (-0.17, 0.03)]))
    elif style == "long":  # falls over the nape and the back of the neck
        drop = look.hair_length
        shapes.append(np.array([(-0.40, -0.30), (-0.50, 0.05), (-0.52, 0.30 + drop), (-0.30, 0.34 + drop),
                                (-0.16, 0.20 + 0.6 * drop), (-0.12, 0.05), (-0.2, -0.2)]))
    elif style == "curly":
        t = np.radians(np.linspace(-60.0, -210.0, 9))
        for a in t:
            c = (SKULL_CENTER[0] + (SKULL_RX + 0.03) * np.cos(a), SKULL_CENTER[1] + (SKULL_RY + 0.03) * np.sin(a))
            shapes.append(ellipse_points(c, 0.1, 0.1, n=12))
    return shapes


def face_shape(look: HeadLook) -> np.ndarray:
    """The face profile, deeper or flatter in front of the ear."""
    return FACE * (look.nose, 1.0)


def head_outline(look: HeadLook) -> np.ndarray:
    """Return (N, 2) head-coordinate points whose hull covers the head: skull, face, hair and beard.

    Long hair falling down the back is left out: it hangs behind the neck, not around the head."""
    hair = hair_shapes(look)
    if look.hair_style == "long":
        hair = hair[:1]
    parts = [ellipse_points(SKULL_CENTER, SKULL_RX, SKULL_RY, n=24), face_shape(look), *hair]
    if look.beard:
        parts.append(BEARD * (look.nose, 1.0))
    return np.concatenate(parts)


def to_world(pts: np.ndarray, tragus: tuple[float, float], tilt_deg: float) -> np.ndarray:
    """Place head-coordinate points in the world: turn by the tilt (chin up > 0) about the tragus."""
    return rotate(pts, tilt_deg) + np.asarray(tragus)


def draw_head(painter: Painter, look: HeadLook, tragus: tuple[float, float], tilt_deg: float) -> None:
    """Draw the head so that the front edge of the ear (the tragus) lands on `tragus`."""

    def poly(pts: np.ndarray, color: Color) -> None:
        painter.polygon(to_world(pts, tragus, tilt_deg), color)

    def line(pts: np.ndarray, width: float, color: Color) -> None:
        painter.line(to_world(pts, tragus, tilt_deg), width, color)

    skin = look.skin
    k = (look.nose, 1.0)  # face features move with the profile's depth
    with painter.part():
        poly(ellipse_points(SKULL_CENTER, SKULL_RX, SKULL_RY, n=40), skin)
        poly(face_shape(look), skin)
    poly(LIPS * k, mix(shade(skin, 0.85), (170, 70, 80), 0.35))
    if look.beard:
        poly(BEARD * k, look.hair_color)
    hair = hair_shapes(look)
    if look.hair_style == "long":
        hair = hair[:1]  # the part falling behind the neck is drawn with the body, behind the neck
    with painter.part():
        for shape in hair:
            poly(shape, look.hair_color)
    with painter.part():
        poly(ellipse_points(EAR_CENTER, EAR_RX, EAR_RY, n=20), shade(skin, 0.84))
    poly(ellipse_points((EAR_CENTER[0] - 0.005, EAR_CENTER[1]), 0.035, 0.07, n=14), shade(skin, 0.62))
    poly(EYE * k, (35, 28, 25))
    line(np.array([(0.33, -0.165), (0.40, -0.185), (0.46, -0.17)]) * k, 0.032, shade(look.hair_color, 1.1))
    poly(ellipse_points((0.525 * look.nose, 0.112), 0.025, 0.014, n=10), shade(skin, 0.6))
    if look.glasses:
        line(np.array([(-0.03, -0.07), (0.38 * look.nose, -0.10)]), 0.02, look.glasses_color)
        line(np.array([(0.455 * look.nose, -0.15), (0.47 * look.nose, -0.03)]), 0.035, look.glasses_color)
    if look.headphones:  # band over the crown, a cup over the ear (and the tragus)
        line(np.array([(-0.085, -0.12), (-0.1, -0.36), (-0.08, -0.55), (-0.04, -0.61)]), 0.055,
             look.headphones_color)
        poly(ellipse_points((EAR_CENTER[0] - 0.01, EAR_CENTER[1] + 0.01), 0.12, 0.15, n=20), look.headphones_color)
        poly(ellipse_points((EAR_CENTER[0] - 0.01, EAR_CENTER[1] + 0.01), 0.07, 0.1, n=16), shade(look.headphones_color, 1.3))
