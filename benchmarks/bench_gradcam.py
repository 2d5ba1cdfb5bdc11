"""Grad-CAM cost: predict with explanation vs predict alone, per model and precision, interleaved.

Each model is explained at its checkpoint's layer, in fp32, and in bf16 where the CPU has it
natively. Everything after that layer (the head) runs in eager fp32 torch, forward and backward,
for Captum; a prediction without explanation runs the whole model on the serving path. So the
overhead grows with how early the layer is.

Run: python benchmarks/bench_gradcam.py [--rounds 15]
Writes benchmarks/results/gradcam.json.
"""

from __future__ import annotations

import argparse

import torch

from _common import benchmark_checkpoint, interleaved, machine, phone_jpeg, ratio, write_result
from posture.cpu import bf16_supported
from posture.explain import grad_cam
from posture.images import load_image
from posture.predict import Predictor


def main() -> None:
    """Print and save the explanation's overhead for each benchmark model at its own input size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    image = load_image(phone_jpeg(seed=1))  # the working image a 12 MP photo becomes (1000x750)
    rows = {}
    for arch in ("resnet14", "resnet18"):
        for precision in ("fp32", "bf16") if bf16_supported() else ("fp32",):
            p = Predictor.from_checkpoint(benchmark_checkpoint(arch), precision=precision)
            head = p.serving.head(p.cam_layer)
            features = p.serving.features(p.prepare(image)[1], p.cam_layer)

            def head_only() -> None:
                with torch.inference_mode():
                    head(features)

            t = interleaved({"explain": lambda: p.predict(image), "plain": lambda: p.predict(image, explain=False),
                             # Captum's LayerGradCam on the head alone vs the head alone: its fixed cost per call
                             "captum_on_head": lambda: grad_cam(head, features, layer=head.cam),
                             "head_only": head_only},
                            rounds=args.rounds, warmup=2)
            overhead = round(ratio(t, "explain", "plain") - 1.0, 3)
            floor = round((t["captum_on_head"]["median_ms"] - t["head_only"]["median_ms"]) / t["plain"]["median_ms"], 3)
            rows[f"{arch}/{p.info.input_size}px/{precision}"] = {
                "layer": p.cam_layer, "head_forward_ms": t["head_only"]["median_ms"],
                "explain_ms": t["explain"]["median_ms"], "plain_ms": t["plain"]["median_ms"],
                "overhead": overhead, "target_met": overhead <= 0.15,
                "captum_call_ms": round(t["captum_on_head"]["median_ms"] - t["head_only"]["median_ms"], 3),
                "captum_floor_overhead": floor,
            }
            print(f"{arch:>9} {p.info.input_size}px {precision} at {p.cam_layer}: predict {t['plain']['median_ms']:7.2f} ms, "
                  f"+explain {t['explain']['median_ms']:7.2f} ms, overhead {overhead:+.1%} "
                  f"(Captum's call alone: {floor:+.1%})")
    write_result("gradcam", {"machine": machine(), "image": f"{image.width}x{image.height} PIL (decoded)",
                             "results": rows})


if __name__ == "__main__":
    main()
