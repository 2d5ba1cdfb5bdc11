"""The fine-tuning routine the CLI and the app both call.

`train` reads and splits the data, builds the starting model with the heads the data can
teach (the classifier always; the angle estimate when labels.csv gives angles; the side-view
flag when a `no_side_view/` folder gives pictures without a side view), runs one of the two
paths in `posture.fit` (cached features for a frozen backbone, else the full loop), calibrates
the best epoch's probabilities on the validation set, evaluates it there, and writes the
checkpoint once, atomically, after training finished normally.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from posture.calibrate import calibrate_, fit_gate_
from posture.checkpoints import ModelInfo, load_checkpoint, read_info, save_checkpoint
from posture.cpu import bf16_supported
from posture.devices import autocast_dtype, resolve_device
from posture.data import DatasetScan, UploadLimits, scan_dataset, stratified_split
from posture.errors import CheckpointError, DatasetError, TrainingCancelled, UsageError
from posture.evaluate import EvalReport, evaluate_items
from posture.fit import CAM_MAPS, EpochLoop, LossWeights, ProgressFn, TrainEvent, fit_full, fit_head
from posture.imagedata import CLOSEUP_SHARE, RESTYLE_OPS, RESTYLE_OPS_ALL, Augment, ImageDataset, Item, annotate
from posture.labels import read_annotations
from posture.models import AUX_HEADS, PostureNet, arch_config, build_model, freeze_backbone, reset_classifier
from posture.predict import Predictor

__all__ = ["TrainConfig", "TrainEvent", "TrainResult", "dataset_items", "train"]  # TrainEvent comes from posture.fit

PRELOAD_BUDGET = 2 * 2**30  # bytes of decoded squares kept in memory for reuse across epochs
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class TrainConfig:
    """Everything that decides a training run; the CLI and the app both build one.

    None means "the architecture's default" (see `posture.models.ARCHS`), resolved by `resolved()`.
    """

    arch: str = "resnet18"
    init: str | None = None  # "imagenet", "scratch", a torchvision state dict, or a posture checkpoint
    freeze: bool | None = None  # None: frozen backbone when starting from published weights
    epochs: int = 10
    lr: float | None = None  # None: the architecture's default for the init and freeze choice
    batch_size: int = 32
    img_size: int | None = None  # None: the architecture's (or the init checkpoint's) input size
    val_split: float = 0.2
    seed: int = 0
    patience: int = 5  # epochs without a better validation loss before stopping
    weight_decay: float = 1e-4
    augment: bool = True
    degrade: float = 0.0  # probability that a training picture is seen as a low-quality capture (`degrade_image`)
    restyle: float = 0.0  # probability that a training picture is seen drawn otherwise (`restyle_image`)
    restyle_ops: tuple[str, ...] = RESTYLE_OPS  # the restyle ops drawn from, each as likely
    closeup: float = 0.0  # probability that a training picture is seen as a head-and-shoulders close-up (`closeup_crop`)
    closeup_largest: float = CLOSEUP_SHARE[1]  # a close-up's largest head-and-neck box, as a share of its side
    feature_views: int = 0  # frozen path: extra augmented views cached per training image
    cache_features: bool = True  # frozen path: train the heads on cached features
    workers: int = 1  # image decoding processes beside training (0: decode in this process)
    precision: str = "auto"  # full training: "bf16" autocast, "fp32", or "auto" (mixed precision where the device has it)
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), "cpu", "cuda", "cuda:N" or "mps"
    imagenet_weights: str | None = None  # a local copy of the ImageNet weights for init "imagenet" (offline)
    storage_dtype: str = "float32"  # checkpoint weights: "float16" halves the file
    loss_weights: LossWeights = field(default_factory=LossWeights)
    exclude_styles: tuple[str, ...] = ()  # leave out pictures of these synthetic styles (held-out runs)
    cam_layer: str | None = None  # the layer Grad-CAM explains by default, recorded in the checkpoint
    cam_map: str = "relu"  # the box term's map: "relu" (Grad-CAM's) or "softplus" (a gradient where all evidence is negative)
    output_stride: int | None = None  # input pixels per last-stage cell (resnet18: 32 or 16); None: the init's
    calibrate: bool = True  # temperature-scale the classifier on the validation set
    gate: bool = True  # fit the familiarity gate of the side-view flag (models with that head)
    gate_restyle: bool = False  # the gate also learns restyled views of the side views (`fit_gate_`)
    preload: bool | None = None  # decode every image once into memory; None: when it fits PRELOAD_BUDGET

    def augmentation(self) -> Augment:
        """The training augmentation this run asks for."""
        if not self.augment:
            return Augment.none()
        return Augment(degrade=self.degrade, restyle=self.restyle, restyle_ops=tuple(self.restyle_ops),
                       closeup=self.closeup, closeup_largest=self.closeup_largest)

    def resolved(self) -> "TrainConfig":
        """A copy with every None replaced by its default; UsageError for impossible settings."""
        cfg = replace(self)
        spec = arch_config(cfg.arch)
        if cfg.init is None:
            cfg.init = spec.init
        if cfg.freeze is None:
            cfg.freeze = spec.freeze_by_default(cfg.init)
        ckpt = _posture_checkpoint(cfg.init)
        start = read_info(ckpt) if ckpt else None  # a checkpoint to continue from: its size and stride are the defaults
        if cfg.img_size is None:
            cfg.img_size = start.input_size if start else spec.input_size
        if cfg.lr is None:
            cfg.lr = spec.default_lr(cfg.init, bool(cfg.freeze))
        if cfg.epochs < 1 or cfg.batch_size < 1 or not 0.0 < cfg.val_split < 1.0:
            raise UsageError("epochs and batch size must be >= 1 and the validation share in (0, 1)")
        for name in ("degrade", "restyle", "closeup"):
            if not 0.0 <= getattr(cfg, name) <= 1.0:
                raise UsageError(f"{name} is a probability in [0, 1], got {getattr(cfg, name)}")
        cfg.restyle_ops = tuple(cfg.restyle_ops)
        unknown = [op for op in cfg.restyle_ops if op not in RESTYLE_OPS_ALL]
        if unknown or not cfg.restyle_ops:
            raise UsageError(f"restyle ops are one or more of {', '.join(RESTYLE_OPS_ALL)}; "
                             f"got {', '.join(map(repr, unknown)) or 'none'}")
        if not CLOSEUP_SHARE[0] <= cfg.closeup_largest <= 1.0:
            raise UsageError(f"a close-up's largest box share lies in [{CLOSEUP_SHARE[0]}, 1], got {cfg.closeup_largest}")
        if not 16 <= cfg.img_size <= 1024:
            raise UsageError(f"image size {cfg.img_size} must lie within 16..1024 px")
        if cfg.precision not in PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
        resolve_device(cfg.device)  # UsageError naming this machine's devices if it lacks the one asked for
        if cfg.cam_layer is not None and cfg.cam_layer not in spec.cam_layers:
            raise UsageError(f"{cfg.arch} has no layer {cfg.cam_layer!r}; choose from {', '.join(spec.cam_layers)}")
        if cfg.cam_map not in CAM_MAPS:
            raise UsageError(f"cam map must be one of {', '.join(CAM_MAPS)}, got {cfg.cam_map!r}")
        if cfg.output_stride is None:
            cfg.output_stride = (start.output_stride if start else 0) or spec.builder.output_strides[0]
        spec.builder.check_output_stride(cfg.output_stride)
        cfg.exclude_styles = tuple(cfg.exclude_styles)
        return cfg


@dataclass
class TrainResult:
    """The best-epoch model, its metadata and how training went."""

    model: PostureNet | None
    info: ModelInfo | None
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    val_report: EvalReport | None = None
    cancelled: bool = False


def _posture_checkpoint(init: str | None) -> Path | None:
    if init is None:
        return None
    path = Path(init)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        read_info(path)
    except CheckpointError:
        return None  # a plain safetensors state dict, handled as torchvision weights
    return path


def dataset_items(scan: DatasetScan, cfg: TrainConfig) -> tuple[list[Item], list[Item]]:
    """(train, validation) items of a scanned dataset with every known target, split per class."""
    index = {name: i for i, name in enumerate(scan.class_names)}
    if scan.has_splits and scan.val_files:
        train = [(p, index[c]) for c, ps in scan.files.items() for p in ps]
        val = [(p, index[c]) for c, ps in scan.val_files.items() for p in ps]
        train += [(p, -1) for p in scan.negatives]
        val += [(p, -1) for p in scan.val_negatives]
    else:
        train, val = stratified_split(scan.files, cfg.val_split, cfg.seed)
        if scan.negatives:
            neg_train, neg_val = stratified_split({"": scan.negatives}, cfg.val_split, cfg.seed)
            train += [(p, -1) for p, _ in neg_train]
            val += [(p, -1) for p, _ in neg_val]
    notes = read_annotations(scan.root)
    drop = set(cfg.exclude_styles)
    train_items = [it for it in annotate(train, notes) if it.style not in drop]
    val_items = [it for it in annotate(val, notes) if it.style not in drop]
    return train_items, val_items


def _heads_for(items: list[Item]) -> list[str]:
    """The auxiliary heads the data can teach by gradient (the gate is fitted after training)."""
    teach = {"cva": any(math.isfinite(it.cva_deg) for it in items), "side_view": any(not it.side_view for it in items)}
    return [h for h in AUX_HEADS if teach.get(h)]


def _initial_model(cfg: TrainConfig, class_names: list[str], heads: list[str]) -> PostureNet:
    """The starting model: fresh (or ImageNet) weights, or a posture checkpoint, with the heads to train.

    A checkpoint's auxiliary heads that the data cannot teach stay (frozen) on a frozen backbone,
    whose features they were trained on; on a backbone that trains they would go stale, so they go.
    """
    ckpt = _posture_checkpoint(cfg.init)
    if ckpt is None:
        weights = None if cfg.init == "scratch" else cfg.init
        return build_model(cfg.arch, len(class_names), weights=weights, heads=heads,
                           imagenet_file=cfg.imagenet_weights, output_stride=cfg.output_stride)
    model, info = load_checkpoint(ckpt)
    if info.arch != cfg.arch:
        raise CheckpointError(f"{ckpt} holds a {info.arch}, but training asks for {cfg.arch}")
    model.set_output_stride(cfg.output_stride)  # the weights fit either stride
    if info.class_names != class_names:
        reset_classifier(model, len(class_names))
    for name in model.head_names:
        if name == "gate" or (name not in heads and not cfg.freeze):  # the gate is fitted anew after training
            del model.heads[name]
    return model.add_heads(heads)


def _class_weights(labels: list[int], k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1.0)), dtype=torch.float32)


def _datasets(cfg: TrainConfig, train_items: list[Item], val_items: list[Item], emit: ProgressFn) -> tuple[ImageDataset, ImageDataset]:
    aug = cfg.augmentation()
    train_ds = ImageDataset(train_items, int(cfg.img_size), augment=aug, seed=cfg.seed)
    val_ds = ImageDataset(val_items, int(cfg.img_size))
    preload = cfg.preload
    if preload is None:
        preload = (len(train_items) + len(val_items)) * int(cfg.img_size) ** 2 * 3 <= PRELOAD_BUDGET
    if preload:
        for name, ds in (("training", train_ds), ("validation", val_ds)):
            emit(TrainEvent("phase", message=f"decoding {len(ds)} {name} images"))
            ds.preload()
    return train_ds, val_ds


def _mixed_precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of full training: None (fp32), bfloat16, or float16 on a GPU without bfloat16."""
    if cfg.precision == "fp32" or cfg.freeze:
        return None
    if device.type == "cpu":
        return torch.bfloat16 if cfg.precision == "bf16" or bf16_supported() else None
    return torch.bfloat16 if cfg.precision == "bf16" else autocast_dtype(device)


def train(
    data: str | Path | DatasetScan,
    config: TrainConfig,
    out: str | Path | None = None,
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    misclassified_dir: str | Path | None = None,
    finish_cancelled: bool = False,
) -> TrainResult:
    """Train on a class-per-folder dataset; write the best model to `out` when given.

    Cancelling (setting `cancel`) stops within a batch; then nothing is written and
    the result holds the best model of the finished epochs, if any, unevaluated.
    `misclassified_dir` receives the Grad-CAM overlays of misclassified validation images
    (their report rows name them under "overlay").
    With `finish_cancelled`, that best model is finished like a complete run instead
    (calibrated, gated, evaluated and written) and `cancelled` stays True.
    """
    cfg = config.resolved()
    emit: ProgressFn = progress or (lambda event: None)
    scan = data if isinstance(data, DatasetScan) else scan_dataset(data, UploadLimits.local())
    train_items, val_items = dataset_items(scan, cfg)
    if not any(it.side_view for it in train_items) or not any(it.side_view for it in val_items):
        raise DatasetError("need at least one training and one validation image per class")
    names = list(scan.class_names)
    heads = _heads_for(train_items)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)  # the heads' (and a scratch model's) initial weights
        model = _initial_model(cfg, names, heads)
    freeze_backbone(model, bool(cfg.freeze))
    for name in model.head_names:
        if name not in heads:  # kept from the checkpoint, nothing here to learn it from
            model.heads[name].requires_grad_(False)
    device = resolve_device(cfg.device)
    model.to(device)
    weights = _class_weights([it.label for it in train_items if it.side_view], len(names)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    loop = EpochLoop(cfg, len(train_items), params, progress, cancel)
    train_ds, val_ds = _datasets(cfg, train_items, val_items, emit)
    emit(TrainEvent("phase", epochs=cfg.epochs, message=f"training {cfg.arch} on {len(train_items)} images, "
                    f"validating on {len(val_items)}"))
    try:
        if cfg.freeze and cfg.cache_features:
            fit_head(model, cfg, train_ds, val_ds, weights, loop, emit)
        else:
            fit_full(model, cfg, train_ds, val_ds, weights, loop, _mixed_precision(cfg, device))
        cancelled = False
    except TrainingCancelled:
        cancelled = True
    finally:
        model.cpu()  # calibration, the gate, evaluation and the checkpoint work on the CPU
    history = loop.history
    if loop.best is None:
        return TrainResult(model=None, info=None, history=history, cancelled=cancelled)
    model.load_state_dict(loop.best)
    freeze_backbone(model, False)
    info = ModelInfo(arch=cfg.arch, class_names=names, input_size=int(cfg.img_size), init=str(cfg.init),
                     train_config=asdict(cfg), history=history, storage_dtype=cfg.storage_dtype,
                     heads=model.head_names, cam_layer=cfg.cam_layer or "",
                     output_stride=model.output_stride)
    if cancelled and not finish_cancelled:
        emit(TrainEvent("done", epochs=cfg.epochs, message="cancelled; kept the best finished epoch"))
        return TrainResult(model.eval(), info, history, cancelled=True)
    if cfg.calibrate:
        emit(TrainEvent("phase", epochs=cfg.epochs, message="calibrating probabilities on the validation set"))
        info.train_config["temperature"] = calibrate_(model, val_ds, cfg.batch_size)
    if cfg.gate and "side_view" in model.heads:
        emit(TrainEvent("phase", epochs=cfg.epochs, message="fitting the side-view flag's familiarity gate"))
        info.train_config["gate"] = fit_gate_(model, train_ds, val_ds, cfg.batch_size, cfg.workers, device,
                                              closeup=cfg.closeup_largest if cfg.closeup > 0 else None,
                                              restyle=cfg.gate_restyle, restyle_ops=cfg.restyle_ops)
        info.heads = model.head_names
    emit(TrainEvent("phase", epochs=cfg.epochs, message="evaluating the best epoch on the validation set"))
    report = evaluate_items(Predictor(copy.deepcopy(model), info), val_items, names,
                            misclassified_dir=Path(misclassified_dir) if misclassified_dir else None)
    info.metrics = {"val": report.metrics, "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1}
    checkpoint = save_checkpoint(out, model.eval(), info) if out is not None else None
    emit(TrainEvent("done", epochs=cfg.epochs, val_acc=report.metrics["accuracy"], message="done"))
    return TrainResult(model.eval(), info, history, checkpoint, report, cancelled=cancelled)
