"""The fine-tuning routine the CLI and the app both call.

`train` reads and splits the data, builds the starting model, runs one of the two
paths in `posture.fit` (cached features for a frozen backbone, else the full loop),
evaluates the best epoch on the validation set, and writes the checkpoint once,
atomically, after training finished normally.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from posture.checkpoints import ModelInfo, load_checkpoint, read_info, save_checkpoint
from posture.data import DatasetScan, UploadLimits, scan_dataset, stratified_split
from posture.errors import CheckpointError, DatasetError, TrainingCancelled
from posture.evaluate import EvalReport, evaluate_items
from posture.fit import EpochLoop, TrainEvent, fit_full, fit_head
from posture.models import build_model, freeze_backbone, reset_classifier
from posture.predict import Predictor

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train"]  # TrainEvent comes from posture.fit

_DEFAULT_SIZE = {"resnet14": 96, "resnet18": 224}  # resnet14 learned the angle at 96 px, not 128


@dataclass
class TrainConfig:
    """Everything that decides a training run; the CLI and the app both build one."""

    arch: str = "resnet14"
    init: str = "scratch"  # "imagenet", "scratch", a torchvision state dict, or a posture checkpoint
    freeze: bool | None = None  # None: frozen backbone when starting from pretrained weights
    epochs: int = 10
    lr: float | None = None  # None: a default for the arch and freeze choice
    batch_size: int = 32
    img_size: int | None = None  # None: 96 for resnet14, 224 for resnet18 (or the init checkpoint's)
    val_split: float = 0.2
    seed: int = 0
    patience: int = 5  # epochs without a better validation loss before stopping
    weight_decay: float = 1e-4
    augment: bool = True
    feature_views: int = 0  # frozen path: extra augmented views cached per training image
    cache_features: bool = True  # frozen path: train the head on cached features
    workers: int = 1  # image decoding processes beside training (0: decode in this process)
    precision: str = "auto"  # full training: "bf16" autocast, "fp32", or "auto" (bf16 where the CPU has it)
    storage_dtype: str = "float32"  # checkpoint weights: "float16" halves the file

    def resolved(self) -> "TrainConfig":
        """A copy with every None replaced by its default."""
        cfg = replace(self)
        if cfg.freeze is None:
            cfg.freeze = cfg.arch == "resnet18" and cfg.init != "scratch"
        if cfg.img_size is None:
            ckpt = _posture_checkpoint(cfg.init)
            cfg.img_size = read_info(ckpt).input_size if ckpt else _DEFAULT_SIZE.get(cfg.arch, 128)
        if cfg.lr is None:
            cfg.lr = 1e-2 if cfg.freeze else (3e-4 if cfg.init != "scratch" else 2e-3)
        if cfg.epochs < 1 or cfg.batch_size < 1 or not 0.0 < cfg.val_split < 1.0:
            raise ValueError("epochs and batch size must be >= 1 and the validation share in (0, 1)")
        return cfg


@dataclass
class TrainResult:
    """The best-epoch model, its metadata and how training went."""

    model: nn.Module | None
    info: ModelInfo | None
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    val_report: EvalReport | None = None
    cancelled: bool = False


def _posture_checkpoint(init: str) -> Path | None:
    path = Path(init)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        read_info(path)
    except CheckpointError:
        return None  # a plain safetensors state dict, handled as torchvision weights
    return path


def _initial_model(cfg: TrainConfig, class_names: list[str]) -> nn.Module:
    ckpt = _posture_checkpoint(cfg.init)
    if ckpt is None:
        weights = None if cfg.init == "scratch" else cfg.init
        return build_model(cfg.arch, len(class_names), weights=weights)
    model, info = load_checkpoint(ckpt)
    if info.arch != cfg.arch:
        raise CheckpointError(f"{ckpt} holds a {info.arch}, but training asks for {cfg.arch}")
    if info.class_names != class_names:
        reset_classifier(model, len(class_names))
    return model


def _split(scan: DatasetScan, cfg: TrainConfig) -> tuple[list, list]:
    if scan.has_splits and scan.val_files:
        index = {name: i for i, name in enumerate(scan.class_names)}
        train = [(p, index[c]) for c, ps in scan.files.items() for p in ps]
        val = [(p, index[c]) for c, ps in scan.val_files.items() for p in ps]
        return train, val
    return stratified_split(scan.files, cfg.val_split, cfg.seed)


def _class_weights(labels: list[int], k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1.0)), dtype=torch.float32)


def train(
    data: str | Path | DatasetScan,
    config: TrainConfig,
    out: str | Path | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    cancel: threading.Event | None = None,
    misclassified_dir: str | Path | None = None,
) -> TrainResult:
    """Train on a class-per-folder dataset; write the best model to `out` when given.

    Cancelling (setting `cancel`) stops within a batch; then nothing is written and
    the result holds the best model of the finished epochs, if any, unevaluated.
    `misclassified_dir` receives the Grad-CAM overlays of misclassified validation images
    (their report rows name them under "overlay").
    """
    cfg = config.resolved()
    emit = progress or (lambda event: None)
    scan = data if isinstance(data, DatasetScan) else scan_dataset(data, UploadLimits.local())
    train_items, val_items = _split(scan, cfg)
    if not train_items or not val_items:
        raise DatasetError("need at least one training and one validation image per class")
    names = list(scan.class_names)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the head's (and a scratch model's) initial weights
        model = _initial_model(cfg, names)
    freeze_backbone(model, bool(cfg.freeze))
    weights = _class_weights([c for _, c in train_items], len(names))
    params = [p for p in model.parameters() if p.requires_grad]
    loop = EpochLoop(cfg, len(train_items), params, progress, cancel)
    emit(TrainEvent("phase", epochs=cfg.epochs, message=f"training {cfg.arch} on {len(train_items)} images, "
                    f"validating on {len(val_items)}"))
    try:
        if cfg.freeze and cfg.cache_features:
            fit_head(model, cfg, train_items, val_items, weights, loop, emit)
        else:
            fit_full(model, cfg, train_items, val_items, weights, loop)
        cancelled = False
    except TrainingCancelled:
        cancelled = True
    history = loop.history
    if loop.best is None:
        return TrainResult(model=None, info=None, history=history, cancelled=cancelled)
    model.load_state_dict(loop.best)
    freeze_backbone(model, False)
    info = ModelInfo(arch=cfg.arch, class_names=names, input_size=int(cfg.img_size), init=cfg.init,
                     train_config=asdict(cfg), history=history, storage_dtype=cfg.storage_dtype)
    if cancelled:
        emit(TrainEvent("done", epochs=cfg.epochs, message="cancelled; kept the best finished epoch"))
        return TrainResult(model.eval(), info, history, cancelled=True)
    emit(TrainEvent("phase", epochs=cfg.epochs, message="evaluating the best epoch on the validation set"))
    report = evaluate_items(Predictor(copy.deepcopy(model), info), val_items, names,
                            misclassified_dir=Path(misclassified_dir) if misclassified_dir else None)
    info.metrics = {"val": report.metrics, "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1}
    checkpoint = save_checkpoint(out, model.eval(), info) if out is not None else None
    emit(TrainEvent("done", epochs=cfg.epochs, val_acc=report.metrics["accuracy"], message="done"))
    return TrainResult(model.eval(), info, history, checkpoint, report, cancelled=False)
