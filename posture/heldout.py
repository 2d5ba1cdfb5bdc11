"""The held-out-style protocol: how a training recipe copes with pictures unlike its training data.

For each synthetic style, one model is trained with every picture of that style left out, then
evaluated on a test set: on the held-out style (never seen) and on the styles it did see. The
table of those figures is the style matrix. It estimates how the recipe fares on pictures drawn
differently from anything it trained on, which is what real photos are to a model trained on
renders.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from posture.evaluate import evaluate_items, folder_items, summarise
from posture.fit import ProgressFn, TrainEvent
from posture.predict import Predictor
from posture.train import TrainConfig, train

__all__ = ["heldout_matrix", "matrix_markdown"]


def heldout_matrix(
    data: str | Path,
    test: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    styles: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
    on_style: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train without each style in turn, evaluate each model on `test`; write and return the matrix.

    Writes `without-<style>.safetensors` and `matrix.json` into `out_dir`. `styles` defaults to
    every style the test set's labels.csv records.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, class_names = folder_items(test)
    known = sorted({it.style for it in items if it.style})
    styles = list(styles or known)
    matrix: dict[str, Any] = {"config": {"arch": config.arch, "epochs": config.epochs, "img_size": config.img_size},
                              "styles": {}}
    for style in styles:
        if progress:
            progress(TrainEvent("phase", message=f"training without {style}"))
        path = out / f"without-{style}.safetensors"
        train(data, replace(config, exclude_styles=(*config.exclude_styles, style)), out=path, progress=progress)
        predictor = Predictor.from_checkpoint(path)
        report = evaluate_items(predictor, items, class_names)
        held = [r for r in report.rows if r["style"] == style]
        seen = [r for r in report.rows if r["style"] and r["style"] != style]
        plain = [r for r in report.rows if not r["style"]]  # blank, noise, landscapes...: no style
        entry = {"held_out": summarise(held, predictor.class_names), "in_style": summarise(seen, predictor.class_names),
                 "unstyled_without_flagged": summarise(plain, predictor.class_names).get("side_view")}
        matrix["styles"][style] = entry
        (out / "matrix.json").write_text(json.dumps(matrix, indent=2))
        if on_style:
            on_style(style, entry)
    return matrix


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def matrix_markdown(matrix: dict[str, Any]) -> str:
    """The style matrix as a Markdown table: one row per held-out style."""
    lines = ["| held-out style | accuracy (held out) | accuracy (seen styles) | ECE (held out) | angle MAE held out / seen "
             "| side views flagged (held out) | no side view caught (held out) | Grad-CAM in box / pointing (held out) |",
             "|---|---|---|---|---|---|---|---|"]
    for style, e in matrix["styles"].items():
        held, seen = e["held_out"], e["in_style"]
        side = held.get("side_view") or {}
        mae = (f"{held['cva_mae']:.1f} / {seen['cva_mae']:.1f} deg" if "cva_mae" in held and "cva_mae" in seen else "-")
        cam = (f"{held['cam_mass_in_box']:.2f} / {held['pointing_game']:.2f}" if "cam_mass_in_box" in held else "-")
        lines.append(f"| {style} | {_pct(held.get('accuracy'))} | {_pct(seen.get('accuracy'))} | "
                     f"{held.get('ece', float('nan')):.3f} | {mae} | {_pct(side.get('side_views_flagged'))} | "
                     f"{_pct(side.get('without_flagged'))} | {cam} |")
    return "\n".join(lines)
