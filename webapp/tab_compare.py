"""Compare tab: the same photo through two models, side by side; runs on upload, opacity re-blends both."""

from __future__ import annotations

from typing import Any

import gradio as gr

from webapp.context import AppContext
from webapp.errors import visitor_errors
from webapp.render import colour_scale_html, probabilities, verdict_markdown
from webapp.session import Session, shown_file
from webapp.tab_predict import NEED_PHOTO, analyse, photo_path, render_overlay

__all__ = ["build"]

SIDES = ("a", "b")


def build(ctx: AppContext) -> dict[str, Any]:
    """Lay out the Compare tab and wire its events; returns its pickers."""
    with gr.Row(equal_height=False):
        photo = gr.Image(label="Side-view photo", type="filepath", image_mode=None,
                         sources=["upload", "webcam", "clipboard"], height=300, elem_id="compare-photo")
        with gr.Column():
            model_a = gr.Dropdown(ctx.models.choices(Session()), value=ctx.models.default(), label="Model A",
                                  elem_id="model-a")
            model_b = gr.Dropdown(ctx.models.choices(Session()), value=ctx.models.second(), label="Model B",
                                  elem_id="model-b")
            alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity", elem_id="compare-opacity")
            button = gr.Button("Compare", variant="primary", elem_id="compare-button")
    panels: dict[str, list] = {}
    with gr.Row(elem_id="compare-results", equal_height=False):
        for side in SIDES:
            with gr.Column(min_width=280):
                panels[side] = [
                    gr.Markdown(elem_id=f"verdict-{side}", elem_classes=["verdict"]),
                    gr.Label(label=f"Model {side.upper()}: class probabilities", show_heading=False,
                             elem_id=f"probabilities-{side}"),
                    gr.Image(label=f"Model {side.upper()}: Grad-CAM", type="filepath", interactive=False, height=300,
                             elem_id=f"overlay-{side}"),
                    gr.Markdown(elem_id=f"caption-{side}"),
                ]
    gr.HTML(colour_scale_html(), elem_id="compare-colour-scale")
    outputs = panels["a"] + panels["b"]

    @visitor_errors
    def compare(photo, name_a: str, name_b: str, opacity: float, session: Session, request: gr.Request):
        """Analyse the photo with both models; each side's overlay shows its predicted class."""
        source = photo_path(photo)
        out: list = []
        for side, name in zip(SIDES, (name_a, name_b)):
            view = analyse(ctx, session, source, name)
            session.views[side] = view
            image, caption = render_overlay(view, opacity)
            out += [verdict_markdown(view.first, view.predictor.info), probabilities(view.first),
                    shown_file(image, session, request), caption]
        return tuple(out)

    @visitor_errors
    def compare_new_photo(photo, name_a: str, name_b: str, opacity: float, session: Session,
                          request: gr.Request):
        """A photo arrived or a model changed: compare again; a cleared photo clears both sides."""
        if not photo:
            return cleared(session)
        return compare(photo, name_a, name_b, opacity, session, request)

    def reblend(opacity: float, session: Session, request: gr.Request):
        """Change both overlays' opacity: re-blends of the cached heatmaps, no model run."""
        images = []
        for side in SIDES:
            view = session.views.get(side)
            images.append(gr.skip() if view is None else shown_file(render_overlay(view, opacity)[0], session,
                                                                    request))
        return tuple(images)

    def cleared(session: Session):
        for side in SIDES:
            session.views.pop(side, None)
        return ("", None, None, "") * 2

    def needs_photo(photo, *_):
        return [gr.validate(bool(photo), NEED_PHOTO)] + [gr.validate(True, "")] * 4

    inputs = [photo, model_a, model_b, alpha, ctx.session]
    button.click(compare, inputs, outputs, api_name="compare", preprocess=False, validator=needs_photo).failure(
        cleared, ctx.session, outputs, api_visibility="private", show_progress="hidden")
    gr.on([photo.input, model_a.input, model_b.input], compare_new_photo, inputs, outputs, preprocess=False,
          api_visibility="private", trigger_mode="always_last").failure(
        cleared, ctx.session, outputs, api_visibility="private", show_progress="hidden")
    alpha.input(reblend, [alpha, ctx.session], [panels["a"][2], panels["b"][2]], api_name="compare_reblend",
                show_progress="hidden", trigger_mode="always_last")
    return {"photo": photo, "model_a": model_a, "model_b": model_b}
