"""After training: probabilities that match how often the model is right, and a side-view flag that
also says no to pictures unlike anything it saw.

`calibrate_` temperature-scales the classifier on validation pictures; `fit_gate_` fits the
side-view flag's familiarity gate (`posture.gate`) on the training side views. Both change the
model in place and leave every verdict and Grad-CAM map as it was. `refit_gate` fits a saved
checkpoint's gate anew, on the training split its header records.
"""

from __future__ import annotations

import copy
import math
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from posture.backends import EXPORT_GUARD
from posture.checkpoints import ModelInfo, load_checkpoint, save_checkpoint
from posture.errors import DatasetError, UsageError
from posture.fit import extract_features
from posture.imagedata import LEGACY_CLOSEUP_LARGEST, RESTYLE_OPS, Augment, ImageDataset, restyle_image
from posture.models import PostureNet

__all__ = ["RestyledView", "calibrate_", "fit_gate_", "recorded_split", "refit_gate"]

KEPT_METRICS = ("val", "best_epoch", "cam_layers")  # what a refitted gate leaves valid (val is measured again)


def calibrate_(model: PostureNet, val_ds: ImageDataset, batch_size: int) -> float:
    """Temperature-scale the classifier on validation pictures (folded into its weights); returns T.

    Dividing the logits by one positive number keeps every verdict and every Grad-CAM map (up to
    scale) as it was; only the probabilities change, to match how often the model is right.
    """
    logits, labels = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(val_ds), batch_size):
            batch = [val_ds[i] for i in range(start, min(start + batch_size, len(val_ds)))]
            x = torch.stack([b[0] for b in batch])
            y = torch.stack([b[1]["label"] for b in batch])
            keep = y >= 0
            if keep.any():
                with EXPORT_GUARD.running():  # see posture.backends: no torch.export elsewhere mid-forward
                    logits.append(model(x)[keep])
                labels.append(y[keep])
    if not logits:
        return 1.0
    z, y = torch.cat(logits).float(), torch.cat(labels)
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    # On logits that separate the classes perfectly the optimum is T -> 0, and the line search can
    # step into NaN on the way there: keep the logits as they are rather than poison the weights.
    t = min(max(t, 0.05), 20.0) if math.isfinite(t) else 1.0
    with torch.no_grad():
        model.fc.weight /= t
        model.fc.bias /= t
    return t


MIN_GROUP = 20  # side views a style needs to get a group of its own in the gate
CLOSEUP_SEED = 7  # the gate's close-up views are the same on every fit
RESTYLE_SEED = 11  # and its restyled views


class RestyledView(ImageDataset):
    """Pictures each drawn otherwise by one restyle op (`posture.imagedata.restyle_image`), the
    ops taken in turn: picture i by `ops[i % len(ops)]` (by default the seven `RESTYLE_OPS`), the
    same on every fit."""

    def __init__(self, base: ImageDataset, ops: Sequence[str] = RESTYLE_OPS) -> None:
        super().__init__(base.items, base.size, base.mean, base.std)
        self.ops = tuple(ops)
        if base.squares is not None:
            self.preload(squares=base.squares)

    def op(self, index: int) -> str:
        return self.ops[index % len(self.ops)]

    def load_square(self, index: int) -> Image.Image:
        rng = np.random.default_rng([RESTYLE_SEED, index])
        return restyle_image(super().load_square(index), rng, self.op(index))


def fit_gate_(model: PostureNet, train_ds: ImageDataset, val_ds: ImageDataset, batch_size: int,
              workers: int = 0, device: torch.device | str | None = None,
              closeup: float | None = None, restyle: bool = False,
              restyle_ops: Sequence[str] = RESTYLE_OPS) -> dict[str, Any]:
    """Fit the side-view flag's familiarity gate (`posture.gate`) on the training side views' features,
    its threshold on the validation side views'; returns what was fitted (for the checkpoint).
    The features are computed on `device` (default: where the model is), the gate fitted on the CPU;
    the model ends where it started.

    When every training side view has a style (labels.csv's column) and each style has at least
    `MIN_GROUP` of them, each style is a group with its own means and covariance; otherwise one group.
    With `closeup` (a model trained with `--closeup`: its close-ups' largest box share), every side
    view with a head-and-neck box is also seen once as a close-up (`posture.imagedata.closeup_crop`),
    in its style's group, for the fit and for the threshold: the gate then knows the close-ups the
    model was trained on. With `restyle` (`--gate-restyle`), every side view is also
    seen once drawn otherwise (`RestyledView`, by `restyle_ops` in turn: the ops the model was
    trained with), each op a group of its own ("restyled-outline" ...): the gate then knows the
    restyled pictures too, whose looks no single style spans."""
    def side_views(ds: ImageDataset, close: bool) -> ImageDataset:
        keep = [i for i, it in enumerate(ds.items) if it.side_view and (not close or it.has_box)]
        view = ds.subset(keep)
        view.augment = replace(Augment.none(), closeup=1.0, closeup_largest=closeup) if close else None
        if close:
            view.seed, view.epoch = CLOSEUP_SEED, 0
        return view

    fit_on, held = [side_views(train_ds, False)], [side_views(val_ds, False)]
    if closeup is not None and any(it.has_box for it in fit_on[0].items) and any(it.has_box for it in held[0].items):
        fit_on.append(side_views(train_ds, True))
        held.append(side_views(val_ds, True))
    styles = [it.style for ds in fit_on for it in ds.items]
    if restyle:
        plain = fit_on[0]
        fit_on.append(RestyledView(plain, restyle_ops))
        held.append(RestyledView(held[0], restyle_ops))
        styles = [s or "unstyled" for s in styles] + [f"restyled-{fit_on[-1].op(i)}" for i in range(len(plain))]
    home = next(model.parameters()).device
    try:
        model.to(device or home)
        features = torch.cat([extract_features(model, ds, batch_size, workers=workers).cpu() for ds in fit_on])
        held_back = torch.cat([extract_features(model, ds, batch_size, workers=workers).cpu() for ds in held])
    finally:
        model.to(home)
    items = [it for ds in fit_on for it in ds.items]
    model.add_heads(["gate"])
    gate = model.heads["gate"]
    names = sorted(set(styles))
    grouped = len(names) > 1 and all(styles) and min(styles.count(n) for n in names) >= MIN_GROUP
    groups = torch.tensor([names.index(s) for s in styles]) if grouped else None
    gate.fit(features, torch.tensor([it.label for it in items]), held_back, groups=groups)
    return {"threshold": float(gate.threshold), "n_fit": len(items), "n_threshold": len(held_back),
            "groups": names if grouped else [], "rank": int(gate.components.shape[1]),
            "closeups": sum(len(ds) for ds in fit_on[1:] if not isinstance(ds, RestyledView)),
            "restyled": sum(len(ds) for ds in fit_on if isinstance(ds, RestyledView))}


def recorded_split(info: ModelInfo, data: str | Path, name: str | Path = "the model") -> tuple[Any, tuple[list, list]]:
    """The training config a checkpoint's header records, and `data` split into training and
    validation items as that training split it (`val_split`, `seed`, left-out styles)."""
    from posture.data import UploadLimits, scan_dataset
    from posture.train import TrainConfig, dataset_items  # train builds on this module

    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{"closeup_largest": LEGACY_CLOSEUP_LARGEST,  # what models from before the setting used
                         **{k: v for k, v in info.train_config.items() if k in known}})
    scan = scan_dataset(data, UploadLimits.local())
    if list(scan.class_names) != info.class_names:
        raise DatasetError(f"{data} has classes {list(scan.class_names)}; {name} knows {info.class_names}")
    return cfg, dataset_items(scan, cfg)


def refit_gate(checkpoint: str | Path, data: str | Path, out: str | Path,
               progress: Callable[[str], None] | None = None, restyle: bool | None = None) -> ModelInfo:
    """Fit the familiarity gate of `checkpoint` anew on `data`, split into training and validation
    pictures as its training recorded (`val_split`, `seed`, left-out styles), and write the model
    to `out`. Nothing else in the model changes. The validation metrics are measured again;
    metrics recorded under other names (`evaluate --record-as`) are dropped, since the side-view
    flag they measured has changed. `restyle`: fit on restyled views too (`fit_gate_`); None: as
    its training did (`gate_restyle`). The choice is recorded, so the next fit repeats it."""
    from posture.evaluate import evaluate_items
    from posture.predict import Predictor

    say = progress or (lambda message: None)
    model, info = load_checkpoint(checkpoint)
    if "side_view" not in model.heads:
        raise UsageError(f"{checkpoint} has no side-view head, so it has no gate to fit")
    cfg, (train_items, val_items) = recorded_split(info, data, checkpoint)
    if not any(it.side_view for it in train_items) or not any(it.side_view for it in val_items):
        raise DatasetError(f"{data} needs side views in both its training and its validation split")
    if "gate" in model.heads:
        del model.heads["gate"]
    closeup = cfg.closeup_largest if cfg.closeup > 0 else None
    restyle = cfg.gate_restyle if restyle is None else restyle
    also = (" and a close-up of each with a box" if closeup is not None else "") + (
        " and each restyled" if restyle else "")
    say(f"fitting the gate on {sum(it.side_view for it in train_items)} side views{also}")
    size = info.input_size
    info.train_config["gate"] = fit_gate_(model, ImageDataset(train_items, size), ImageDataset(val_items, size),
                                          cfg.batch_size, closeup=closeup, restyle=restyle,
                                          restyle_ops=cfg.restyle_ops)
    info.train_config["gate_restyle"] = restyle
    info.heads = model.head_names
    say(f"evaluating on the {len(val_items)} validation pictures")
    report = evaluate_items(Predictor(copy.deepcopy(model), info), val_items, info.class_names)
    info.metrics = {**{k: v for k, v in info.metrics.items() if k in KEPT_METRICS}, "val": report.metrics}
    save_checkpoint(out, model.eval(), info)
    return info
