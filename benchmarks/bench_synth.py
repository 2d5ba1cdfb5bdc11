"""Throughput of `generate_dataset` (render + JPEG + disk write) with 1 worker and with 2, side by side.

Run: python benchmarks/bench_synth.py [--n 400] [--size 256]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from posture.synth import SynthConfig, generate_dataset


def images_per_second(n: int, workers: int, config: SynthConfig, seed: int = 0) -> float:
    """Time one `generate_dataset` call into a temporary folder and return pictures per second."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_dataset(tmp, n, seed, config, workers=workers)
        return n / (time.perf_counter() - t0)


def cpu_ms_per_image(n: int, config: SynthConfig, seed: int = 0) -> float:
    """CPU time of one in-process worker per picture (insensitive to other jobs on the machine)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.process_time()
        generate_dataset(tmp, n, seed, config, workers=1)
        return (time.process_time() - t0) * 1000.0 / n


def main() -> None:
    """Print pictures per second for 1 and 2 workers and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--size", type=int, default=256, help="longer image side in pixels")
    args = parser.parse_args()
    config = SynthConfig(size_range=(args.size, args.size))
    images_per_second(16, 1, config, seed=99)  # warm-up: imports, caches
    one = images_per_second(args.n, 1, config)
    two = images_per_second(args.n, 2, config)
    print(f"n={args.n} longer side={args.size}px (render + JPEG + write)")
    print(f"{'workers':>8} {'images/s':>9}")
    print(f"{1:>8} {one:>9.1f}")
    print(f"{2:>8} {two:>9.1f}")
    print(f"speed-up 2 vs 1 workers: {two / one:.2f}x")
    ms = cpu_ms_per_image(args.n // 2, config)
    print(f"CPU time per picture: {ms:.1f} ms -> at most {2000.0 / ms:.0f} images/s on 2 idle cores")
    print(f"load average while measuring: {os.getloadavg()[0]:.2f} (above ~1 means other jobs share the cores)")


if __name__ == "__main__":
    main()
