"""Batch tab: many photos at once; a table as they are scored, a CSV and a zip of overlays to download.

Scoring streams through `posture.batch`: each photo's row and overlay are written to the
session folder as soon as they exist, so memory does not grow with the number of photos.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from posture.batch import BatchWriter, score_files
from webapp.context import AppContext
from webapp.errors import ask, visitor_errors
from webapp.render import NO_SIDE_VIEW, pretty
from webapp.session import Session

__all__ = ["build"]

TABLE_EVERY = 8  # rows between table refreshes while scoring


def _table(rows: list[list], class_names: list[str]) -> pd.DataFrame:
    columns = ["file", "verdict", *[f"p({pretty(c)})" for c in class_names], "CVA (degrees)", "side view"]
    return pd.DataFrame(rows, columns=columns)


def _table_row(row, class_names: list[str]) -> list:
    if row.error:
        verdict = f"error: {row.error}"
    elif row.side_view is False:
        verdict = NO_SIDE_VIEW
    else:
        verdict = pretty(row.label)
    probs = [round(row.probabilities[c], 3) if c in row.probabilities else None for c in class_names]
    cva = None if row.cva_deg is None else round(row.cva_deg, 1)
    side = "" if row.side_view is None else ("yes" if row.side_view else "no")
    return [row.file, verdict, *probs, cva, side]


def build(ctx: AppContext) -> dict[str, Any]:
    """Lay out the Batch tab and wire it; returns its model picker."""
    gr.Markdown("Score many photos at once: a row per photo (verdict, probabilities, CVA estimate and "
                "side-view flag where the model gives them), a CSV of the table and a zip of the Grad-CAM overlays.")
    with gr.Row(equal_height=False):
        files = gr.File(file_count="multiple", file_types=["image"], label="Photos", height=160,
                        elem_id="batch-files")
        with gr.Column():
            model = gr.Dropdown(ctx.models.choices(Session()), value=ctx.models.default(), label="Model",
                                elem_id="batch-model")
            run = gr.Button("Score all", variant="primary", elem_id="batch-run")
    summary = gr.Markdown(elem_id="batch-summary")
    table = gr.Dataframe(label="Results", interactive=False, max_height=480, elem_id="batch-table")
    with gr.Row():
        csv_file = gr.DownloadButton("Download the table (.csv)", visible=False, elem_id="batch-csv")
        zip_file = gr.DownloadButton("Download the overlays (.zip)", visible=False, elem_id="batch-zip")

    @visitor_errors
    def score(paths: list[str] | None, model_name: str, session: Session, request: gr.Request,
              progress=gr.Progress()):
        """Score every photo, streaming the table; the CSV and overlay zip are offered at the end."""
        if not paths:
            raise ask("Add some photos first (several at once: select them all in the file picker).")
        limit = ctx.settings.limits.max_files
        if len(paths) > limit:
            raise ask(f"{len(paths)} photos is more than the {limit} allowed at once (POSTURE_MAX_UPLOAD_FILES).")
        predictor = ctx.models.predictor(model_name, session)
        names = [Path(p).name for p in paths]
        folder = session.new_path("batch")
        folder.mkdir(parents=True)
        session.workdir(request)
        classes = predictor.class_names
        hidden = gr.DownloadButton(visible=False)
        rows: list[list] = []
        writer = BatchWriter(classes, csv_path=folder / "posture-batch.csv", zip_path=folder / "overlays.zip",
                             overlay_format="jpeg")
        with writer:
            scored = score_files(predictor, paths, names=names, explain=True, batch_size=8)
            for i, item in enumerate(scored, start=1):
                rows.append(_table_row(writer.add(item), classes))
                progress((i, len(paths)), desc="scoring", unit="photos")
                if i % TABLE_EVERY == 0 and i < len(paths):
                    yield f"Scored {i} of {len(paths)}…", _table(rows, classes), hidden, hidden
        failed = [r[0] for r in rows if str(r[1]).startswith("error")]
        text = f"Scored **{writer.scored} of {len(paths)}** photos with `{model_name}`."
        if failed:
            text += f" Not scored: {', '.join(failed[:10])}{' …' if len(failed) > 10 else ''} (reasons in the table)."
        yield (text, _table(rows, classes), gr.DownloadButton(value=str(writer.csv_path), visible=True),
               gr.DownloadButton(value=str(writer.zip_path), visible=writer.scored > 0))

    run.click(score, [files, model, ctx.session], [summary, table, csv_file, zip_file], api_name="batch",
              show_progress_on=[summary])
    return {"model": model}
