"""Predict tab: one photo in; verdict, probabilities, CVA estimate, Grad-CAM overlay and its colour scale out.

A photo is analysed when it arrives (upload, webcam, paste, example) or on Analyse. Each class
and layer is explained once per photo and model; the opacity slider only re-blends.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from posture.limits import IMAGE_SUFFIXES
from posture.overlay import overlay_heatmap
from posture.predict import Prediction, Predictor
from webapp.context import AppContext
from webapp.errors import ask, visitor_errors
from webapp.render import colour_scale_html, pretty, probabilities, verdict_markdown, verdict_text
from webapp.session import Session, shown_file

__all__ = ["NEED_PHOTO", "View", "analyse", "build", "example_gallery", "photo_path", "render_overlay"]

NEED_PHOTO = "Add a side-view photo first: upload one, take one with the webcam, paste one, or pick an example."
MAX_EXAMPLES = 24


@dataclass
class View:
    """The photo last analysed in a panel: enough to re-blend or explain again without a new run."""

    source: str
    model: str
    layer: str
    predictor: Predictor
    predictions: dict[str, Prediction] = field(default_factory=dict)  # explained class -> its prediction
    target: str = ""  # the class shown now

    @property
    def first(self) -> Prediction:
        return next(iter(self.predictions.values()))


def photo_path(photo: Any) -> str:
    """The server-side path of an uploaded photo (Gradio's decoding is skipped: the library does EXIF)."""
    if isinstance(photo, dict):
        photo = photo.get("path")
    if not photo:
        raise ask(NEED_PHOTO)
    return str(photo)


def analyse(ctx: AppContext, session: Session, source: str, model: str, layer: str | None = None,
            target: str | None = None) -> View:
    """Predict and explain `source` with `model`; raises the library's errors."""
    predictor = ctx.models.predictor(model, session)
    pred = predictor.predict(source, target=target or None, explain=True, layer=layer or None)
    view = View(source, model, pred.layer or predictor.cam_layer, predictor)
    view.predictions[pred.target or pred.label] = pred
    view.target = pred.target or pred.label
    return view


def render_overlay(view: View, alpha: float) -> tuple[Image.Image, str]:
    """The overlay of the class shown now and a caption saying what it shows."""
    pred = view.predictions[view.target]
    first = view.first
    caption = (f"**{verdict_text(first)}** by `{view.model}` in {first.latency_ms:.0f} ms. "
               f"Heatmap: where the model looked for *{pretty(view.target)}*, explained at layer `{view.layer}`.")
    if pred.cam is None or pred.cam_empty:
        return pred.image, caption + " Grad-CAM is zero everywhere for this class: nothing to highlight."
    return overlay_heatmap(pred.image, pred.cam, alpha=float(alpha)), caption


def _details(view: View) -> dict:
    return {"model": view.model, **view.first.to_dict()}


def _outputs(view: View, alpha: float, session: Session, request: gr.Request | None) -> tuple:
    overlay, caption = render_overlay(view, alpha)
    first, info = view.first, view.predictor.info
    classes = gr.Dropdown(choices=[(pretty(c), c) for c in first.probabilities], value=view.target)
    layers = gr.Dropdown(choices=view.predictor.cam_layers, value=view.layer)
    return (verdict_markdown(first, info), probabilities(first), shown_file(overlay, session, request), caption,
            classes, layers, _details(view), session)


def _cleared(session: Session) -> tuple:
    session.views.pop("predict", None)
    return ("", None, None, "", gr.Dropdown(choices=[], value=None), gr.skip(), None, session)


def example_gallery(folder: Path | None) -> list[tuple[str, str | None]]:
    """(image, caption) for each example photo; captions from the folder's labels.csv when present."""
    if folder is None or not folder.is_dir():
        return []
    images = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES][:MAX_EXAMPLES]
    captions: dict[str, str] = {}
    labels = folder / "labels.csv"
    if labels.is_file():
        with labels.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                parts = [pretty(row.get("label") or "")]
                try:
                    parts.append(f"CVA {float(row.get('cva_deg') or ''):.0f}°")
                except ValueError:
                    pass
                parts.append((row.get("note") or "").strip())
                captions[row.get("file", "")] = ", ".join(p for p in parts if p)
    return [(str(p), captions.get(p.name) or None) for p in images]


def build(ctx: AppContext) -> dict[str, Any]:
    """Lay out the Predict tab and wire its events; returns the components other tabs use."""
    first = ctx.models.default()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            photo = gr.Image(label="Side-view photo", type="filepath", image_mode=None,
                             sources=["upload", "webcam", "clipboard"], height=360, elem_id="photo")
            model = gr.Dropdown(ctx.models.choices(Session()), value=first, label="Model", elem_id="predict-model")
            analyse_button = gr.Button("Analyse", variant="primary", elem_id="analyse")
        with gr.Column(scale=1, min_width=300, elem_id="predict-results"):
            verdict = gr.Markdown(elem_id="verdict", elem_classes=["verdict"])
            probs = gr.Label(label="Class probabilities", show_heading=False, elem_id="probabilities")
            overlay = gr.Image(label="Grad-CAM overlay", type="filepath", interactive=False, height=360,
                               elem_id="overlay")
            gr.HTML(colour_scale_html(), elem_id="colour-scale")
            caption = gr.Markdown(elem_id="caption")
            with gr.Row():
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Heatmap opacity", elem_id="opacity")
                target = gr.Dropdown([], value=None, label="Class to explain", info="The predicted class by default",
                                     elem_id="explain-class")
                layer = gr.Dropdown([], value=None, label="Layer to explain",
                                    info="Earlier layers: finer, more local maps", elem_id="explain-layer")
            with gr.Accordion("Details (JSON)", open=False):
                details = gr.JSON(elem_id="details")
    gallery_items = example_gallery(ctx.settings.examples)
    if gallery_items:
        examples = gr.Gallery(gallery_items, label="Examples (click one)", columns=4, fit_columns=False,
                              allow_preview=False, object_fit="contain", elem_id="examples")
    else:
        examples = None
        gr.Markdown("*No example photos in this installation: upload your own.*", elem_id="examples")

    outputs = [verdict, probs, overlay, caption, target, layer, details, ctx.session]

    @visitor_errors
    def predict(photo, model_name: str, layer_name: str | None, opacity: float, session: Session,
                request: gr.Request):
        """Classify a photo and explain the predicted class at the chosen layer (one model run)."""
        view = analyse(ctx, session, photo_path(photo), model_name, layer_name)
        session.views["predict"] = view
        return _outputs(view, opacity, session, request)

    @visitor_errors
    def predict_new_photo(photo, model_name: str, opacity: float, session: Session, request: gr.Request):
        """A photo arrived or the model changed: analyse at the model's default layer; no photo clears."""
        if not photo or not model_name:
            return _cleared(session)
        return predict(photo, model_name, None, opacity, session, request)

    @visitor_errors
    def explain(photo, model_name: str, target_name: str | None, layer_name: str | None, opacity: float,
                session: Session, request: gr.Request):
        """Grad-CAM for another class or layer; each is computed once per photo and model."""
        source = photo_path(photo)
        view = session.views.get("predict")
        layer_name = layer_name or None
        if view is None or (view.source, view.model) != (source, model_name) or \
                (layer_name is not None and layer_name != view.layer):
            view = analyse(ctx, session, source, model_name, layer_name, target_name)
            session.views["predict"] = view
        target_name = target_name or view.first.label
        if target_name not in view.first.probabilities:
            raise ask(f"Unknown class {target_name!r}; {model_name} knows {', '.join(view.first.probabilities)}.")
        if target_name not in view.predictions:
            other = analyse(ctx, session, source, model_name, view.layer, target_name)
            view.predictions[target_name] = other.first
        view.target = target_name
        image, text = render_overlay(view, opacity)
        return shown_file(image, session, request), text, _details(view)

    def reblend(opacity: float, target_name: str | None, session: Session, request: gr.Request):
        """Change the overlay's opacity: a re-blend of the cached heatmap, no model run."""
        view = session.views.get("predict")
        if view is None:
            return gr.skip(), gr.skip()
        if target_name in view.predictions:
            view.target = target_name
        image, text = render_overlay(view, opacity)
        return shown_file(image, session, request), text

    def pick_example(evt: gr.SelectData):
        """An example was clicked: it becomes the photo (the analysis follows)."""
        value = evt.value or {}
        image = value.get("image") if isinstance(value, dict) else None
        return (image or {}).get("path") if isinstance(image, dict) else image

    def clear_after_failure(session: Session):
        """A failed analysis leaves no earlier verdict or overlay, and the unusable photo makes room."""
        return (None, *_cleared(session))

    def needs_photo(photo, *_):
        return [gr.validate(bool(photo), NEED_PHOTO)] + [gr.validate(True, "")] * 4

    failed = dict(fn=clear_after_failure, inputs=ctx.session, outputs=[photo, *outputs], api_visibility="private",
                  show_progress="hidden")
    analyse_button.click(predict, [photo, model, layer, alpha, ctx.session], outputs, api_name="predict",
                         preprocess=False, validator=needs_photo).failure(**failed)
    new_photo = [photo, model, alpha, ctx.session]
    gr.on([photo.input, model.input], predict_new_photo, new_photo, outputs, preprocess=False,
          api_name="predict_new_photo", api_visibility="private", trigger_mode="always_last").failure(**failed)
    if examples is not None:
        examples.select(pick_example, None, photo, api_visibility="private", show_progress="hidden").then(
            predict_new_photo, new_photo, outputs, preprocess=False, api_visibility="private").failure(**failed)
    explain_inputs = [photo, model, target, layer, alpha, ctx.session]
    explain_outputs = [overlay, caption, details]
    target.input(explain, explain_inputs, explain_outputs, api_name="explain", preprocess=False)
    layer.input(explain, explain_inputs, explain_outputs, api_visibility="private", preprocess=False)
    alpha.input(reblend, [alpha, target, ctx.session], [overlay, caption], api_name="reblend",
                show_progress="hidden", trigger_mode="always_last")
    return {"photo": photo, "model": model}
