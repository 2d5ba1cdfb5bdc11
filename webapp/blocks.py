"""The whole page: tabs built in order from shared state, then the events that cross tabs.

`build_app(settings)` returns the `gr.Blocks`; `launch_options(settings)` the arguments
`launch` needs (the page's CSS and script, the upload size limit). Nothing here loads a
model: models load on first use and are then shared.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import gradio as gr

from webapp import tab_batch, tab_compare, tab_models, tab_monitor, tab_predict, tab_retrain
from webapp.context import AppContext
from webapp.errors import hide_folder
from webapp.models import ModelList
from webapp.session import Session, app_folder, close_session, close_session_of
from webapp.settings import Settings
from webapp.training import TrainingSlot

__all__ = ["build_app", "launch_options"]

STATIC = Path(__file__).resolve().parent / "static"


def _banner(ctx: AppContext) -> str:
    if ctx.models.bundled():
        return ""
    return (f"**No bundled models found** in `{ctx.settings.checkpoints}`. Upload a posture checkpoint in the "
            "**Models** tab or train one in **Retrain**, or set `POSTURE_CHECKPOINTS` to a folder of "
            "`.safetensors` checkpoints.")


def build_app(settings: Settings) -> gr.Blocks:
    """The app's page for these settings (nothing is loaded until a visitor asks for it)."""
    models = ModelList(settings)
    slot = TrainingSlot()
    # Messages name files by their own names, never by where the server keeps them.
    hide_folder(os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio"), "upload")
    hide_folder(str(app_folder()), "your files")
    hide_folder(str(settings.checkpoints.resolve()), "checkpoints")
    ttl = settings.session_ttl_s
    with gr.Blocks(title="Turtle-neck detector", analytics_enabled=False, delete_cache=(1800, int(ttl))) as demo:
        session = gr.State(Session(), time_to_live=ttl, delete_callback=close_session)
        ctx = AppContext(settings, models, session)
        ctx.models_table = gr.HTML(models.table_html(Session()), label="Models in this session", render=False,
                                   elem_id="models-table")
        ctx.models_json = gr.JSON(models.records(Session()), label="Models as JSON", render=False,
                                  elem_id="models-json")
        ctx.own_models = gr.Dropdown([], value=None, label="Your model", render=False, elem_id="my-model")
        # The Models tab's download picker: registered first, so every tab's model updates include it.
        ctx.pickers["download"] = gr.Dropdown(models.choices(Session()), value=models.default(), label="Model",
                                              render=False, elem_id="download-model")
        gr.Markdown("# Turtle-neck detector\nA side-view photo in: a posture verdict, the neck angle where the "
                    "model estimates it, and a Grad-CAM map of where the model looked.")
        banner = _banner(ctx)
        gr.Markdown(banner, visible=bool(banner), elem_id="no-models-banner")
        with gr.Tabs() as tabs:
            ctx.tabs = tabs
            with gr.Tab("Predict", id="predict"):
                ctx.pickers["predict"] = tab_predict.build(ctx)["model"]
            with gr.Tab("Compare", id="compare"):
                compare = tab_compare.build(ctx)
                ctx.pickers["compare_a"], ctx.pickers["compare_b"] = compare["model_a"], compare["model_b"]
            with gr.Tab("Monitor", id="monitor"):
                ctx.pickers["monitor"] = tab_monitor.build(ctx)["model"]
            with gr.Tab("Batch", id="batch"):
                ctx.pickers["batch"] = tab_batch.build(ctx)["model"]
            with gr.Tab("Retrain", id="retrain"):
                retrain = tab_retrain.build(ctx, slot)
            with gr.Tab("Models", id="models"):
                model_tab = tab_models.build(ctx)
            with gr.Tab("About", id="about"):
                gr.Markdown((STATIC / "about.md").read_text(encoding="utf-8").replace(
                    "{session_ttl_min}", f"{settings.session_ttl_min:g}"))

        def use_trained(session: Session, tab: str):
            """Select the model just trained in Predict (or Compare's model B) and switch to that tab."""
            name = session.last_trained
            if not name or name not in session.models:
                raise gr.Error("Train a model first.", print_exception=False)
            select = {"predict": name} if tab == "predict" else {"compare_b": name}
            return (gr.Tabs(selected=tab), *ctx.model_updates(session, select))

        outputs = [tabs, *ctx.model_outputs]
        retrain["use_in_predict"].click(lambda s: use_trained(s, "predict"), session, outputs,
                                        api_name="use_in_predict")
        retrain["use_in_compare"].click(lambda s: use_trained(s, "compare"), session, outputs,
                                        api_name="use_in_compare")
        # The visitor's own models are listed at page load; their files go when they leave.
        demo.load(model_tab["listing"], session, ctx.model_outputs, api_name="models")
        demo.unload(close_session_of)
    return demo


def launch_options(settings: Settings) -> dict:
    """Arguments for `demo.launch`: the page's style and script, the largest upload, no run history."""
    return {
        "css": (STATIC / "app.css").read_text(encoding="utf-8"),
        "head": (STATIC / "head.html").read_text(encoding="utf-8"),
        "max_file_size": settings.limits.max_total_bytes,
        # No run history: it would keep visitors' photos in the browser beyond their session.
        "run_history": False,
    }
