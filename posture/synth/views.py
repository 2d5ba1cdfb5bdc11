"""People seen from the front or from behind: pictures that hold a person but no side view.

Front/back coordinates: origin at the base of the neck, unit = head height, x to the picture's
right, y down. The same looks (skin, hair, clothes) as side views, so only the view differs.
"""

from __future__ import annotations

import numpy as np

from posture.synth.canvas import Painter, ellipse_points, shade
from posture.synth.person import Person

HEAD_CENTRE, HEAD_RX, HEAD_RY = (0.0, -0.95), 0.34, 0.5
TORSO_FRONT = np.array([
    (-0.14, 0.0), (-0.62, 0.18), (-0.82, 0.45), (-0.86, 1.4), (-0.72, 4.0),
    (0.72, 4.0), (0.86, 1.4), (0.82, 0.45), (0.62, 0.18), (0.14, 0.0),
])  # fmt: skip


def outline_points(person: Person) -> np.ndarray:
    """Points whose box covers the head and neck of a front or back view (for framing)."""
    k = person.body_scale
    head = ellipse_points(HEAD_CENTRE, HEAD_RX + 0.06, HEAD_RY + 0.06, n=16)
    return np.concatenate([head, np.array([(-0.2 * k, 0.1), (0.2 * k, 0.1)])])


def draw_front_or_back(painter: Painter, person: Person, view: str, arms_up: bool) -> None:
    """Draw a person facing the camera (`view="frontal"`) or facing away (`"back"`)."""
    if view not in ("frontal", "back"):
        raise ValueError(f"view must be 'frontal' or 'back', got {view!r}")
    look, k = person.look, person.body_scale
    skin, hair = look.skin, look.hair_color
    neck_w = 0.13 * person.neck_width
    torso = TORSO_FRONT * (k * person.depth ** 0.3, k)
    if look.hair_style == "long" and view == "back":
        painter.polygon(np.array([(-0.38, -1.1), (0.38, -1.1), (0.42, 0.3), (-0.42, 0.3)]), hair)
    painter.polygon(np.array([(-neck_w, -0.55), (neck_w, -0.55), (neck_w * 1.1, 0.05), (-neck_w * 1.1, 0.05)]),
                    shade(skin, 0.86))
    painter.polygon(torso, person.shirt)
    if person.wear in ("collar", "turtleneck", "scarf"):
        top = -0.25 if person.wear == "turtleneck" else -0.08
        painter.polygon(np.array([(-neck_w * 1.5, top), (neck_w * 1.5, top), (0.3 * k, 0.12), (-0.3 * k, 0.12)]),
                        person.wear_color if person.wear != "turtleneck" else person.shirt)
    for side in (-1.0, 1.0):  # arms
        shoulder = np.array([side * 0.72 * k, 0.3 * k])
        hand = shoulder + ((side * 0.25, -1.1) if arms_up and side > 0 else (side * 0.12, 1.9))
        painter.line(np.array([shoulder, (shoulder + hand) / 2 + (side * 0.08, 0.0), hand]), 0.25, shade(person.shirt, 0.92))
        painter.circle((float(hand[0]), float(hand[1])), 0.1, skin)
    for side in (-1.0, 1.0):  # ears
        painter.polygon(ellipse_points((side * (HEAD_RX + 0.01), -0.92), 0.06, 0.12, n=14), shade(skin, 0.84))
    with painter.part():
        painter.polygon(ellipse_points(HEAD_CENTRE, HEAD_RX, HEAD_RY, n=40), skin)
        if view == "back" and look.hair_style != "bald":  # hair covers the back of the head
            painter.polygon(ellipse_points((0.0, -1.0), HEAD_RX + 0.03, HEAD_RY - 0.02, n=40), hair)
    if view == "frontal":
        if look.hair_style not in ("bald",):
            painter.polygon(ellipse_points((0.0, -1.12), HEAD_RX + 0.03, 0.38, 200.0, 340.0, 20), hair)
        for side in (-1.0, 1.0):
            painter.polygon(ellipse_points((side * 0.13, -0.98), 0.05, 0.025, n=10), (35, 28, 25))
            if look.glasses:
                painter.line(ellipse_points((side * 0.13, -0.98), 0.09, 0.07, n=12), 0.02, look.glasses_color,
                             round_ends=False)
        painter.line(np.array([(0.0, -0.95), (0.03, -0.8), (-0.02, -0.78)]), 0.03, shade(skin, 0.7))
        painter.polygon(ellipse_points((0.0, -0.64), 0.1, 0.03, n=12), shade(skin, 0.75))
        if look.beard:
            painter.polygon(ellipse_points((0.0, -0.6), 0.25, 0.15, 0.0, 180.0, 16), hair)
    if look.headphones:
        painter.line(ellipse_points((0.0, -0.95), HEAD_RX + 0.06, HEAD_RY + 0.08, 190.0, 350.0, 16), 0.05,
                     look.headphones_color)
        for side in (-1.0, 1.0):
            painter.polygon(ellipse_points((side * (HEAD_RX + 0.04), -0.9), 0.07, 0.13, n=14), look.headphones_color)
