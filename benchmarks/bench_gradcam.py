"""Grad-CAM cost: predict with explanation vs predict alone, per model and precision, interleaved.

Run: python benchmarks/bench_gradcam.py [--rounds 15]
Writes benchmarks/results/gradcam.json.
"""

from __future__ import annotations

import argparse

from _common import benchmark_checkpoint, interleaved, machine, phone_jpeg, ratio, write_result
from posture.images import load_image
from posture.predict import Predictor


def main() -> None:
    """Print and save the explanation's overhead for resnet14 @ 128 px and resnet18 @ 224 px."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    image = load_image(phone_jpeg(seed=1))  # the working image a 12 MP photo becomes (1000x750)
    rows = {}
    for arch in ("resnet14", "resnet18"):
        for precision in ("fp32", "bf16"):
            p = Predictor.from_checkpoint(benchmark_checkpoint(arch), precision=precision)
            t = interleaved({"explain": lambda: p.predict(image), "plain": lambda: p.predict(image, explain=False)},
                            rounds=args.rounds, warmup=2)
            overhead = round(ratio(t, "explain", "plain") - 1.0, 3)
            rows[f"{arch}/{p.info.input_size}px/{precision}"] = {
                "explain_ms": t["explain"]["median_ms"], "plain_ms": t["plain"]["median_ms"],
                "overhead": overhead, "target_met": overhead <= 0.15,
            }
            print(f"{arch:>9} {p.info.input_size}px {precision}: predict {t['plain']['median_ms']:7.1f} ms, "
                  f"+explain {t['explain']['median_ms']:7.1f} ms, overhead {overhead:+.1%}")
    write_result("gradcam", {"machine": machine(), "image": f"{image.width}x{image.height} PIL (decoded)",
                             "results": rows})


if __name__ == "__main__":
    main()
