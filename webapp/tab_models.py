"""Models tab: what each model is (from its checkpoint), adding a checkpoint, managing your own models,
and downloading any model as its checkpoint and as ONNX."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gradio as gr

from posture.checkpoints import read_info
from posture.errors import PostureError
from posture.export import export_onnx, output_names
from webapp.context import AppContext
from webapp.errors import ask, public_message, visitor_errors
from webapp.session import Session

__all__ = ["build", "model_name"]

NOT_OURS = ("Only checkpoints saved by this project (the Retrain tab or `python -m posture train`) "
            "can be added.")


def model_name(text: str | None) -> str:
    """A visitor's text as a model name: letters, digits, '-', '_' and '.', at most 40 characters."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in (text or "").strip())[:40].strip("-.")


def build(ctx: AppContext) -> dict[str, Any]:
    """Lay out the Models tab (the table was created unrendered by the app) and wire it."""
    gr.Markdown("**Models in this session**")
    ctx.models_table.render()
    with gr.Accordion("As JSON", open=False):
        ctx.models_json.render()
    with gr.Row(equal_height=False):
        with gr.Column(min_width=280):
            gr.Markdown("**Your models** (this session only: download them to keep them)")
            ctx.own_models.render()
            new_name = gr.Textbox(label="New name", placeholder="e.g. office-chair", max_lines=1, elem_id="new-name")
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete")
            download = gr.DownloadButton("Download (.safetensors)", visible=False, size="sm", elem_id="download-mine")
        with gr.Column(min_width=280):
            upload = gr.File(file_types=[".safetensors"], label="Add a posture checkpoint (.safetensors)",
                             height=120, elem_id="model-upload")
            message = gr.Markdown(elem_id="model-message")
    gr.Markdown("**Download a model**: its posture checkpoint (`.safetensors`) and the same model as "
                "ONNX, for any ONNX runtime (class names, input size and normalisation are in its metadata; "
                "the README shows how to run it). Exporting takes a few seconds.")
    with gr.Row(equal_height=True):
        ctx.pickers["download"].render()
        export = gr.Button("Export for download", size="sm", elem_id="export-model")
    export_files = gr.File(label="Files", file_count="multiple", interactive=False, visible=False,
                           elem_id="export-files")
    export_message = gr.Markdown(elem_id="export-message")
    pickers = list(ctx.pickers.values())
    outputs = [message, *ctx.model_outputs, ctx.session]

    def upload_model(file, session: Session, request: gr.Request):
        """Add a posture .safetensors checkpoint to this session's models."""
        if not file:
            raise ask("Choose a .safetensors checkpoint made by this project.")
        path = Path(file)
        session.workdir(request)
        dest = session.new_path("uploaded", ".safetensors")
        stem = model_name(path.stem) or "model"
        taken = ctx.models.names(session)
        name = next(n for i in range(1, 10_000) if (n := stem if i == 1 else f"{stem}-{i}") not in taken)
        try:
            read_info(path)  # refuse before copying, naming the visitor's file
            shutil.copyfile(path, dest)
            session.models[name] = dest
            predictor = ctx.models.predictor(name, session)  # load now: a damaged tensor section shows here
        except PostureError as exc:
            session.models.pop(name, None)
            dest.unlink(missing_ok=True)
            session.last_error = f"{public_message(exc, {str(path): path.name}).rstrip('.')}. {NOT_OURS}"
            raise ask(session.last_error) from exc
        info = predictor.info
        extra = f", also estimates {' and '.join(h.replace('_', ' ') for h in info.heads)}" if info.heads else ""
        text = (f"Added **{name}**: {info.arch}, classes {', '.join(info.class_names)}, input {info.input_size}px"
                f"{extra}. It is now in every tab's model picker.")
        return (text, *ctx.model_updates(session, own=name), session)

    def show_refusal(session: Session):
        """Put the reason a checkpoint was refused where the upload's result goes."""
        return f"**Not added.** {session.last_error}" if session.last_error else ""

    @visitor_errors
    def rename_model(old: str | None, new: str | None, *values):
        """Give one of your models another name (bundled models keep theirs)."""
        session: Session = values[-1]
        name = _own(old, session, "renamed")
        target = model_name(new)
        if not target:
            raise ask("Type the new name first (letters, digits, '-', '_').")
        if target in ctx.models.names(session):
            raise ask(f"A model called {target!r} already exists in this session; choose another name.")
        session.models[target] = session.models.pop(name)
        if name in session.predictors:
            session.predictors[target] = session.predictors.pop(name)
            session.predictors[target].name = target
        session.last_trained = target if session.last_trained == name else session.last_trained
        select = {tab: target for tab, value in zip(ctx.pickers, values[:-1]) if value == name}
        return (f"Renamed **{name}** to **{target}**.", *ctx.model_updates(session, select, own=target), session)

    @visitor_errors
    def delete_model(old: str | None, *values):
        """Delete one of your models and its file (bundled models stay)."""
        session: Session = values[-1]
        name = _own(old, session, "deleted")
        path = session.models.pop(name)
        session.predictors.pop(name, None)
        path.unlink(missing_ok=True)
        session.last_trained = None if session.last_trained == name else session.last_trained
        fallback = ctx.models.default()
        select = {tab: fallback for tab, value in zip(ctx.pickers, values[:-1]) if value == name}
        return (f"Deleted **{name}**.", *ctx.model_updates(session, select), session)

    def _own(name: str | None, session: Session, verb: str) -> str:
        if name and name in ctx.models.bundled() and name not in session.models:
            raise ask(f"{name} is a bundled model: only your own models can be {verb}.")
        if not name or name not in session.models:
            raise ask("Choose one of your models first (upload or train one).")
        return name

    def offer_download(name: str | None, session: Session):
        """The chosen own model's checkpoint, to download."""
        path = session.models.get(name or "")
        return gr.DownloadButton(value=str(path) if path else None, visible=path is not None)

    @visitor_errors
    def export_model(name: str | None, session: Session, request: gr.Request, progress=gr.Progress()):
        """The chosen model's checkpoint and its ONNX export, as files to download."""
        source = ctx.models.path(name, session)
        predictor = ctx.models.predictor(name, session)  # loaded (and checked) already, or now
        folder = session.workdir(request) / "downloads"
        checkpoint, onnx_file, stamp = folder / f"{name}.safetensors", folder / f"{name}.onnx", folder / "source"
        source_stat = source.stat()
        source_id = f"{source.resolve()} {source_stat.st_size} {source_stat.st_mtime_ns}"
        if not (onnx_file.is_file() and stamp.is_file() and stamp.read_text() == source_id):
            shutil.rmtree(folder, ignore_errors=True)  # only the latest export is kept
            folder.mkdir()
            shutil.copyfile(source, checkpoint)
            progress(0.2, desc="exporting to ONNX")
            export_onnx(predictor.model, predictor.info, onnx_file)
            stamp.write_text(source_id)  # the same model again is served from these files
        info = predictor.info
        text = (f"**{name}** as ONNX: input `image` (B, 3, {info.input_size}, {info.input_size}), outputs "
                f"{', '.join(f'`{o}`' for o in output_names(predictor.model))}; "
                f"{onnx_file.stat().st_size / 1e6:.1f} MB. The checkpoint is {checkpoint.stat().st_size / 1e6:.1f} MB.")
        return gr.File(value=[str(checkpoint), str(onnx_file)], visible=True), text

    def listing(session: Session):
        """Every picker and the table, for this session (at page load)."""
        return ctx.model_updates(session)

    upload.upload(upload_model, [upload, ctx.session], outputs, api_name="upload_model",
                  show_progress_on=[message]).failure(show_refusal, ctx.session, message, api_visibility="private",
                                                      show_progress="hidden")
    rename.click(rename_model, [ctx.own_models, new_name, *pickers, ctx.session], outputs, api_name="rename_model")
    delete.click(delete_model, [ctx.own_models, *pickers, ctx.session], outputs, api_name="delete_model")
    export.click(export_model, [ctx.pickers["download"], ctx.session], [export_files, export_message],
                 api_name="export_model", concurrency_limit=1, concurrency_id="export")
    ctx.own_models.change(offer_download, [ctx.own_models, ctx.session], download, api_visibility="private",
                          show_progress="hidden")
    return {"listing": listing}
