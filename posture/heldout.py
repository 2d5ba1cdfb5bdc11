"""The held-out-style protocol: how a training recipe copes with pictures unlike its training data.

For each group of synthetic styles, one model is trained with every picture of those styles left
out, then evaluated on a test set: on the held-out styles (never seen) and on the styles it did see.
The table of those figures is the style matrix. It estimates how the recipe fares on pictures drawn
differently from anything it trained on, which is what real photos are to a model trained on
renders.

Styles that share a trait are held out together (`STYLE_GROUPS`): flat and shaded pictures have
the same shapes and colours, line art and silhouettes show shapes without colours, photo-like and
webcam pictures share textures and camera effects. Leaving out one style of such a pair while
training on its sibling would flatter the result; leaving out both is the harder test.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from posture.evaluate import evaluate_items, folder_items, summarise
from posture.fit import ProgressFn, TrainEvent
from posture.predict import Predictor
from posture.train import TrainConfig, train

__all__ = ["STYLE_GROUPS", "heldout_matrix", "matrix_markdown", "parse_groups"]

STYLE_GROUPS: tuple[tuple[str, ...], ...] = (("flat", "shaded"), ("lineart", "silhouette"), ("photo", "webcam"),
                                             ("lowres",))


def parse_groups(text: str | None) -> tuple[tuple[str, ...], ...]:
    """"auto" (STYLE_GROUPS), "each" (every style alone) or "a+b,c" -> groups of style names."""
    from posture.synth.cli import parse_styles

    text = (text or "auto").strip().lower()
    if text == "auto":
        return STYLE_GROUPS
    if text == "each":
        return tuple((s,) for s in parse_styles("all"))
    return tuple(parse_styles(part.replace("+", ",")) for part in text.split(","))


def heldout_matrix(
    data: str | Path,
    test: str | Path,
    config: TrainConfig,
    out_dir: str | Path,
    groups: Sequence[Sequence[str]] = STYLE_GROUPS,
    progress: ProgressFn | None = None,
    on_group: Callable[[str, dict[str, Any]], None] | None = None,
    mirror: bool = True,
) -> dict[str, Any]:
    """Train without each group of styles in turn, evaluate each model on `test`; write and return
    the matrix (keyed "a+b" per group).

    Writes `without-<a+b>.safetensors` and `matrix.json` into `out_dir`; a group whose model is
    already there (from an interrupted run) is evaluated, not trained again. `mirror`: each answer
    averaged with the mirror image's, as `Predictor` serves it (off: the picture alone).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items, class_names = folder_items(test)
    matrix: dict[str, Any] = {"config": {k: v for k, v in asdict(config.resolved()).items() if k != "loss_weights"},
                              "loss_weights": asdict(config.loss_weights), "mirror": mirror, "styles": {}}
    present = {it.style for it in items}
    for group in (g for g in groups if present & set(g)):  # a group the test set lacks cannot be scored
        name = "+".join(group)
        path = out / f"without-{name}.safetensors"
        if not path.is_file():
            if progress:
                progress(TrainEvent("phase", message=f"training without {name}"))
            train(data, replace(config, exclude_styles=(*config.exclude_styles, *group)), out=path, progress=progress)
        predictor = Predictor.from_checkpoint(path, mirror=mirror)
        report = evaluate_items(predictor, items, class_names)
        held = [r for r in report.rows if r["style"] in group]
        seen = [r for r in report.rows if r["style"] and r["style"] not in group]
        plain = [r for r in report.rows if not r["style"]]  # blank, noise, landscapes...: no style
        entry = {"held_out": summarise(held, predictor.class_names), "in_style": summarise(seen, predictor.class_names),
                 "held_out_by_style": {s: summarise([r for r in held if r["style"] == s], predictor.class_names)
                                       for s in group},
                 "unstyled_without_flagged": summarise(plain, predictor.class_names).get("side_view")}
        matrix["styles"][name] = entry
        (out / "matrix.json").write_text(json.dumps(matrix, indent=2))
        if on_group:
            on_group(name, entry)
    return matrix


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def matrix_markdown(matrix: dict[str, Any]) -> str:
    """The style matrix as a Markdown table: one row per held-out style."""
    lines = ["| held-out styles | accuracy (held out) | accuracy (seen styles) | ECE (held out) | angle MAE held out / seen "
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
