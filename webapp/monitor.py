"""The live monitor's memory: per-frame verdicts of the last minutes, the alert rule, and their drawings.

Only verdicts are kept (time, state, CVA), never pictures. The alert fires when the alert class
(turtle neck) has been the verdict, with a side view present, for `hold_s` seconds without a
break; a gap in the stream or one other verdict starts the count again.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from webapp.render import escape, pretty

__all__ = ["Timeline", "alert_class", "alert_html", "timeline_html"]

WINDOW_S = 300.0  # the timeline shows the last five minutes
GAP_S = 3.0  # no frame for this long: the stream paused, a streak ends
STATES = {"alert": "#e8590c", "ok": "#2f9e44", "none": "#adb5bd"}  # turtle neck, other verdicts, no side view


def alert_class(class_names: Sequence[str]) -> str | None:
    """The class that means turtle neck: `turtle_neck` when the model has it, else the non-`normal`
    class of a two-class model; None when the model's classes do not say."""
    if "turtle_neck" in class_names:
        return "turtle_neck"
    others = [c for c in class_names if c != "normal"]
    return others[0] if len(class_names) == 2 and len(others) == 1 else None


@dataclass
class Timeline:
    """Verdicts of the last `WINDOW_S` seconds and the running turtle-neck streak."""

    samples: deque = field(default_factory=deque)  # (time, state, cva_deg or None)
    streak_start: float | None = None
    last_drawn: float = 0.0  # when the timeline was last sent to the page

    def add(self, state: str, cva_deg: float | None, now: float | None = None) -> None:
        """Record one frame's verdict: "alert", "ok" or "none" (no side view)."""
        now = time.monotonic() if now is None else now
        if self.samples and now - self.samples[-1][0] > GAP_S:
            self.streak_start = None
        if state == "alert":
            self.streak_start = self.streak_start if self.streak_start is not None else now
        else:
            self.streak_start = None
        self.samples.append((now, state, cva_deg))
        while self.samples and self.samples[0][0] < now - WINDOW_S:
            self.samples.popleft()

    def held_s(self, now: float | None = None) -> float:
        """How long the alert class has been the verdict without a break (0 when it is not now)."""
        now = time.monotonic() if now is None else now
        return 0.0 if self.streak_start is None else now - self.streak_start

    def frame_rate(self, over_s: float = 3.0) -> float:
        """Frames judged per second over the last `over_s` seconds."""
        if len(self.samples) < 2:
            return 0.0
        end = self.samples[-1][0]
        recent = [t for t, _, _ in self.samples if t >= end - over_s]
        span = recent[-1] - recent[0]
        return (len(recent) - 1) / span if span > 0 else 0.0


def alert_html(held_s: float, hold_s: float, label: str | None, sound: bool) -> str:
    """The gentle reminder once the streak reaches `hold_s`, else an empty, quiet box."""
    if label is None or held_s < hold_s:
        return '<div class="monitor-alert" data-alert="off"></div>'
    return (f'<div class="monitor-alert on" data-alert="on" data-sound="{int(sound)}" role="status">'
            f"You have held a {escape(pretty(label))} for {held_s:.0f} s. Sit back, let your head rise "
            "over your shoulders, and bring the screen up to eye level.</div>")


def timeline_html(timeline: Timeline, now: float, cva_threshold: float | None = None,
                 width: int = 600, height: int = 96) -> str:
    """The last minutes as coloured one-second bars (and the CVA line when the model estimates it),
    with a legend beneath that wraps on narrow screens."""
    left, top, plot_h = 4, 6, height - 30
    scale = (width - 2 * left) / WINDOW_S
    buckets: dict[int, tuple[str, float | None]] = {}
    for t, state, cva in timeline.samples:  # one bar per second: the second's last verdict
        buckets[int(t)] = (state, cva)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" '
             f'aria-label="verdicts of the last {WINDOW_S / 60:.0f} minutes" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="{left}" y="{top}" width="{width - 2 * left}" height="{plot_h}" fill="#f8f9fa"/>']
    points = []
    for second, (state, cva) in sorted(buckets.items()):
        x = left + (second - (now - WINDOW_S)) * scale
        if x < left:
            continue
        parts.append(f'<rect class="frame {state}" x="{x:.1f}" y="{top}" width="{max(scale, 1.0):.1f}" '
                     f'height="{plot_h}" fill="{STATES[state]}" opacity="0.55"/>')
        if cva is not None and state != "none":
            points.append(f"{x:.1f},{top + plot_h * (1 - min(max((cva - 10) / 60, 0), 1)):.1f}")
    if cva_threshold is not None and points:
        y = top + plot_h * (1 - (cva_threshold - 10) / 60)
        parts.append(f'<line x1="{left}" x2="{width - left}" y1="{y:.1f}" y2="{y:.1f}" stroke="#495057" '
                     'stroke-dasharray="4 3" stroke-width="1"/>')
        parts.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#1c7ed6" stroke-width="1.5"/>')
    label_y = height - 8
    parts.append(f'<text x="{left}" y="{label_y}" font-size="13" fill="#495057">5 min ago</text>')
    parts.append(f'<text x="{width - left}" y="{label_y}" font-size="13" fill="#495057" text-anchor="end">now</text>')
    parts.append("</svg>")
    legend = [(STATES["alert"], "turtle neck"), (STATES["ok"], "other verdict"), (STATES["none"], "no side view")]
    if points:
        legend.append(("#1c7ed6", f"CVA (dashed line: {cva_threshold:g}°)"))
    keys = "".join(f'<span><i style="background:{colour}"></i>{escape(text)}</span>' for colour, text in legend)
    return "".join(parts) + f'<div class="timeline-legend">{keys}</div>'

