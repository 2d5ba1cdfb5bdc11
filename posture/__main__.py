"""Command line: `python -m posture {predict,models,export,synth,train,evaluate,heldout,gate} ...`.

User mistakes (a bad image, a missing checkpoint, a wrong folder layout) print one
line to stderr and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from posture.errors import PostureError, UsageError
from posture.train_cli import (
    add_evaluate_arguments,
    add_heldout_arguments,
    add_serving_arguments,
    add_train_arguments,
    bundled_folder,
    evaluate_main,
    heldout_main,
    train_main,
)

__all__ = ["get_args_parser", "main"]


def _cmd_predict(args: argparse.Namespace) -> int:
    from posture.batch import BatchWriter, find_images, score_files
    from posture.predict import Predictor

    predictor = Predictor.from_checkpoint(args.model, precision=args.precision, device=args.device,
                                          checkpoints=bundled_folder(), mirror=args.mirror)
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

    paths = {**bundled_checkpoints(bundled_folder()), **{Path(p).stem: Path(p) for p in args.paths}}
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


def _cmd_export(args: argparse.Namespace) -> int:
    from posture.checkpoints import load_checkpoint, resolve_checkpoint
    from posture.export import export_onnx

    model, info = load_checkpoint(resolve_checkpoint(args.model, bundled_folder()))
    out = export_onnx(model, info, args.out)
    print(json.dumps({"onnx": str(out), "bytes": out.stat().st_size}) if args.json else f"wrote {out}")
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from posture.calibrate import refit_gate
    from posture.checkpoints import resolve_checkpoint

    info = refit_gate(resolve_checkpoint(args.model, bundled_folder()), args.data, args.out,
                      progress=None if args.json else lambda message: print(message, file=sys.stderr),
                      restyle=args.restyle)
    gate, side = info.train_config["gate"], info.metrics["val"].get("side_view", {})
    if args.json:
        print(json.dumps({"out": args.out, "gate": gate, "val_side_view": side}))
        return 0
    groups = ", ".join(gate["groups"]) or "one group"
    print(f"gate: {groups}; rank {gate['rank']}, threshold {gate['threshold']:.1f}")
    print(f"validation: side views flagged {side.get('side_views_flagged') or 0:.3f}"
          + ("" if side.get("without_flagged") is None else f", pictures without one caught {side['without_flagged']:.3f}"))
    print(f"wrote {args.out}")
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
    add_serving_arguments(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("models", help="list bundled (and given) checkpoints with their metadata")
    p.add_argument("paths", nargs="*", metavar="CHECKPOINT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("export", help="write a checkpoint as an ONNX file (every output, metadata included)")
    p.add_argument("model", metavar="MODEL", help="bundled model name or checkpoint path")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="file format (default: onnx)")
    p.add_argument("--out", required=True, help="file to write (.onnx)")
    p.add_argument("--json", action="store_true", help="print the written file as JSON")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("train", help="fine-tune or train a model on a class-per-folder dataset")
    add_train_arguments(p)
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors)")
    p.set_defaults(func=train_main)

    p = sub.add_parser("evaluate", help="metrics (per style too), angle error, side-view flag and Grad-CAM "
                                        "localisation on a labelled folder")
    add_evaluate_arguments(p)
    p.set_defaults(func=evaluate_main)

    p = sub.add_parser("heldout", help="the held-out-style protocol: train without each style, test on it")
    add_heldout_arguments(p)
    p.set_defaults(func=heldout_main)

    p = sub.add_parser("gate", help="fit a checkpoint's side-view familiarity gate anew on its training data")
    p.add_argument("model", metavar="MODEL", help="bundled model name or checkpoint path")
    p.add_argument("--data", required=True, help="the folder it was trained on (split as its header records)")
    p.add_argument("--out", required=True, help="checkpoint to write (.safetensors; may be MODEL itself)")
    p.add_argument("--restyle", action=argparse.BooleanOptionalAction, default=None,
                   help="also fit on restyled views of the side views (default: as its training did)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gate)

    p = sub.add_parser("synth", help="render a labelled synthetic side-view dataset")
    from posture.synth import add_synth_arguments

    add_synth_arguments(p)
    p.set_defaults(func=_cmd_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    try:
        return args.func(args)
    except PostureError as exc:  # user mistakes; anything else is a bug and keeps its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
