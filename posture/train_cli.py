"""The `train`, `evaluate` and `heldout` sub-commands: arguments and entry points."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from tqdm import tqdm

from posture.fit import CAM_MAPS, LossWeights, TrainEvent
from posture.imagedata import CLOSEUP_SHARE, RESTYLE_OPS, RESTYLE_OPS_ALL
from posture.models import list_models

__all__ = ["add_evaluate_arguments", "add_heldout_arguments", "add_mirror_argument", "add_serving_arguments",
           "add_train_arguments", "evaluate_main", "heldout_main", "train_main"]


def _styles(text: str | None) -> tuple[str, ...]:
    from posture.synth.cli import parse_styles

    return () if not text else parse_styles(text)


def _ops(text: str | None) -> tuple[str, ...]:
    """--restyle-ops: the names as given (the config checks them), the default when not given."""
    return RESTYLE_OPS if text is None else tuple(op.strip() for op in text.split(",") if op.strip())


def add_train_arguments(p: argparse.ArgumentParser, data_required: bool = True) -> argparse.ArgumentParser:
    """The training options (shared by `train` and `heldout`)."""
    import os

    from posture.pretrained import IMAGENET_ENV
    from posture.train import PRECISIONS as TRAIN_PRECISIONS

    d = LossWeights()
    p.add_argument("--data", required=data_required, help="folder with one sub-folder per class (or train/ and val/)")
    p.add_argument("--arch", default="resnet18", choices=list_models())
    p.add_argument("--init", default=None,
                   help="imagenet | scratch | weights file | posture checkpoint (default: the architecture's)")
    p.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the heads (default: yes when starting from pretrained weights)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--degrade", type=float, default=0.0, metavar="P",
                   help="probability of seeing a training picture as a low-quality capture: fewer pixels, "
                        "blur or camera shake, JPEG (default: 0)")
    p.add_argument("--restyle", type=float, default=0.0, metavar="P",
                   help="probability of seeing a training picture drawn otherwise: posterized, solarized, "
                        "equalized, autocontrasted, inverted, sharpened or outlined, outlines in place (default: 0)")
    p.add_argument("--restyle-ops", default=None, metavar="OPS",
                   help="the restyle ops --restyle draws from, comma-separated, each as likely: any of "
                        f"{', '.join(RESTYLE_OPS_ALL)} (default: {','.join(RESTYLE_OPS)}; silhouette "
                        "fills the picture's dark and light parts with one flat colour each)")
    p.add_argument("--closeup", type=float, default=0.0, metavar="P",
                   help="probability of seeing a training picture as a head-and-shoulders close-up: a crop around "
                        "labels.csv's head-and-neck box, the box whole (default: 0)")
    p.add_argument("--closeup-largest", type=float, default=CLOSEUP_SHARE[1], metavar="SHARE",
                   help="a close-up's largest head-and-neck box, as a share of its side; close-ups range "
                        f"from {CLOSEUP_SHARE[0]} to this (default: {CLOSEUP_SHARE[1]})")
    p.add_argument("--feature-views", type=int, default=0, help="frozen path: augmented views to cache")
    p.add_argument("--storage", default="float32", choices=["float32", "float16"],
                   help="dtype of the saved weights (float16 halves the file)")
    p.add_argument("--exclude-style", default=None, metavar="NAME[,NAME...]",
                   help="leave out pictures of these synthetic styles (labels.csv's style column)")
    p.add_argument("--cam-layer", default=None, help="the layer Grad-CAM explains by default (recorded)")
    p.add_argument("--cam-map", default="relu", choices=CAM_MAPS,
                   help="the box term's map: relu (Grad-CAM's own) or softplus, which also moves maps "
                        "whose evidence is negative everywhere")
    p.add_argument("--output-stride", type=int, default=None, metavar="PX",
                   help="input pixels per cell of the last stage; resnet18: 32, or 16 for a twice as fine "
                        "last stage and Grad-CAM (default: the init checkpoint's, else 32)")
    p.add_argument("--cva-weight", type=float, default=d.cva, help="weight of the angle loss")
    p.add_argument("--side-weight", type=float, default=d.side_view, help="weight of the side-view loss")
    p.add_argument("--cam-weight", type=float, default=d.cam,
                   help="weight of the penalty on Grad-CAM mass outside the head-and-neck box (0: off)")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep the raw probabilities (no temperature scaling on the validation set)")
    p.add_argument("--no-gate", dest="gate", action="store_false",
                   help="no familiarity gate on the side-view flag (the head's opinion alone)")
    p.add_argument("--gate-restyle", action="store_true",
                   help="the gate also learns every training side view drawn otherwise, one group per "
                        "restyle op (as --restyle draws them), so it takes those looks for familiar")
    p.add_argument("--workers", type=int, default=1, help="image decoding processes beside training")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--imagenet-weights", default=os.environ.get(IMAGENET_ENV) or None, metavar="FILE",
                   help=f"a local copy of the ImageNet weights for --init imagenet (default: ${IMAGENET_ENV})")
    p.add_argument("--precision", default="auto", choices=TRAIN_PRECISIONS,
                   help="full training: auto (mixed precision where the device has it), fp32 or bf16")
    p.add_argument("--json", action="store_true")
    return p


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig the parsed arguments describe."""
    from posture.train import TrainConfig

    return TrainConfig(
        arch=args.arch, init=args.init, freeze=args.freeze, epochs=args.epochs, lr=args.lr,
        batch_size=args.batch_size, img_size=args.img_size, val_split=args.val_split, seed=args.seed,
        patience=args.patience, degrade=args.degrade, restyle=args.restyle,
        restyle_ops=_ops(args.restyle_ops), closeup=args.closeup,
        closeup_largest=args.closeup_largest,
        feature_views=args.feature_views,
        storage_dtype=args.storage,
        exclude_styles=_styles(args.exclude_style), cam_layer=args.cam_layer,
        output_stride=args.output_stride, cam_map=args.cam_map, calibrate=args.calibrate, gate=args.gate,
        gate_restyle=args.gate_restyle,
        loss_weights=LossWeights(args.cva_weight, args.side_weight, args.cam_weight), workers=args.workers,
        device=args.device, precision=args.precision, imagenet_weights=args.imagenet_weights,
    )  # fmt: skip


class _Progress:
    """tqdm bar per epoch, one line per epoch and phase."""

    def __init__(self) -> None:
        self.bar = tqdm(total=0, unit="batch", dynamic_ncols=True)

    def __call__(self, event: TrainEvent) -> None:
        if event.kind == "step":
            if event.step == 1:
                self.bar.reset(total=event.steps)
            self.bar.set_description(f"epoch {event.epoch}/{event.epochs}")
            self.bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{event.acc:.3f}", refresh=False)
            self.bar.n = event.step
            self.bar.refresh()
        elif event.kind == "epoch":
            row = event.metrics or {}
            extra = "".join(f" {k} {row[k]:.3f}" for k in ("val_cva_mae", "val_side_acc", "train_cam_outside")
                            if k in row)
            tqdm.write(f"epoch {event.epoch}: loss {event.loss:.4f} acc {event.acc:.3f} | "
                       f"val loss {event.val_loss:.4f} val acc {event.val_acc:.3f}{extra}")
        elif event.message:
            tqdm.write(event.message)

    def close(self) -> None:
        self.bar.close()


def train_main(args: argparse.Namespace) -> int:
    """Train as the arguments ask; return the process exit code."""
    from posture.train import train

    progress, cancel = _Progress(), threading.Event()

    def interrupted(signum: int, frame: Any) -> None:
        # The first Ctrl-C ends training after the current batch and finishes the best
        # finished epoch; a second one aborts without writing anything.
        cancel.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("\ninterrupted: finishing the best finished epoch (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        result = train(args.data, config_from_args(args), out=args.out, progress=progress, cancel=cancel,
                       finish_cancelled=True)
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
        progress.close()
    if result.info is None:
        print("interrupted before the first epoch finished; nothing was written", file=sys.stderr)
        return 130
    val = result.info.metrics["val"]
    print(json.dumps({"checkpoint": str(result.checkpoint), "val": val}, indent=2) if args.json
          else f"saved {result.checkpoint} (val accuracy {val['accuracy']:.3f})")
    return 0


def bundled_folder() -> str | None:
    """$POSTURE_CHECKPOINTS: where the CLI looks up models given by name (None: the repo's checkpoints/)."""
    import os

    from posture.checkpoints import CHECKPOINTS_ENV

    return os.environ.get(CHECKPOINTS_ENV) or None


def add_serving_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of commands that run a model: `--device`, `--precision` and `--no-mirror`."""
    import os

    from posture.devices import DEVICES
    from posture.serving import PRECISION_ENV, PRECISIONS

    p.add_argument("--device", default="auto", choices=DEVICES, help="auto: cuda, then mps, then cpu (default: auto)")
    # The environment is read here, at the edge; a bad value is refused by the library with a clear message.
    p.add_argument("--precision", default=os.environ.get(PRECISION_ENV) or None, choices=PRECISIONS,
                   help="backbone precision (default: $POSTURE_PRECISION, else auto: bf16 where the CPU computes "
                        "it natively, else fp32)")
    return add_mirror_argument(p)


def add_mirror_argument(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--no-mirror` (`args.mirror`, default True): the picture alone, not averaged with its mirror image."""
    p.add_argument("--no-mirror", dest="mirror", action="store_false",
                   help="answer from the picture alone (default: the mean of the picture and its mirror image)")
    return p


def add_evaluate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `evaluate` options."""
    p.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    p.add_argument("--data", required=True)
    p.add_argument("--report", default=None, help="write metrics.json, predictions.csv, PNGs here")
    p.add_argument("--layer", default=None, help="the layer Grad-CAM explains (default: the checkpoint's)")
    p.add_argument("--record-as", default=None, metavar="NAME",
                   help="also store the metrics in the checkpoint's header under NAME (e.g. test)")
    p.add_argument("--choose-layer", action="store_true",
                   help="measure Grad-CAM localisation of every layer on this (validation) data and record "
                        "the best as the checkpoint's default explained layer")
    p.add_argument("--json", action="store_true")
    add_serving_arguments(p)
    return p


def _print_metrics(m: dict[str, Any], indent: str = "") -> None:
    if "accuracy" in m:
        auc = "-" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
        print(f"{indent}accuracy {m['accuracy']:.4f}  roc_auc {auc}  ece {m['ece']:.4f}  n={m['n']}")
    if "cva_mae" in m:
        print(f"{indent}angle: mean absolute error {m['cva_mae']:.2f} deg, within 5 deg {m['cva_within_5']:.3f}")
    if side := m.get("side_view"):
        caught = side.get("without_flagged")
        print(f"{indent}side-view flag: side views flagged {side['side_views_flagged'] or 0:.3f}"
              + ("" if caught is None else f", pictures without one caught {caught:.3f} (n={side['n_without']})"))
    if "cam_mass_in_box" in m:
        print(f"{indent}Grad-CAM mass in head-and-neck box {m['cam_mass_in_box']:.3f}, "
              f"pointing game {m['pointing_game']:.3f}")


def evaluate_main(args: argparse.Namespace) -> int:
    """Evaluate as the arguments ask; return the process exit code."""
    from posture.checkpoints import record_metrics, resolve_checkpoint
    from posture.evaluate import choose_cam_layer, evaluate_folder
    from posture.predict import Predictor

    if args.choose_layer:
        with tqdm(total=0, unit="img", dynamic_ncols=True, disable=args.json) as bar:
            def on_layers(done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.refresh()

            best, scores = choose_cam_layer(resolve_checkpoint(args.model, bundled_folder()), args.data,
                                            progress=on_layers)
        print(json.dumps({"chosen": best, "layers": scores}, indent=2) if args.json else "\n".join(
            f"{name}: mass in box {v['cam_mass_in_box']:.3f}, pointing game {v['pointing_game']:.3f}"
            + ("  <- recorded as the default" if name == best else "") for name, v in scores.items()))
        return 0
    predictor = Predictor.from_checkpoint(args.model, precision=args.precision, device=args.device,
                                          checkpoints=bundled_folder(), mirror=args.mirror)
    with tqdm(total=0, unit="img", dynamic_ncols=True, disable=args.json) as bar:
        def on_progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        report = evaluate_folder(predictor, args.data, report_dir=args.report, progress=on_progress, layer=args.layer)
    m = report.metrics
    if args.record_as:
        record_metrics(resolve_checkpoint(args.model, bundled_folder()), args.record_as, {**m, "data": str(args.data)})
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    _print_metrics(m)
    for name, c in m.get("per_class", {}).items():
        print(f"  {name:<14} precision {c['precision']:.3f} recall {c['recall']:.3f} f1 {c['f1']:.3f} n={c['support']}")
    for style, sm in m.get("by_style", {}).items():
        print(f"style {style}:")
        _print_metrics(sm, indent="  ")
    if args.report:
        print(f"report written to {args.report}")
    return 0


def add_heldout_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `heldout` options: the training options plus the test set, the styles and the output folder."""
    add_train_arguments(p)
    p.add_argument("--test", required=True, help="labelled test folder (synthetic, with styles in labels.csv)")
    p.add_argument("--groups", default="auto", metavar="auto|each|A+B,C...",
                   help="styles to hold out together, group by group: auto (styles that share a trait go "
                        "together), each (one style at a time), or a list like flat+shaded,lowres")
    p.add_argument("--out", required=True, help="folder for the models and matrix.json")
    return add_mirror_argument(p)


def heldout_main(args: argparse.Namespace) -> int:
    """Run the held-out-style protocol; print the matrix as Markdown (or JSON)."""
    from posture.heldout import heldout_matrix, matrix_markdown, parse_groups

    groups = parse_groups(args.groups)
    progress = _Progress()
    try:
        matrix = heldout_matrix(args.data, args.test, config_from_args(args), args.out, groups=groups,
                                progress=progress, mirror=args.mirror)
    finally:
        progress.close()
    print(json.dumps(matrix, indent=2) if args.json else matrix_markdown(matrix))
    return 0
