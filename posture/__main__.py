"""Command line: `python -m posture {predict,models,synth,train,evaluate} ...`.

User mistakes (a bad image, a missing checkpoint, a wrong folder layout) print one
line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from posture.errors import PostureError, UsageError

__all__ = ["get_args_parser", "main"]


def _cmd_predict(args: argparse.Namespace) -> int:
    from posture.batch import BatchWriter, find_images, score_files
    from posture.predict import Predictor

    predictor = Predictor.from_checkpoint(args.model)
    if args.target is not None:
        predictor.class_index(args.target)  # fail before any image is read
    if args.layer is not None and args.layer not in predictor.cam_layers:
        raise UsageError(f"{predictor.name} has no layer {args.layer!r}; choose from {', '.join(predictor.cam_layers)}")
    files = find_images(args.images)
    writer = BatchWriter(predictor.class_names, csv_path=args.csv, cam_dir=args.cam_dir, alpha=args.alpha)
    explain = writer.wants_overlays or args.target is not None
    scored = score_files(predictor, files, explain=explain, target=args.target, layer=args.layer,
                         batch_size=args.batch_size)
    # The bar goes to stderr; per-file lines (or JSON) stay on stdout for pipes.
    with writer, tqdm(scored, total=len(files), unit="img", dynamic_ncols=True, leave=False,
                      disable=args.json or args.quiet) as bar:
        for item in bar:
            row = writer.add(item)
            if row.error:  # library messages name the file already; others get it in front
                tqdm.write(row.error if row.file in row.error else f"{row.file}: {row.error}", file=sys.stderr)
            elif args.json:
                print(json.dumps({"file": row.file, "model": predictor.name, **item.prediction.to_dict()}))
            elif not args.quiet:
                tqdm.write(_prediction_line(row.file, item.prediction))
    if args.csv:
        print(f"{writer.scored} of {len(files)} images scored; table written to {args.csv}", file=sys.stderr)
    return 1 if writer.failed else 0


def _prediction_line(name: str, pred) -> str:
    """One human-readable line per image: verdict, probabilities, and the extra outputs the model has."""
    probs = " ".join(f"{n}={p:.3f}" for n, p in pred.probabilities.items())
    extra = ""
    if pred.side_view is False:
        extra += "  no side view of a person found"
    elif pred.cva_deg is not None:
        extra += f"  CVA~{pred.cva_deg:.0f}deg"
    note = "  (Grad-CAM empty)" if pred.cam_empty else ""
    return f"{name}: {pred.label} ({probs}){extra} {pred.latency_ms:.0f} ms{note}"


def _cmd_models(args: argparse.Namespace) -> int:
    from posture.catalog import summarize_checkpoint
    from posture.checkpoints import bundled_checkpoints

    paths = {**bundled_checkpoints(), **{Path(p).stem: Path(p) for p in args.paths}}
    summaries = [summarize_checkpoint(name, path) for name, path in paths.items()]
    if args.json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
        return 1 if any(s.error for s in summaries) else 0
    if not summaries:
        print("no checkpoints found", file=sys.stderr)
    for s in summaries:
        if s.error:
            print(f"{s.name:<16} unreadable: {s.error}")
            continue
        heads = f"  outputs=class,{','.join(s.heads)}" if s.heads else ""
        print(f"{s.name:<16} {s.arch:<9} {s.input_size:>4}px  classes={','.join(s.class_names)}{heads}  "
              f"init={s.init}  {s.metrics_text}  {s.path}")
    return 1 if any(s.error for s in summaries) else 0


def _cmd_train(args: argparse.Namespace) -> int:
    from posture.train import TrainConfig, train

    config = TrainConfig(arch=args.arch, init=args.init, freeze=args.freeze, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size, img_size=args.img_size, val_split=args.val_split,
                         seed=args.seed, patience=args.patience, feature_views=args.feature_views,
                         storage_dtype=args.storage)
    bar = tqdm(total=0, unit="batch", dynamic_ncols=True)

    def on_event(event) -> None:
        if event.kind == "step":
            if event.step == 1:
                bar.reset(total=event.steps)
            bar.set_description(f"epoch {event.epoch}/{event.epochs}")
            bar.set_postfix(loss=f"{event.loss:.3f}", acc=f"{event.acc:.3f}", refresh=False)
            bar.n = event.step
            bar.refresh()
        elif event.kind == "epoch":
            tqdm.write(f"epoch {event.epoch}: loss {event.loss:.4f} acc {event.acc:.3f} | "
                       f"val loss {event.val_loss:.4f} val acc {event.val_acc:.3f}")
        elif event.message:
            tqdm.write(event.message)

    cancel = threading.Event()
    try:
        result = train(args.data, config, out=args.out, progress=on_event, cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        print("interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        bar.close()
    print(json.dumps({"checkpoint": str(result.checkpoint), "val": result.info.metrics["val"]}, indent=2)
          if args.json else f"saved {result.checkpoint} (val accuracy {result.info.metrics['val']['accuracy']:.3f})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from posture.evaluate import evaluate_folder
    from posture.predict import Predictor

    predictor = Predictor.from_checkpoint(args.model)
    with tqdm(total=0, unit="img", dynamic_ncols=True, disable=args.json) as bar:
        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        report = evaluate_folder(predictor, args.data, report_dir=args.report, progress=on_progress)
    m = report.metrics
    if args.record_as:
        from posture.checkpoints import record_metrics, resolve_checkpoint

        record_metrics(resolve_checkpoint(args.model), args.record_as, {**m, "data": str(args.data)})
    if args.json:
        print(json.dumps(m, indent=2))
        return 0
    print(f"accuracy {m['accuracy']:.4f}  roc_auc {m['roc_auc'] if m['roc_auc'] is None else round(m['roc_auc'], 4)}"
          f"  ece {m['ece']:.4f}  n={m['n']}")
    for name, c in m["per_class"].items():
        print(f"  {name:<14} precision {c['precision']:.3f} recall {c['recall']:.3f} f1 {c['f1']:.3f} n={c['support']}")
    if "cam_mass_in_box" in m:
        print(f"Grad-CAM mass in head-and-neck box {m['cam_mass_in_box']:.3f}, pointing game {m['pointing_game']:.3f}")
    if args.report:
        print(f"report written to {args.report}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from posture.synth import synth_main

    return synth_main(args)


def get_args_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(prog="python -m posture", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images (files or folders) and optionally write Grad-CAM overlays")
    p.add_argument("images", nargs="+", metavar="DIR_OR_FILE", help="image files, or folders of images (recursive)")
    p.add_argument("--model", default="resnet18", help="bundled model name or checkpoint path")
    p.add_argument("--target", default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--layer", default=None, help="layer to explain (default: the checkpoint's)")
    p.add_argument("--cam-dir", default=None, help="write <image>_cam.png overlays here")
    p.add_argument("--csv", default=None, help="write one row per image (verdict, probabilities, CVA, side view)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--batch-size", type=int, default=16, help="images decoded and run together")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--quiet", action="store_true", help="no per-image lines or progress bar")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("models", help="list bundled (and given) checkpoints with their metadata")
    p.add_argument("paths", nargs="*", metavar="CHECKPOINT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("train", help="fine-tune or train a model on a class-per-folder dataset")
    p.add_argument("--data", required=True, help="folder with one sub-folder per class (or train/ and val/)")
    p.add_argument("--arch", default="resnet18", choices=["resnet14", "resnet18"])
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.add_argument("--init", default=None, help="imagenet | scratch | weights file | posture checkpoint")
    p.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=None,
                   help="train only the head (default: yes when starting from pretrained weights)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--img-size", type=int, default=None)
    p.add_argument("--val-split", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--feature-views", type=int, default=0, help="frozen path: augmented views to cache")
    p.add_argument("--storage", default="float32", choices=["float32", "float16"],
                   help="dtype of the saved weights (float16 halves the file)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="metrics, confusion matrix and Grad-CAM report on a labelled folder")
    p.add_argument("--model", required=True, help="bundled model name or checkpoint path")
    p.add_argument("--data", required=True)
    p.add_argument("--report", default=None, help="write metrics.json, predictions.csv, PNGs here")
    p.add_argument("--record-as", default=None, metavar="NAME",
                   help="also store the metrics in the checkpoint's header under NAME (e.g. test)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("synth", help="render a labelled synthetic side-view dataset")
    from posture.synth import add_synth_arguments

    add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    if getattr(args, "init", "") is None:
        args.init = "imagenet" if args.arch == "resnet18" else "scratch"
    try:
        return args.func(args)
    except (PostureError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
