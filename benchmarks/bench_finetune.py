"""Frozen-backbone fine-tuning: cached features vs the plain loop, same data and epochs, one process.

Both paths train only the resnet18 head on the same synthetic images, without augmentation, so
they reach the same head; the cached path runs the backbone once instead of every epoch. Also
reports images/s for full fine-tuning (resnet18) and from-scratch training (resnet14).

Run: python benchmarks/bench_finetune.py [--n 240] [--epochs 8] [--img-size 128]
Writes benchmarks/results/finetune.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from _common import RESULTS  # (also puts the repository on sys.path)
from posture.checkpoints import bundled_checkpoints
from posture.synth import SynthConfig, generate_dataset
from posture.train import TrainConfig, train


def timed_train(data: Path, **config) -> tuple[float, float, float, int]:
    """Seconds to the end of training, seconds in all (with the shared final evaluation),
    validation accuracy, and training images seen, for one run."""
    cfg = TrainConfig(seed=0, workers=1, **config)
    marks: dict[str, float] = {}

    def on_event(event) -> None:
        if event.kind == "phase" and event.message.startswith("evaluating"):
            marks["trained"] = time.perf_counter()

    start = time.perf_counter()
    result = train(data, cfg, progress=on_event)
    total = time.perf_counter() - start
    seen = len(result.history) * round(len(list(data.glob("*/*.jpg"))) * (1 - cfg.val_split))
    return marks["trained"] - start, total, result.val_report.metrics["accuracy"], seen


def main() -> None:
    """Print and save the measured speed-up and accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=240, help="synthetic images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, args.n, seed=5, config=SynthConfig())
        # The bundled resnet18's backbone stands in for ImageNet weights (none offline here).
        bundled = bundled_checkpoints().get("resnet18")
        init = str(bundled.relative_to(Path.cwd())) if bundled and bundled.is_relative_to(Path.cwd()) else (
            str(bundled) if bundled else "scratch")
        common = dict(arch="resnet18", init=init, freeze=True, augment=False, lr=1e-2,
                      epochs=args.epochs, img_size=args.img_size, batch_size=32, patience=args.epochs)
        cached_s, cached_all, cached_acc, _ = timed_train(data, cache_features=True, **common)
        plain_s, plain_all, plain_acc, _ = timed_train(data, cache_features=False, **common)
        full = dict(epochs=1, img_size=args.img_size, batch_size=32, patience=1)
        ft_s, _, _, ft_seen = timed_train(data, arch="resnet18", init="scratch", freeze=False, **full)
        r14_s, _, _, r14_seen = timed_train(data, arch="resnet14", init="scratch", **full)
    result = {
        "machine": f"{torch.get_num_threads()} torch threads, CPU",
        "images": args.n, "epochs": args.epochs, "img_size": args.img_size, "init": init,
        "frozen_cached_training_s": round(cached_s, 2), "frozen_plain_training_s": round(plain_s, 2),
        "speedup": round(plain_s / cached_s, 2),
        "frozen_cached_total_s": round(cached_all, 2), "frozen_plain_total_s": round(plain_all, 2),
        "speedup_including_final_evaluation": round(plain_all / cached_all, 2),
        "val_acc_cached": cached_acc, "val_acc_plain": plain_acc,
        "full_finetune_resnet18_img_per_s": round(ft_seen / ft_s, 1),
        "scratch_resnet14_img_per_s": round(r14_seen / r14_s, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finetune.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"cached-feature frozen fine-tuning trains {result['speedup']}x faster than the plain loop "
          f"({result['speedup_including_final_evaluation']}x including the final validation report both share; "
          f"val acc {cached_acc:.3f} vs {plain_acc:.3f})")


if __name__ == "__main__":
    main()
