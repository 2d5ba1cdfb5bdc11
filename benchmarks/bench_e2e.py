"""End to end: 12 MP phone JPEG file -> verdict + Grad-CAM overlay bytes for the browser.

Ours (`Predictor.predict` + `Prediction.overlay_bytes`, as served: averaged with the mirror image)
against the same on the picture alone (`mirror=False`), against the naive tutorial pipeline
(full decode, Resize((S, S)) + ToTensor + Normalize, forward, a separate Captum
LayerGradCam call, matplotlib colormap blended over the full-resolution photo, PNG), and
against the model's bare fp32 forward at batch 1, all interleaved in one process.

Run: python benchmarks/bench_e2e.py [--arch resnet18] [--rounds 5]
Writes benchmarks/results/e2e_<arch>.json.
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from _common import benchmark_checkpoint, interleaved, machine, phone_jpeg, ratio, write_result
from posture.checkpoints import load_checkpoint
from posture.images import load_image
from posture.predict import Predictor


def naive_pipeline(model: torch.nn.Module, info, path: Path) -> tuple[str, bytes]:
    """The tutorial way: every step at full resolution, two forwards, PNG at PIL's defaults."""
    import matplotlib
    from captum.attr import LayerAttribution, LayerGradCam
    from torchvision import transforms as T

    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")  # upright, or the verdict is on a sideways photo
    tf = T.Compose([T.Resize((info.input_size, info.input_size)), T.ToTensor(), T.Normalize(info.mean, info.std)])
    x = tf(img)[None]
    with torch.no_grad():
        logits = model(x)
    label = int(logits.argmax(1))
    attr = LayerGradCam(model, model.cam_layer(info.cam_layer or None)).attribute(x, target=label)
    cam = LayerAttribution.interpolate(attr, (img.height, img.width), "bilinear")[0, 0].detach()
    cam = torch.relu(cam)
    cam = (cam / cam.max()).numpy() if cam.max() > 0 else cam.numpy()
    heat = matplotlib.colormaps["jet"](cam)[..., :3]  # (H, W, 3) float64
    blended = 0.5 * np.asarray(img, dtype=np.float64) / 255.0 + 0.5 * heat
    buf = io.BytesIO()
    Image.fromarray((blended * 255).astype(np.uint8)).save(buf, "PNG")
    return info.class_names[label], buf.getvalue()


def main() -> None:
    """Print and save the end-to-end ratios and the per-stage costs of our pipeline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=3, help="photos whose verdicts are compared")
    args = parser.parse_args()
    ckpt = benchmark_checkpoint(args.arch)
    ours = Predictor.from_checkpoint(ckpt)  # precision "auto"
    exact = Predictor.from_checkpoint(ckpt, precision="fp32")
    single = Predictor.from_checkpoint(ckpt, mirror=False)
    naive_model, info = load_checkpoint(ckpt)  # as loaded: parameters still require grad
    bare_model, _ = load_checkpoint(ckpt)
    x = torch.randn(1, 3, info.input_size, info.input_size)

    with tempfile.TemporaryDirectory() as tmp:
        photos = []
        for seed in range(args.photos):
            path = Path(tmp) / f"phone{seed}.jpg"
            path.write_bytes(phone_jpeg(seed=seed, forward=bool(seed % 2)))
            photos.append(path)
        path = photos[0]

        def ours_jpeg() -> tuple[str, bytes]:
            pred = ours.predict(path)
            return pred.label, pred.overlay_bytes(0.5, "jpeg")

        def ours_png() -> tuple[str, bytes]:
            pred = ours.predict(path)
            return pred.label, pred.overlay_bytes(0.5, "png")

        def ours_fp32() -> tuple[str, bytes]:
            pred = exact.predict(path)
            return pred.label, pred.overlay_bytes(0.5, "jpeg")

        def ours_single_view() -> tuple[str, bytes]:
            pred = single.predict(path)
            return pred.label, pred.overlay_bytes(0.5, "jpeg")

        def bare_forward() -> None:
            with torch.inference_mode():
                bare_model(x)

        verdicts = []
        for p in photos:
            mine, naive = ours.predict(p), naive_pipeline(naive_model, info, p)[0]
            verdicts.append({"photo": p.name, "ours": mine.label, "ours_fp32": exact.predict(p).label,
                             "naive": naive, "ours_confidence": round(mine.confidence, 4)})
        vs_naive = interleaved({"naive": lambda: naive_pipeline(naive_model, info, path), "ours_jpeg": ours_jpeg},
                               rounds=args.rounds)
        vs_forward = interleaved({"bare_forward_fp32": bare_forward, "ours_jpeg": ours_jpeg, "ours_png": ours_png,
                                  "ours_fp32_jpeg": ours_fp32, "ours_single_view_jpeg": ours_single_view},
                                 rounds=3 * args.rounds)
        # Where our time goes: one stage at a time, on the same photo.
        image = load_image(path, max_side=max(800, info.input_size))
        pred = ours.predict(path)
        overlay = pred.overlay(0.5)
        from posture.overlay import encode_image

        stages = interleaved({
            "decode_12mp_reduced": lambda: load_image(path, max_side=max(800, info.input_size)),
            # the least any pipeline reading this file can spend: JPEG draft at its smallest scale (1/8)
            "decode_floor_1_8": lambda: load_image(path, max_side=info.input_size),
            "letterbox_normalise": lambda: ours.prepare(image),
            "predict_from_pil": lambda: ours.predict(image),
            "overlay_blend": lambda: pred.overlay(0.5),
            "encode_jpeg_q90": lambda: encode_image(overlay, "jpeg"),
            "encode_png_level1": lambda: encode_image(overlay, "png"),
            "bare_forward_fp32": bare_forward,
        }, rounds=3 * args.rounds)
        size_jpeg, size_png = len(ours_jpeg()[1]), len(ours_png()[1])
        naive_png = len(naive_pipeline(naive_model, info, path)[1])

    result = {
        "machine": machine(),
        "arch": args.arch, "input_size": info.input_size, "precision": ours.precision,
        "checkpoint": str(ckpt), "photo": "4000x3000 JPEG q90, EXIF orientation 6 (stored 3000x4000)",
        "working_image": f"{image.width}x{image.height}",
        "verdicts": verdicts,
        "same_verdict": all(v["ours"] == v["naive"] for v in verdicts),
        "speedup_vs_naive": ratio(vs_naive, "naive", "ours_jpeg"),
        "ours_over_bare_forward": round(1 / ratio(vs_forward, "bare_forward_fp32", "ours_jpeg"), 2),
        "ours_png_over_bare_forward": round(1 / ratio(vs_forward, "bare_forward_fp32", "ours_png"), 2),
        "ours_fp32_over_bare_forward": round(1 / ratio(vs_forward, "bare_forward_fp32", "ours_fp32_jpeg"), 2),
        "ours_single_view_over_bare_forward": round(
            1 / ratio(vs_forward, "bare_forward_fp32", "ours_single_view_jpeg"), 2),
        "mirror_cost": ratio(vs_forward, "ours_jpeg", "ours_single_view_jpeg"),  # > 1: averaging costs this much
        "decode_floor_over_bare_forward": ratio(stages, "decode_floor_1_8", "bare_forward_fp32"),
        # decoding at the smallest scale plus the prediction itself (letterbox, forward, Grad-CAM), no overlay:
        # what no pipeline that decodes this file and explains its verdict can go below
        "floor_over_bare_forward": round(
            (stages["decode_floor_1_8"]["median_ms"] + stages["predict_from_pil"]["median_ms"])
            / stages["bare_forward_fp32"]["median_ms"], 2),
        "bytes": {"ours_jpeg": size_jpeg, "ours_png": size_png, "naive_png": naive_png},
        "timings_vs_naive": vs_naive, "timings_vs_forward": vs_forward, "stages": stages,
    }
    for block in ("timings_vs_naive", "timings_vs_forward", "stages"):
        for v in result[block].values():
            v.pop("times_ms")
    write_result(f"e2e_{args.arch}", result)
    print(f"{args.arch} @ {info.input_size}px, precision {ours.precision}")
    print(f"  ours vs naive: {result['speedup_vs_naive']}x faster; same verdict on {len(verdicts)} photos: "
          f"{result['same_verdict']} {[(v['ours'], v['naive']) for v in verdicts]}")
    print(f"  decoding alone, at the smallest draft scale: {result['decode_floor_over_bare_forward']}x bare fp32 "
          f"forward; with the prediction: {result['floor_over_bare_forward']}x")
    print(f"  ours (jpeg) = {result['ours_over_bare_forward']}x bare fp32 forward; png: "
          f"{result['ours_png_over_bare_forward']}x; fp32 path: {result['ours_fp32_over_bare_forward']}x; "
          f"picture alone: {result['ours_single_view_over_bare_forward']}x (averaging costs {result['mirror_cost']}x)")
    for name, v in stages.items():
        print(f"  {name:>22}: {v['median_ms']:8.1f} ms")


if __name__ == "__main__":
    main()
