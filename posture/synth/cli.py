"""The `python -m posture synth` sub-command: arguments and entry point."""

from __future__ import annotations

import argparse

from tqdm import tqdm

from posture.errors import UsageError
from posture.synth.config import STYLES, SynthConfig
from posture.synth.dataset import generate_dataset


def add_synth_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the options of the `synth` sub-command to `parser` and return it."""
    d = SynthConfig()
    parser.add_argument("--out", required=True, help="folder to write <class>/*.jpg and labels.csv into")
    parser.add_argument("--n", type=int, default=1000, help="number of pictures (classes alternate)")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> byte-identical files")
    parser.add_argument("--threshold", type=float, default=d.threshold, help="CVA cut-off in degrees")
    parser.add_argument("--margin", type=float, default=5.0, help="degrees left out on each side of the threshold")
    parser.add_argument("--cva-min", type=float, default=d.turtle_range[0], help="smallest CVA drawn (turtle)")
    parser.add_argument("--cva-max", type=float, default=d.normal_range[1], help="largest CVA drawn (normal)")
    parser.add_argument("--min-size", type=int, default=d.size_range[0], help="smallest longer side in pixels")
    parser.add_argument("--max-size", type=int, default=d.size_range[1], help="largest longer side in pixels")
    parser.add_argument("--nuisance", type=float, default=d.nuisance, help="clutter/lighting/noise strength 0..1")
    parser.add_argument("--max-roll", type=float, default=d.max_roll_deg, help="camera roll range in degrees")
    parser.add_argument("--style", default="all", metavar="NAME[,NAME...]|all",
                        help=f"rendering styles to draw from: {', '.join(STYLES)}, or all (default)")
    parser.add_argument("--negatives", type=float, default=d.negatives,
                        help="share of pictures without a side view (frontal views, empty rooms, ...), "
                             "written to no_side_view/")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def parse_styles(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated list of style names -> the styles (unknown names are refused)."""
    if text.strip().lower() == "all":
        return STYLES
    styles = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in styles if s not in STYLES]
    if not styles or unknown:
        raise UsageError(f"unknown style {', '.join(unknown) or repr(text)}; choose from {', '.join(STYLES)} or all")
    return styles


def config_from_args(args: argparse.Namespace) -> SynthConfig:
    """Build the generator config the parsed arguments describe."""
    return SynthConfig.from_margin(
        threshold=args.threshold,
        margin=args.margin,
        low=args.cva_min,
        high=args.cva_max,
        size_range=(args.min_size, args.max_size),
        nuisance=args.nuisance,
        max_roll_deg=args.max_roll,
        styles=parse_styles(args.style),
        negatives=args.negatives,
    )


def synth_main(args: argparse.Namespace) -> int:
    """Write a synthetic data set as the arguments ask; return the process exit code."""
    config = config_from_args(args)
    with tqdm(total=args.n, unit="img", disable=args.quiet, desc="synth") as bar:

        def progress(done: int, total: int) -> None:
            bar.update(done - bar.n)

        csv_path = generate_dataset(args.out, args.n, args.seed, config, workers=args.workers, progress=progress)
    print(f"wrote {args.n} pictures and {csv_path}")
    return 0
