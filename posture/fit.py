"""The epoch loop both training paths share, the multi-task loss, and the two paths.

- `fit_head`: frozen backbone; its pooled features are computed once (plus optional
  augmented views) and only the heads (classifier, angle, side view) train on them;
- `fit_full`: full fine-tuning or training from scratch over streamed (or preloaded)
  images, channels-last, under autocast where the device has mixed precision (bf16 on
  CPUs with native bf16; on GPUs bf16, or fp16 with gradient scaling).
Both train on the device the model is on; images are moved there batch by batch.
`EpochLoop` owns the optimiser, the one-cycle schedule, progress events, cooperative
cancel, early stopping on validation loss and the best epoch's weights.

The loss every head shares is in `posture.losses`.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from posture.backends import EXPORT_GUARD
from posture.errors import PostureError, TrainingCancelled
from posture.imagedata import Augment, ImageDataset, Item
from posture.losses import LossWeights, Targets, add_stats, epoch_row, multitask_loss
from posture.models import ModelOutput, PostureNet

__all__ = ["CAM_MAPS", "EpochLoop", "LossWeights", "ProgressFn", "TrainEvent", "extract_features", "fit_full", "fit_head"]


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
    metrics: dict[str, float] | None = None  # the epoch's full row (angle error, side-view accuracy, ...)


ProgressFn = Callable[[TrainEvent], None]


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
    model: PostureNet,
    dataset: ImageDataset,
    batch_size: int,
    cancel: threading.Event | None = None,
    workers: int = 0,
) -> torch.Tensor:
    """Pooled backbone features of every item, in order: (N, D)."""
    model.eval().to(memory_format=torch.channels_last)  # as in the plain loop: faster convolutions
    device = _device(model)
    out = []
    try:
        with torch.inference_mode():
            for x, _ in _loader(dataset, batch_size=batch_size, num_workers=workers):
                if cancel is not None and cancel.is_set():
                    raise TrainingCancelled("training was cancelled")
                x = x.to(device).contiguous(memory_format=torch.channels_last)
                with EXPORT_GUARD.running():  # no torch.export in another thread mid-forward (see posture.backends)
                    out.append(model.pool(model.forward_features(x)))
    finally:
        model.to(memory_format=torch.contiguous_format)
    return torch.cat(out)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _to(targets: Targets, device: torch.device) -> Targets:
    return {k: v.to(device) for k, v in targets.items()}


def one_cycle(opt: torch.optim.Optimizer, lr: float, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    """A one-cycle schedule warming up over the first fifth of `total_steps`.

    OneCycleLR divides by the warm-up's length in steps minus one, so a warm-up of exactly one
    step (five steps in all: five epochs of one batch, a small upload) would divide by zero;
    such a run warms up over a quarter instead.
    """
    pct_start = 0.2 if round(0.2 * total_steps, 9) != 1 else 0.25
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total_steps, pct_start=pct_start)


class EpochLoop:
    """The epoch loop shared by both paths: each supplies its batches, `step` and `validate`."""

    def __init__(self, cfg: Any, n_train: int, params: Iterable[torch.nn.Parameter],
                 progress: ProgressFn | None, cancel: threading.Event | None) -> None:
        self.cfg, self.n_train = cfg, n_train
        self.progress: ProgressFn = progress or (lambda event: None)
        self.cancel = cancel or threading.Event()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, torch.Tensor] | None = None  # state dict of the best epoch so far
        self.steps = -(-n_train // cfg.batch_size)
        self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.sched = one_cycle(self.opt, cfg.lr, cfg.epochs * self.steps)
        self.scaler = torch.amp.GradScaler(enabled=False)  # enabled for float16 autocast (see fit_full)

    def run(
        self,
        model: PostureNet,
        epoch_batches: Callable[[int, list[list[int]]], Iterable[Any]],
        step: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
        validate: Callable[[], dict[str, float]],
    ) -> None:
        """Train until the last epoch or early stop; `history` and `best` survive a cancel.

        `epoch_batches(epoch, index_batches)` yields one payload per batch of indices,
        `step(payload)` returns (loss, sums for metrics) and `validate()` the validation row.
        """
        gen = torch.Generator().manual_seed(self.cfg.seed)
        history, best_loss, stale, start = self.history, math.inf, 0, time.perf_counter()
        total = self.cfg.epochs * self.steps
        for epoch in range(1, self.cfg.epochs + 1):
            loss_sum, seen, sums = 0.0, 0, {}
            index_batches = _batches(self.n_train, self.cfg.batch_size, gen)
            for i, payload in enumerate(epoch_batches(epoch, index_batches), start=1):
                if self.cancel.is_set():
                    raise TrainingCancelled("training was cancelled")
                # A whole step holds EXPORT_GUARD shared: an export elsewhere waits for it, and it for one.
                with EXPORT_GUARD.running():
                    self.opt.zero_grad(set_to_none=True)
                    loss, stats = step(payload)
                    self.scaler.scale(loss).backward()  # disabled, a plain backward and optimiser step
                    self.scaler.step(self.opt)
                    self.scaler.update()
                    self.sched.step()
                    loss_value = float(loss.detach())
                n = len(index_batches[i - 1])
                loss_sum, seen = loss_sum + loss_value * n, seen + n
                add_stats(sums, stats)
                done = (epoch - 1) * self.steps + i
                eta = (time.perf_counter() - start) / done * (total - done)
                acc = sums.get("correct", 0.0) / max(sums.get("n", 0.0), 1.0)
                self.progress(TrainEvent("step", epoch, self.cfg.epochs, i, self.steps, loss_sum / seen, acc, eta_s=eta))
            with EXPORT_GUARD.running():
                val_row = validate()
                row = {"epoch": epoch, **epoch_row("train", sums, loss_sum / max(seen, 1)), **val_row,
                       "lr": self.sched.get_last_lr()[0]}
                history.append(row)
                if row["val_loss"] < best_loss - 1e-4:
                    self.best, best_loss, stale = copy.deepcopy(model.state_dict()), row["val_loss"], 0
                else:
                    stale += 1
            done = epoch * self.steps
            self.progress(TrainEvent("epoch", epoch, self.cfg.epochs, self.steps, self.steps,
                                     row["train_loss"], row["train_acc"], row["val_loss"], row["val_acc"],
                                     eta_s=(time.perf_counter() - start) / done * (total - done), metrics=row))
            if stale >= self.cfg.patience:
                self.progress(TrainEvent("phase", epoch, self.cfg.epochs,
                                         message=f"early stop: no better validation loss for {stale} epochs"))
                break


CAM_MAPS = ("relu", "softplus")  # how the box term sees Grad-CAM's map (see `_forward`)


def _forward(model: PostureNet, x: torch.Tensor, targets: Targets, cam_layer: str | None,
             cam_map: str = "relu") -> tuple[ModelOutput, torch.Tensor | None]:
    """Outputs, and the true class's Grad-CAM at `cam_layer` when the box term needs it (None: off).

    The map is each cell's evidence for the class (Grad-CAM's weighted sum of the layer's
    channels, times the number of cells: at the last stage, that cell's share of the logit),
    through `cam_map`: "relu", as Grad-CAM shows it, or "softplus", which keeps a gradient where
    the evidence is negative, so a map with no positive cell can still be moved into the box.

    At the last stage Grad-CAM is the class activation map (the classifier's weights times the
    features) and costs nothing extra. At an earlier stage it needs the gradient of the class
    score at that stage, kept in the graph (`create_graph`) so the box term can train through it.
    """
    if cam_layer is None:
        out = model.forward_outputs(x)
        return out, None
    label = targets["label"].clamp_min(0)
    if cam_layer == model.stage_names[-1]:
        features = model.forward_features(x)
        out = model.outputs_from_features(features)
        # Grad-CAM's channel weights are the classifier's (the pooling's 1/cells cancels the map's size)
        evidence = torch.einsum("bchw,bc->bhw", features.float(), model.fc.weight[label].float())
    else:
        early = model.forward_features(x, upto=cam_layer)
        out = model.outputs_from_features(model.forward_after(early, cam_layer))
        score = out.logits.gather(1, label[:, None]).sum()
        grads = torch.autograd.grad(score, early, create_graph=True)[0]  # (B, C, h, w)
        h, w = early.shape[-2:]
        evidence = (grads.mean((2, 3), keepdim=True) * early).sum(1).float() * (h * w)
    return out, (F.softplus(evidence) if cam_map == "softplus" else F.relu(evidence))


def fit_full(model: PostureNet, cfg: Any, train_ds: ImageDataset, val_ds: ImageDataset,
             class_weights: torch.Tensor, loop: EpochLoop, amp: torch.dtype | None) -> None:
    """Train the whole model (or all but a frozen backbone) on images, one batch at a time,
    under autocast to `amp` (None: fp32)."""
    model.to(memory_format=torch.channels_last)  # about 2x faster convolutions on CPU
    device = _device(model)
    if amp == torch.float16:  # float16 gradients underflow without scaling
        loop.scaler = torch.amp.GradScaler(device.type)
    weights = cfg.loss_weights
    cam_layer = (cfg.cam_layer or model.stage_names[-1]) if weights.cam > 0 else None

    def epoch_batches(epoch: int, index_batches: list[list[int]]) -> Iterator[Any]:
        train_ds.epoch = epoch
        # One worker decodes the next batch while this process trains on the current one.
        return _loader(train_ds, batch_sampler=index_batches, num_workers=cfg.workers)

    def step(batch: tuple[torch.Tensor, Targets]) -> tuple[torch.Tensor, dict[str, float]]:
        model.train(not cfg.freeze)  # a frozen backbone keeps its BatchNorm statistics
        x, targets = batch  # (B, 3, S, S), targets
        x, targets = x.to(device).contiguous(memory_format=torch.channels_last), _to(targets, device)
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            out, cam = _forward(model, x, targets, cam_layer, cfg.cam_map)
        return multitask_loss(out, targets, class_weights, weights, cam)

    def validate() -> dict[str, float]:
        model.eval()
        loss_sum, seen, sums = 0.0, 0, {}
        with torch.inference_mode():
            for x, targets in _loader(val_ds, batch_size=cfg.batch_size, num_workers=cfg.workers):
                # the task losses alone: the box term shapes training, the best epoch is the best at the task
                x, targets = x.to(device).contiguous(memory_format=torch.channels_last), _to(targets, device)
                out, _ = _forward(model, x, targets, None)
                loss, stats = multitask_loss(out, targets, class_weights, weights)
                loss_sum, seen = loss_sum + float(loss) * len(x), seen + len(x)
                add_stats(sums, stats)
        return epoch_row("val", sums, loss_sum / max(seen, 1))

    loop.run(model, epoch_batches, step, validate)
    model.to(memory_format=torch.contiguous_format)


def _stack_targets(items: list[Item]) -> Targets:
    return {
        "label": torch.tensor([it.label for it in items], dtype=torch.long),
        "cva_deg": torch.tensor([it.cva_deg for it in items], dtype=torch.float32),
        "side_view": torch.tensor([float(it.side_view) for it in items], dtype=torch.float32),
        "box": torch.full((len(items), 4), float("nan")),  # the box term needs feature maps, not pooled features
    }


def fit_head(model: PostureNet, cfg: Any, train_ds: ImageDataset, val_ds: ImageDataset,
             class_weights: torch.Tensor, loop: EpochLoop, progress: ProgressFn) -> None:
    """Train the heads alone on pooled features of a frozen backbone, computed once."""
    views = [Augment.none()] + [cfg.augmentation() for _ in range(cfg.feature_views if cfg.augment else 0)]
    progress(TrainEvent("phase", message=f"computing backbone features ({len(views)} view(s))"))
    train_feats = []
    for v, aug in enumerate(views):
        view_ds = ImageDataset(train_ds.items, train_ds.size, train_ds.mean, train_ds.std, augment=aug,
                               seed=cfg.seed + v)
        if train_ds.squares is not None:
            view_ds.preload(squares=train_ds.squares)
        train_feats.append(extract_features(model, view_ds, cfg.batch_size, loop.cancel, cfg.workers))  # (N, D)
    val_feats = extract_features(model, val_ds, cfg.batch_size, loop.cancel, cfg.workers)
    device = _device(model)
    y_train, y_val = _to(_stack_targets(train_ds.items), device), _to(_stack_targets(val_ds.items), device)
    weights = cfg.loss_weights

    def heads(pooled: torch.Tensor) -> ModelOutput:
        return model.outputs_from_features(pooled[:, :, None, None])  # pooling a 1x1 map is the identity

    def epoch_batches(epoch: int, index_batches: list[list[int]]) -> Iterator[Any]:
        view = train_feats[(epoch - 1) % len(train_feats)]  # (N, D)
        return ((view[idx], {k: v[idx] for k, v in y_train.items()}) for idx in index_batches)

    def step(batch: tuple[torch.Tensor, Targets]) -> tuple[torch.Tensor, dict[str, float]]:
        x, targets = batch
        return multitask_loss(heads(x), targets, class_weights, weights)

    def validate() -> dict[str, float]:
        with torch.inference_mode():
            loss, stats = multitask_loss(heads(val_feats), y_val, class_weights, weights)
        return epoch_row("val", stats, float(loss))

    loop.run(model, epoch_batches, step, validate)
