"""The epoch loop both training paths share, and the two paths.

- `fit_head`: frozen backbone; its pooled features are computed once (plus optional
  augmented views) and only the head is trained on them;
- `fit_full`: full fine-tuning or training from scratch over images streamed from disk,
  channels-last, under bf16 autocast where the CPU has it.
`EpochLoop` owns the optimiser, the one-cycle schedule, progress events, cooperative
cancel, early stopping on validation loss and the best epoch's weights.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from posture.errors import PostureError, TrainingCancelled
from posture.imagedata import Augment, ImageDataset
from posture.serving import resolve_precision

__all__ = ["EpochLoop", "TrainEvent", "extract_features", "fit_full", "fit_head"]


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


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[list[int]]:
    perm = torch.randperm(n, generator=gen).tolist()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def _loader(*args: Any, **kwargs: Any) -> Iterator[Any]:
    """A DataLoader whose workers' library errors keep their own message.

    A worker process re-raises an error as "Caught ImageError in DataLoader worker process 0.
    Original Traceback ...", with server paths; users should read what went wrong instead.
    """
    try:
        yield from DataLoader(*args, **kwargs)
    except PostureError as exc:
        text = str(exc)
        raised_as = f"{type(exc).__module__}.{type(exc).__qualname__}: "
        if "Original Traceback" not in text or raised_as not in text:
            raise
        # The error's own text follows the last "module.ErrorName: " of the worker's traceback.
        raise type(exc)(text.rsplit(raised_as, 1)[1].strip()) from None


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
            for x, _ in _loader(dataset, batch_size=batch_size, num_workers=workers):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled("training was cancelled")
                out.append(model.pool(model.forward_features(x.contiguous(memory_format=torch.channels_last))))
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


class EpochLoop:
    """The epoch loop shared by both paths: each supplies its batches, `step` and `validate`."""

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


def fit_full(model, cfg, train_items, val_items, weights, loop: EpochLoop) -> None:
    aug = Augment() if cfg.augment else Augment.none()
    train_ds = ImageDataset(train_items, cfg.img_size, augment=aug, seed=cfg.seed)
    val_ds = ImageDataset(val_items, cfg.img_size)
    model.to(memory_format=torch.channels_last)  # about 2x faster convolutions on CPU

    def epoch_batches(epoch: int, index_batches: list[list[int]]):
        train_ds.epoch = epoch
        # One worker decodes the next batch while this process trains on the current one.
        return _loader(train_ds, batch_sampler=index_batches, num_workers=cfg.workers)

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
            for x, y in _loader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers):
                logits = model(x.contiguous(memory_format=torch.channels_last))
                loss += float(F.cross_entropy(logits, y, weight=weights, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
        return loss / len(val_ds), correct / len(val_ds)

    loop.run(model, epoch_batches, step, validate)
    model.to(memory_format=torch.contiguous_format)


def fit_head(model, cfg, train_items, val_items, weights, loop: EpochLoop, progress) -> None:
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
    head = model.fc

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
