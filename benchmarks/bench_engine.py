"""Serving against ONNX Runtime on the same weights: batch 1, no explanation, interleaved in one process.

For each model and input size, four ways to compute every output of the bundled checkpoint
(logits, and the CVA and side-view heads where the model has them) from a preprocessed tensor:

- `onnxruntime`: the whole model exported with torch.onnx.export and run by ONNX Runtime's CPU
  provider, default graph optimisations and thread settings, as many intra-op threads as torch uses;
- `serving_auto`: what `Predictor(precision="auto")` runs on this CPU for a prediction without
  Grad-CAM (`ServingModel.outputs`): bf16 where the CPU has native bf16, else fp32;
- `serving_fp32`: the same with `precision="fp32"`;
- `eager_fp32`: the model called in plain torch.

Each round runs every path in turn, several calls in a row (steady state, as a server serving
one model runs). The ratio is ONNX Runtime's time over serving's, per round (>= 1.0: serving is at least as fast).
Also the fp32 GEMM rate of this CPU (torch.mm, 2048^3) and each path's share of it.

Run: python benchmarks/bench_engine.py [--rounds 30]
Writes benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from _common import benchmark_checkpoint, interleaved, machine, ratio, write_result
from posture.checkpoints import load_checkpoint
from posture.export import AllOutputs, onnx_bytes, output_names
from posture.serving import ServingModel

CASES = (("resnet18", 160), ("resnet18", 224), ("resnet14", 96), ("resnet14", 128))
GEMM_N = 2048


def onnxruntime_model(model, size: int):
    """The whole model in ONNX Runtime with its default optimisations: -> callable(x) -> outputs."""
    import onnxruntime as ort

    data = onnx_bytes(AllOutputs(model).eval(), torch.zeros(1, 3, size, size), output_names(model))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x.numpy()})


def serving_call(model, size: int, precision: str):
    """ServingModel.outputs: what a prediction without Grad-CAM runs after preprocessing."""
    serving = ServingModel(copy.deepcopy(model), size, precision=precision)
    backend = serving.outputs_backend()  # built (and checked) outside the timing
    return serving.outputs, serving.precision, backend


def logits_of(output) -> np.ndarray:
    """The logits of any path's output (ONNX Runtime's list, a ModelOutput, or a tensor)."""
    if isinstance(output, list):
        return np.asarray(output[0], dtype=np.float32)
    return getattr(output, "logits", output).float().numpy()


def one_case(arch: str, size: int, rounds: int, gemm_rate: float) -> dict:
    model, _ = load_checkpoint(benchmark_checkpoint(arch))
    model.eval().requires_grad_(False)
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 1, (1, 3, size, size)).astype(np.float32))
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    flops = counter.get_total_flops()
    ort_run = onnxruntime_model(model, size)
    auto_run, auto_precision, auto_backend = serving_call(model, size, "auto")
    fp32_run, _, fp32_backend = serving_call(model, size, "fp32")

    def eager():
        with torch.inference_mode():
            return model(x)

    candidates = {
        "onnxruntime": lambda: ort_run(x),
        "serving_auto": lambda: auto_run(x),
        "serving_fp32": lambda: fp32_run(x),
        "eager_fp32": eager,
    }
    reference = logits_of(eager())
    diffs = {name: round(float(np.abs(logits_of(run()) - reference).max()), 6)
             for name, run in candidates.items() if name != "eager_fp32"}
    t = interleaved(candidates, rounds=rounds, warmup=3, block=10)
    paths = {
        name: {
            "median_ms": t[name]["median_ms"],
            "gflop_per_s": round(flops / (t[name]["median_ms"] / 1e3) / 1e9, 1),
            "of_fp32_gemm": round(flops / (t[name]["median_ms"] / 1e3) / gemm_rate, 3),
            "onnxruntime_over_this": ratio(t, "onnxruntime", name),
        }
        for name in candidates
    }
    return {
        "model": arch, "input": size, "batch": 1, "gflop_per_forward": round(flops / 1e9, 3),
        "serving_auto": {"precision": auto_precision, "backbone": auto_backend},
        "serving_fp32": {"backbone": fp32_backend},
        "max_logit_diff_vs_eager_fp32": diffs, "paths": paths,
    }


def gemm_fp32_rate(rounds: int = 9) -> float:
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    t = interleaved({"mm": lambda: torch.mm(a, b)}, rounds=rounds, warmup=2)
    return 2 * GEMM_N**3 / (t["mm"]["median_ms"] / 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    rate = gemm_fp32_rate()
    cases = [one_case(arch, size, args.rounds, rate) for arch, size in CASES]
    result = {"machine": machine(), "gemm_fp32_gflop_per_s": round(rate / 1e9, 1), "cases": cases}
    write_result("engine", result)
    print(f"{result['machine']['cpu']} ({result['machine']['cpu_capability']}, "
          f"native bf16: {result['machine']['avx512_bf16']}); fp32 GEMM {rate / 1e9:.0f} GFLOP/s")
    for case in cases:
        print(f"{case['model']} @ {case['input']} px (auto = {case['serving_auto']['precision']}, "
              f"{case['serving_auto']['backbone']}):")
        for name, p in case["paths"].items():
            print(f"  {name:>13}: {p['median_ms']:6.2f} ms  {p['of_fp32_gemm']:5.0%} of fp32 GEMM  "
                  f"ONNX Runtime / this = {p['onnxruntime_over_this']:.2f}")


if __name__ == "__main__":
    main()
