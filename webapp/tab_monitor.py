"""Monitor tab: the webcam as a stream, judged frame by frame, with a timeline and a gentle alert.

Frames arrive as data URLs, are decoded in memory, judged, and answered with HTML holding the
overlay as a data URL: no frame is written to disk, by this app or by Gradio's cache. Only the
verdicts (time, state, CVA) are kept, for the timeline of the last minutes.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
from PIL import Image

from webapp.context import AppContext
from webapp.errors import visitor_errors
from webapp.monitor import Timeline, alert_class, alert_html, timeline_html
from webapp.render import NO_SIDE_VIEW, cva_sentence, data_url, escape, pretty
from webapp.session import Session

__all__ = ["build"]

STREAM_EVERY_S = 0.1  # the browser sends a frame this often, and only once the last one is answered
SHOWN_SIDE = 480  # frames are judged and shown at most this large: the model sees ~100 px anyway
TIMELINE_EVERY_S = 1.0


def _live_html(frame: Image.Image, pred, info, label: str | None, rate: float) -> str:
    """The frame with its heatmap, the verdict and what the model says beside it."""
    if pred.side_view is False:
        verdict, tone = NO_SIDE_VIEW, "none"
    else:
        verdict = f"{pretty(pred.label)} ({100 * pred.confidence:.0f}%)"
        tone = "alert" if pred.label == label else "ok"
    overlay = pred.overlay(0.45) if pred.cam is not None and not pred.cam_empty else frame
    sentence = cva_sentence(pred, info)
    return (f'<div class="monitor-live {tone}"><img alt="the last frame with its heatmap" src="{data_url(overlay)}"/>'
            f'<div class="monitor-verdict">{escape(verdict)}</div>'
            + (f'<div class="monitor-cva">{escape(sentence)}</div>' if sentence else "")
            + f'<div class="monitor-rate">{rate:.1f} frames/s</div></div>')


def build(ctx: AppContext) -> dict[str, Any]:
    """Lay out the Monitor tab and wire the stream; returns its model picker."""
    gr.Markdown("Sit side-on to your webcam and press **Record**: every frame is judged as it comes, "
                "nothing is recorded or stored. The timeline shows the last five minutes.")
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            camera = gr.Image(sources=["webcam"], streaming=True, type="pil", label="Webcam",
                              elem_id="monitor-camera", webcam_options=gr.WebcamOptions(mirror=False))
            default = "resnet14" if "resnet14" in ctx.models.bundled() else ctx.models.default()
            model = gr.Dropdown(ctx.models.choices(Session()), value=default, label="Model",
                                info="resnet14 is the quick one", elem_id="monitor-model")
            with gr.Row():
                hold = gr.Number(30, minimum=1, maximum=3600, precision=0, label="Alert after (seconds)",
                                 info="of turtle neck without a break", elem_id="alert-after")
                sound = gr.Checkbox(False, label="Play a soft sound with the alert", elem_id="alert-sound")
        with gr.Column(min_width=300):
            alert = gr.HTML(alert_html(0, 1, None, False), elem_id="monitor-alert")
            live = gr.HTML('<div class="monitor-live">Waiting for the webcam…</div>', elem_id="monitor-live")
            timeline = gr.HTML(elem_id="monitor-timeline")

    @visitor_errors
    def judge_frame(frame: Image.Image | None, model_name: str, hold_s: float | None, with_sound: bool,
                    session: Session):
        """One webcam frame in: the live view, the timeline (once a second) and the alert out."""
        if frame is None:
            return gr.skip(), gr.skip(), gr.skip()
        predictor = ctx.models.predictor(model_name, session)
        frame = frame.convert("RGB")
        frame.thumbnail((SHOWN_SIDE, SHOWN_SIDE))
        pred = predictor.predict(frame, explain=True)
        label = alert_class(predictor.class_names)
        if session.monitor is None:
            session.monitor = Timeline()
        line: Timeline = session.monitor
        now = time.monotonic()
        state = "none" if pred.side_view is False else ("alert" if pred.label == label else "ok")
        line.add(state, pred.cva_deg, now)
        drawn = gr.skip()
        if now - line.last_drawn >= TIMELINE_EVERY_S:
            line.last_drawn = now
            threshold = predictor.info.cva_threshold if pred.cva_deg is not None else None
            drawn = timeline_html(line, now, threshold)
        return (_live_html(frame, pred, predictor.info, label, line.frame_rate()), drawn,
                alert_html(line.held_s(now), float(hold_s or 30), label, bool(with_sound)))

    camera.stream(judge_frame, [camera, model, hold, sound, ctx.session], [live, timeline, alert],
                  stream_every=STREAM_EVERY_S, time_limit=None, concurrency_limit=ctx.settings.max_streams,
                  concurrency_id="monitor", show_progress="hidden", api_name="monitor_frame")
    return {"model": model}
