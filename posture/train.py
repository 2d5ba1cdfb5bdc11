"""The fine-tuning routine the CLI and the app both call.

Two paths share one epoch loop (progress events, cooperative cancel, early
stopping on validation loss, best-epoch weights):
- frozen backbone: the backbone's pooled features are computed once (plus
  optional augmented views) and only the head is trained on them;
- full fine-tuning or training from scratch: the ordinary loop over images
  streamed from disk.
The checkpoint is written once, atomically, after training finished normally.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from posture.checkpoints import ModelInfo, load_checkpoint, read_info, save_checkpoint
from posture.data import DatasetScan, UploadLimits, scan_dataset, stratified_split
from posture.errors import CheckpointError, DatasetError, TrainingCancelled
from posture.evaluate import EvalReport, evaluate_items
from posture.imagedata import Augment, ImageDataset
from posture.models import build_model, classifier, freeze_backbone, pooled_features, reset_classifier
from posture.predict import Predictor
from posture.serving import resolve_precision

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "train"]

_DEFAULT_SIZE = {"resnet14": 128, "resnet18": 224}


@dataclass
class TrainConfig:
    """Everything that decides a training run; the CLI and the app both build one."""

    arch: str = "resnet14"
    init: str = "scratch"  # "imagenet", "scratch", a torchvision state dict, or a posture checkpoint
    freeze: bool | None = None  # None: frozen backbone when starting from pretrained weights
    epochs: int = 10
    lr: float | None = None  # None: a default for the arch and freeze choice
    batch_size: int = 32
    img_size: int | None = None  # None: 128 for resnet14, 224 for resnet18 (or the init checkpoint's)
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
class TrainEvent:
    """A progress report: a phase change, a finished step, an epoch, or the end."""

    kind: str  # "phase" | "step" | "epoch" | "done"
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    loss: float | None = None
    acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    eta_s: float | None = None
    message: str = ""


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


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def extract_features(
    model: nn.Module,
    dataset: ImageDataset,
    batch_size: int,
    cancel: threading.Event | None = None,
    workers: int = 0,
) -> torch.Tensor:
    """Pooled backbone features of every item, in order: (N, D)."""
    model.eval().to(memory_format=torch.channels_last)  # as in the plain loop: faster convolutions
    out = []
    try:
        with torch.inference_mode():
            for x, _ in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled("training was cancelled")
                out.append(pooled_features(model, x.contiguous(memory_format=torch.channels_last)))
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


class _Loop:
    """The epoch loop shared by both paths: `step(indices)` and `validate()` are supplied."""

    def __init__(self, cfg, n_train, params, progress, cancel) -> None:
        self.cfg, self.n_train = cfg, n_train
        self.progress = progress or (lambda event: None)
        self.cancel = cancel or threading.Event()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, torch.Tensor] | None = None  # state dict of the best epoch so far
        self.steps = -(-n_train // cfg.batch_size)
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.OneCycleLR(
            self.opt, max_lr=cfg.lr, total_steps=cfg.epochs * self.steps, pct_start=0.2
        )

    def run(self, model, epoch_batches, step, validate) -> None:
        """Train until the last epoch or early stop; `history` and `best` survive a cancel.

        `epoch_batches(epoch, index_batches)` yields one payload per batch of indices,
        and `step(payload)` returns (mean loss, number correct, batch size).
        """
        gen = torch.Generator().manual_seed(self.cfg.seed)
        history, best_loss, stale, start = self.history, float("inf"), 0, time.perf_counter()
        total = self.cfg.epochs * self.steps
        for epoch in range(1, self.cfg.epochs + 1):
            loss_sum = correct = seen = 0.0
            index_batches = _batches(self.n_train, self.cfg.batch_size, gen)
            for i, payload in enumerate(epoch_batches(epoch, index_batches), start=1):
                if self.cancel.is_set():
                    raise TrainingCancelled("training was cancelled")
                self.opt.zero_grad(set_to_none=True)
                loss, n_correct, n = step(payload)
                loss.backward()
                self.opt.step()
                self.sched.step()
                loss_sum += float(loss.detach()) * n
                correct, seen = correct + n_correct, seen + n
                done = (epoch - 1) * self.steps + i
                eta = (time.perf_counter() - start) / done * (total - done)
                self.progress(TrainEvent("step", epoch, self.cfg.epochs, i, self.steps,
                                         loss_sum / seen, correct / seen, eta_s=eta))
            val_loss, val_acc = validate()
            row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                   "val_loss": val_loss, "val_acc": val_acc, "lr": self.sched.get_last_lr()[0]}
            history.append(row)
            if val_loss < best_loss - 1e-4:
                self.best, best_loss, stale = copy.deepcopy(model.state_dict()), val_loss, 0
            else:
                stale += 1
            done = epoch * self.steps
            self.progress(TrainEvent("epoch", epoch, self.cfg.epochs, self.steps, self.steps,
                                     row["train_loss"], row["train_acc"], val_loss, val_acc,
                                     eta_s=(time.perf_counter() - start) / done * (total - done)))
            if stale >= self.cfg.patience:
                self.progress(TrainEvent("phase", epoch, self.cfg.epochs,
                                         message=f"early stop: no better validation loss for {stale} epochs"))
                break


def _fit_full(model, cfg, train_items, val_items, weights, loop: _Loop) -> None:
    aug = Augment() if cfg.augment else Augment.none()
    train_ds = ImageDataset(train_items, cfg.img_size, augment=aug, seed=cfg.seed)
    val_ds = ImageDataset(val_items, cfg.img_size)
    model.to(memory_format=torch.channels_last)  # about 2x faster convolutions on CPU

    def epoch_batches(epoch: int, index_batches: list[list[int]]):
        train_ds.epoch = epoch
        # One worker decodes the next batch while this process trains on the current one.
        return DataLoader(train_ds, batch_sampler=index_batches, num_workers=cfg.workers)

    # bf16 autocast roughly halves step time on CPUs with native bf16; weights stay fp32.
    bf16 = not cfg.freeze and resolve_precision(cfg.precision) == "bf16"

    def step(batch):
        model.train(not cfg.freeze)  # a frozen backbone keeps its BatchNorm statistics
        x, y = batch  # (B, 3, S, S), (B,)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x.contiguous(memory_format=torch.channels_last)).float()
        return F.cross_entropy(logits, y, weight=weights), int((logits.argmax(1) == y).sum()), len(y)

    def validate() -> tuple[float, float]:
        model.eval()
        loss = correct = 0.0
        with torch.inference_mode():
            for x, y in DataLoader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers):
                logits = model(x.contiguous(memory_format=torch.channels_last))
                loss += float(F.cross_entropy(logits, y, weight=weights, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
        return loss / len(val_ds), correct / len(val_ds)

    loop.run(model, epoch_batches, step, validate)
    model.to(memory_format=torch.contiguous_format)


def _fit_head(model, cfg, train_items, val_items, weights, loop: _Loop, progress) -> None:
    views = [Augment.none()] + [Augment() for _ in range(cfg.feature_views if cfg.augment else 0)]
    progress(TrainEvent("phase", message=f"computing backbone features ({len(views)} view(s))"))
    train_feats = [
        extract_features(model, ImageDataset(train_items, cfg.img_size, augment=a, seed=cfg.seed + v),
                         cfg.batch_size, loop.cancel, cfg.workers)
        for v, a in enumerate(views)
    ]  # each (N, D)
    val_feats = extract_features(model, ImageDataset(val_items, cfg.img_size), cfg.batch_size, loop.cancel,
                                 cfg.workers)
    y_train = torch.tensor([c for _, c in train_items])
    y_val = torch.tensor([c for _, c in val_items])
    head = classifier(model)

    def epoch_batches(epoch: int, index_batches: list[list[int]]):
        view = train_feats[(epoch - 1) % len(train_feats)]  # (N, D)
        return ((view[idx], y_train[idx]) for idx in index_batches)

    def step(batch):
        x, y = batch
        logits = head(x)
        return F.cross_entropy(logits, y, weight=weights), int((logits.argmax(1) == y).sum()), len(y)

    def validate() -> tuple[float, float]:
        with torch.inference_mode():
            logits = head(val_feats)
        loss = float(F.cross_entropy(logits, y_val, weight=weights))
        return loss, float((logits.argmax(1) == y_val).float().mean())

    loop.run(model, epoch_batches, step, validate)


def train(
    data: str | Path | DatasetScan,
    config: TrainConfig,
    out: str | Path | None = None,
    progress: Callable[[TrainEvent], None] | None = None,
    cancel: threading.Event | None = None,
) -> TrainResult:
    """Train on a class-per-folder dataset; write the best model to `out` when given.

    Cancelling (setting `cancel`) stops within a batch; then nothing is written and
    the result holds the best model of the finished epochs, if any, unevaluated.
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
    loop = _Loop(cfg, len(train_items), params, progress, cancel)
    emit(TrainEvent("phase", epochs=cfg.epochs, message=f"training {cfg.arch} on {len(train_items)} images, "
                    f"validating on {len(val_items)}"))
    try:
        if cfg.freeze and cfg.cache_features:
            _fit_head(model, cfg, train_items, val_items, weights, loop, emit)
        else:
            _fit_full(model, cfg, train_items, val_items, weights, loop)
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
    report = evaluate_items(Predictor(copy.deepcopy(model), info), val_items, names)
    info.metrics = {"val": report.metrics, "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1}
    checkpoint = save_checkpoint(out, model.eval(), info) if out is not None else None
    emit(TrainEvent("done", epochs=cfg.epochs, val_acc=report.metrics["accuracy"], message="done"))
    return TrainResult(model.eval(), info, history, checkpoint, report, cancelled=False)
