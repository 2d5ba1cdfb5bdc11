"""Command line: `python -m posture {predict,models,synth,train,evaluate,heldout} ...`.

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

from posture.errors import PostureError
from posture.train_cli import (
    add_evaluate_arguments,
    add_heldout_arguments,
    add_train_arguments,
    evaluate_main,
    heldout_main,
    train_main,
)

__all__ = ["get_args_parser", "main"]


def _cmd_predict(args: argparse.Namespace) -> int:
    from posture.predict import Predictor

    predictor = Predictor.from_checkpoint(args.model)
    if args.target is not None:
        predictor.class_index(args.target)  # fail before any image is read
    if args.cam_dir:
        Path(args.cam_dir).mkdir(parents=True, exist_ok=True)
    failures = 0
    for image in args.images:
        try:
            pred = predictor.predict(image, target=args.target, explain=bool(args.cam_dir) or args.target is not None)
        except PostureError as exc:
            print(f"{image}: {exc}", file=sys.stderr)
            failures += 1
            continue
        if args.cam_dir:
            out = Path(args.cam_dir) / f"{Path(image).stem}_cam.png"
            pred.overlay(args.alpha).save(out)
        if args.json:
            record = {"file": str(image), "model": predictor.name, **pred.to_dict()}
            print(json.dumps(record))
        else:
            probs = " ".join(f"{n}={p:.3f}" for n, p in pred.probabilities.items())
            note = "  (Grad-CAM empty)" if pred.cam_empty else ""
            print(f"{image}: {pred.label} ({probs}) {pred.latency_ms:.0f} ms{note}")
    return 1 if failures else 0


def _cmd_models(args: argparse.Namespace) -> int:
    from posture.checkpoints import bundled_checkpoints, read_info

    paths = {**bundled_checkpoints(), **{Path(p).stem: Path(p) for p in args.paths}}
    records = []
    for name, path in paths.items():
        info = read_info(path)
        val = info.metrics.get("test") or info.metrics.get("val") or {}
        records.append({"name": name, "path": str(path), "arch": info.arch, "classes": info.class_names,
                        "input_size": info.input_size, "init": info.init, "created_at": info.created_at,
                        "accuracy": val.get("accuracy")})
    if args.json:
        print(json.dumps(records, indent=2))
    elif not records:
        print("no checkpoints found", file=sys.stderr)
    for r in records if not args.json else []:
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        print(f"{r['name']:<16} {r['arch']:<9} {r['input_size']:>4}px  classes={','.join(r['classes'])}  "
              f"init={r['init']}  acc={acc}  {r['path']}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from posture.synth import synth_main

    return synth_main(args)


def get_args_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser, one sub-command per task."""
    parser = argparse.ArgumentParser(prog="python -m posture", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images and optionally write Grad-CAM overlays")
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--model", default="resnet18", help="bundled model name or checkpoint path")
    p.add_argument("--target", default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--cam-dir", default=None, help="write <image>_cam.png overlays here")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1]")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("models", help="list bundled (and given) checkpoints with their metadata")
    p.add_argument("paths", nargs="*", metavar="CHECKPOINT")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

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
    except (PostureError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
