"""Serving with precision="int8" (ONNX Runtime static quantization, QDQ) against fp32 and auto.

For each bundled model: accuracy of int8 and fp32 serving on synthetic pictures the int8
calibration did not see (it calibrates on its own 32 renderings), and batch-1 latency of a
prediction without explanation (`ServingModel.outputs`) for fp32, int8 and auto, interleaved in
one process. int8 stays an option where it is at least 1.3x faster than fp32 (what auto runs on
CPUs without native bf16) with accuracy within 0.5 points; it is never what auto picks.

Run: python benchmarks/bench_int8.py [--n 400] [--rounds 20]
Writes benchmarks/results/int8.json.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch

from _common import benchmark_checkpoint, interleaved, machine, ratio, synthetic_set, write_result
from posture.checkpoints import load_checkpoint
from posture.images import load_image
from posture.preprocess import to_input
from posture.serving import ServingModel


def inputs(folder: Path, size: int, mean, std) -> tuple[np.ndarray, list[str]]:
    """(N, 3, S, S) letterboxed, normalised pictures of a synthetic set and their classes."""
    paths = sorted(folder.glob("*/*.jpg"))
    xs = [to_input(load_image(p), size, mean, std)[0].numpy() for p in paths]
    return np.stack(xs), [p.parent.name for p in paths]


def one_model(arch: str, n: int, rounds: int) -> dict:
    model, info = load_checkpoint(benchmark_checkpoint(arch))
    model.eval().requires_grad_(False)
    size = info.input_size
    served = {p: ServingModel(copy.deepcopy(model), size, precision=p, mean=info.mean, std=info.std)
              for p in ("fp32", "int8", "auto")}
    backends = {p: s.outputs_backend() for p, s in served.items()}  # built (int8: quantized) outside the timing
    x, labels = inputs(synthetic_set(n, seed=2024), size, info.mean, info.std)
    names = info.class_names
    verdicts = {}
    for p in ("fp32", "int8"):
        logits = torch.cat([served[p].outputs(torch.from_numpy(x[i : i + 32])).logits for i in range(0, len(x), 32)])
        verdicts[p] = [names[k] for k in logits.argmax(1).tolist()]
    acc = {p: round(sum(v == t for v, t in zip(verdicts[p], labels)) / len(x), 4) for p in verdicts}
    one = torch.from_numpy(x[:1])
    t = interleaved({p: (lambda s=s: s.outputs(one)) for p, s in served.items()}, rounds=rounds, warmup=3, block=10)
    return {
        "model": arch, "input": size, "images": len(x), "backends": backends,
        "accuracy_fp32": acc["fp32"], "accuracy_int8": acc["int8"],
        "accuracy_gap_points": round(100 * abs(acc["fp32"] - acc["int8"]), 2),
        "verdict_agreement": round(sum(a == b for a, b in zip(verdicts["fp32"], verdicts["int8"])) / len(x), 4),
        "ms": {k: v["median_ms"] for k, v in t.items()},
        "int8_speedup_vs_fp32": ratio(t, "fp32", "int8"),
        "int8_speedup_vs_auto": ratio(t, "auto", "int8"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=400, help="synthetic pictures scored")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = [one_model(arch, args.n, args.rounds) for arch in ("resnet14", "resnet18")]
    for r in rows:
        r["kept"] = r["accuracy_gap_points"] <= 0.5 and r["int8_speedup_vs_fp32"] >= 1.3
    write_result("int8", {"machine": machine(), "rule": "int8 is kept as an option where it is >= 1.3x faster "
                          "than fp32 (auto's path on CPUs without native bf16) with accuracy within 0.5 points",
                          "models": rows})
    for r in rows:
        print(f"{r['model']} @ {r['input']} px: accuracy fp32 {r['accuracy_fp32']:.1%} int8 {r['accuracy_int8']:.1%} "
              f"(agreement {r['verdict_agreement']:.1%}); ms {r['ms']} ({r['backends']}); int8 "
              f"x{r['int8_speedup_vs_fp32']} vs fp32, x{r['int8_speedup_vs_auto']} vs auto; "
              f"kept: {r['kept']}")


if __name__ == "__main__":
    main()
