"""ResNet-18 at batch 1, 224 px: achieved FLOP/s of each execution path against this CPU's GEMM rate.

FLOPs are counted with torch.utils.flop_counter.FlopCounterMode; the limit is torch.mm of
two large square matrices, fp32 and bf16, measured interleaved with the forwards. Also
checks the bf16 serving path against fp32 on synthetic images: verdict agreement,
accuracy and Grad-CAM Pearson correlation.

Run: python benchmarks/bench_efficiency.py [--rounds 15] [--n 500] [--compile]
Writes benchmarks/results/efficiency.json.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import benchmark_checkpoint, interleaved, machine, ratio, synthetic_set, write_result
from posture.checkpoints import load_checkpoint
from posture.predict import Predictor
from posture.backends import ort_backbone
from posture.serving import ServingModel

GEMM_N = 2048


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward (a multiply-add counts 2)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops()


def agreement(ckpt: Path, n: int, cams: int = 30) -> dict:
    """fp32 vs bf16 Predictor on `n` synthetic pictures: agreement, accuracies, Grad-CAM Pearson."""
    exact = Predictor.from_checkpoint(ckpt, precision="fp32")
    fast = Predictor.from_checkpoint(ckpt, precision="bf16")
    folder = synthetic_set(n, seed=2024)
    paths = sorted(folder.glob("*/*.jpg"))
    same = right_exact = right_fast = 0
    max_prob_diff = 0.0
    pearson = []
    for i, path in enumerate(paths):
        explain = i < cams
        a, b = exact.predict(path, explain=explain), fast.predict(path, explain=explain)
        same += a.label == b.label
        right_exact += a.label == path.parent.name
        right_fast += b.label == path.parent.name
        max_prob_diff = max(max_prob_diff, max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities))
        if explain and not (a.cam_empty or b.cam_empty):
            pearson.append(float(np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1]))
    return {
        "images": len(paths), "verdict_agreement": round(same / len(paths), 4),
        "accuracy_fp32": round(right_exact / len(paths), 4), "accuracy_bf16": round(right_fast / len(paths), 4),
        "accuracy_gap_points": round(100 * abs(right_exact - right_fast) / len(paths), 2),
        "max_probability_diff": round(max_prob_diff, 4),
        "gradcam_pearson_min": round(min(pearson), 5) if pearson else None,
        "gradcam_pearson_median": round(float(np.median(pearson)), 5) if pearson else None,
        "gradcam_images": len(pearson),
    }


def main() -> None:
    """Print and save FLOP/s per path, the GEMM limits, and bf16-vs-fp32 agreement."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--n", type=int, default=500, help="synthetic images for the agreement check")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (inductor, bf16)")
    args = parser.parse_args()
    ckpt = benchmark_checkpoint("resnet18")
    model, info = load_checkpoint(ckpt)
    model.eval().requires_grad_(False)
    x = torch.randn(1, 3, 224, 224)
    flops = count_flops(model, x)
    xcl = x.contiguous(memory_format=torch.channels_last)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    last = model.stage_names[-1]
    serving = ServingModel(copy.deepcopy(model), 224, precision="bf16")  # built for this input size
    serving.features(x, last)  # build the fused backbone outside the timing
    onnxruntime_fp32 = ort_backbone(model, last, 224)  # ONNX Runtime's CPU provider on the same weights

    def autocast_cl() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model_cl(xcl)

    def serving_bf16() -> None:
        with torch.inference_mode():
            serving.head(last)(serving.features(x, last))

    a32, b32 = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    candidates = {
        "fp32_eager": lambda: model(x),
        "fp32_channels_last": lambda: model_cl(xcl),
        "bf16_autocast_channels_last": autocast_cl,
        "fp32_onnxruntime": lambda: onnxruntime_fp32(x),
        "bf16_serving": serving_bf16,  # what Predictor(precision="auto") runs here: frozen + oneDNN-fused
        "gemm_fp32": lambda: torch.mm(a32, b32),
        "gemm_bf16": lambda: torch.mm(a16, b16),
    }
    compile_s = None
    if args.compile:
        compiled = torch.compile(copy.deepcopy(model_cl))
        start = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            compiled(xcl)
        compile_s = round(time.perf_counter() - start, 1)

        def compiled_bf16() -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                compiled(xcl)

        candidates["bf16_torch_compile"] = compiled_bf16
    with torch.inference_mode():
        t = interleaved(candidates, rounds=args.rounds, warmup=2)
    gemm_flops = 2 * GEMM_N**3
    rate = {k: (gemm_flops if k.startswith("gemm") else flops) / (v["median_ms"] / 1e3) for k, v in t.items()}
    paths = {}
    for k in candidates:
        if k.startswith("gemm"):
            continue
        paths[k] = {
            "median_ms": t[k]["median_ms"], "gflop_per_s": round(rate[k] / 1e9, 1),
            "speedup_vs_fp32_eager": ratio(t, "fp32_eager", k),
            "of_fp32_gemm": round(rate[k] / rate["gemm_fp32"], 3),
            "of_bf16_gemm": round(rate[k] / rate["gemm_bf16"], 3),
        }
    result = {
        "machine": machine(), "model": "resnet18", "batch": 1, "input": 224, "gflop_per_forward": round(flops / 1e9, 3),
        "gemm": {"n": GEMM_N, "fp32_gflop_per_s": round(rate["gemm_fp32"] / 1e9, 1),
                 "bf16_gflop_per_s": round(rate["gemm_bf16"] / 1e9, 1)},
        "paths": paths, "torch_compile_first_call_s": compile_s,
        "agreement": agreement(ckpt, args.n) if args.n else None,
    }
    write_result("efficiency", result)
    print(f"resnet18 b1 224px: {flops / 1e9:.2f} GFLOP; GEMM fp32 {rate['gemm_fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {rate['gemm_bf16'] / 1e9:.0f} GFLOP/s")
    for k, v in paths.items():
        print(f"  {k:>28}: {v['median_ms']:7.1f} ms {v['gflop_per_s']:6.1f} GFLOP/s  x{v['speedup_vs_fp32_eager']:.2f} "
              f"vs fp32 eager, {v['of_fp32_gemm']:.0%} of fp32 GEMM, {v['of_bf16_gemm']:.0%} of bf16 GEMM")
    if result["agreement"]:
        print("  bf16 vs fp32:", result["agreement"])


if __name__ == "__main__":
    main()
