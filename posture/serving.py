"""Fast serving: a model split at the explained layer into a fast backbone and an fp32 torch head.

The backbone (the conv stages up to the layer Grad-CAM explains) runs on the fastest path
this machine has (`posture.backends`); the head (any later stages, pooling, the classifier
and the auxiliary heads) stays in eager fp32 torch behind an identity layer on which
Captum's Grad-CAM hooks, so one backbone pass gives the outputs and the explanation.
A prediction without Grad-CAM (`ServingModel.outputs`) runs the whole model in ONNX Runtime
when serving fp32 on a CPU, as fast as ONNX Runtime itself (benchmarks/bench_engine.py).

`precision` picks the path on the CPU:

- "fp32": ONNX Runtime (same numbers as eager torch, 2-3x faster), else eager torch;
- "bf16": the TorchScript + oneDNN-fused bfloat16 backbone, ~3x faster again where the CPU
  computes bfloat16 natively (AVX512-BF16 or AMX), within bf16 rounding of fp32;
- "int8": ONNX Runtime on the model statically quantized to int8 (calibrated on synthetic
  side views when first built; 7-bit weights on x86 CPUs without VNNI, whose 8-bit products
  saturate); opt-in: faster than bf16 for resnet18 on the CPU measured, slower for the small
  resnet14 (benchmarks/results/int8.json);
- "auto": "bf16" where the CPU has native bfloat16, else "fp32".

The command line and the app take their default from the POSTURE_PRECISION environment variable
(`PRECISION_ENV`); the library itself reads no environment.

On a GPU the model runs in torch, under autocast ("auto": float16, or bfloat16 where the GPU
has it). Each fast backbone is built on first use (one per layer), checked against eager
fp32 on image-like inputs, and replaced by the next path down (bf16 -> ONNX Runtime fp32
-> eager fp32) if building, checking or later running it raises anything.
"""

from __future__ import annotations

import threading
from typing import Callable, Sequence

import torch
from torch import nn

from posture.backends import (
    EXPORT_GUARD,
    TOLERANCES,
    Backbone,
    calibration_inputs,
    check_backbone,
    eager_backbone,
    fused_bf16_backbone,
    ort_backbone,
    ort_outputs,
    sample_inputs,
)
from posture.cpu import bf16_supported
from posture.devices import autocast_dtype
from posture.errors import UsageError, warn_caller
from posture.models import ModelOutput, PostureNet
from posture.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["PRECISIONS", "PRECISION_ENV", "ServingModel", "bf16_supported", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16", "int8")
PRECISION_ENV = "POSTURE_PRECISION"


def resolve_precision(precision: str | None = None, device: torch.device = torch.device("cpu")) -> str:
    """The concrete precision ("fp32", "bf16"; "fp16" on some GPUs) for a requested one (None: "auto")."""
    requested = (precision or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "int8" and device.type != "cpu":
        raise UsageError(f"int8 serving runs on the CPU (ONNX Runtime); on {device.type} use auto, fp32 or bf16")
    if device.type != "cpu":
        if requested == "auto":
            return "bf16" if autocast_dtype(device) == torch.bfloat16 else "fp16"
        return requested
    if requested == "auto":
        return "bf16" if bf16_supported() else "fp32"
    return requested


class _Head(nn.Module):
    """The model after stage `layer`: the rest of the backbone, pooling and every head.

    An identity layer (`cam`) sits on its input, where Grad-CAM hooks; it shares the
    model's modules (no copies). Returns a ModelOutput.
    """

    def __init__(self, model: PostureNet, layer: str) -> None:
        super().__init__()
        self.cam = nn.Identity()
        self.model = model
        self.layer = layer
        self.last = layer == model.stage_names[-1]

    def forward(self, features: torch.Tensor) -> ModelOutput:
        features = self.cam(features)
        if not self.last:
            features = self.model.forward_after(features, self.layer)
        return self.model.outputs_from_features(features)


class ServingModel:
    """A read-only model served as a fast backbone and an fp32 head, split at any explainable layer.

    `model` must be in eval mode, on `device`, and owned by the caller for serving only (a
    `Predictor` hands over its private copy). Thread-safe: each layer's backbone is built once,
    on first use, under a lock; running it needs no lock.
    """

    def __init__(
        self,
        model: PostureNet,
        input_size: int,
        precision: str | None = None,
        device: torch.device = torch.device("cpu"),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        if not isinstance(model, PostureNet):
            raise TypeError(f"serving needs a PostureNet (see posture.models), got {type(model).__name__}")
        self.model = model
        self.input_size = input_size
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.mean, self.std = tuple(mean), tuple(std)
        self._heads: dict[str, _Head] = {}
        self._backbones: dict[str, Backbone] = {}
        self._whole: dict[str, Backbone | None] = {}  # "outputs" -> the whole-model path, or None; see outputs()
        self._lock = threading.Lock()

    def _once(self, cache: dict, key: str, build: Callable[[], object]):
        """`cache[key]`, made by `build()` on first use under the lock; once made, read without it."""
        if key in cache:
            return cache[key]
        with self._lock:
            if key not in cache:
                cache[key] = build()
            return cache[key]

    def head(self, layer: str) -> _Head:
        """The part of the model after `layer` (built once per layer)."""
        # .eval(): a new Module trains by default; Grad-CAM restores modes
        return self._once(self._heads, layer, lambda: _Head(self.model, layer).eval())

    def backend(self, layer: str) -> str:
        """The name of the path that computes the backbone through `layer` (building it if needed)."""
        return self._backbone(layer).name

    def features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """(B, 3, S, S) fp32 -> (B, C, h, w) fp32 features after `layer` on `device`, no autograd graph."""
        backbone = self._backbone(layer)
        try:
            out = backbone(x)
        except Exception as exc:  # noqa: BLE001 - a fast path may fail in ways we cannot list; eager fp32 cannot
            reference = self._reference(layer)
            if backbone.name == reference.name:
                raise
            warn_caller(f"{backbone.name} failed while serving ({type(exc).__name__}: {exc}); "
                        f"falling back to {reference.name}")
            with self._lock:
                self._backbones[layer] = reference
            out = reference(x)
        return out.to(self.device)

    def outputs(self, x: torch.Tensor) -> ModelOutput:
        """(B, 3, S, S) fp32 -> every output of the model, without Grad-CAM or an autograd graph.

        In fp32 on a CPU the whole model runs in ONNX Runtime (checked against eager fp32 when
        built; if it fails to build, the next two paths; if it fails later, eager fp32); otherwise
        the last stage's backbone and then the head. Call `outputs_backend()` first, outside
        `EXPORT_GUARD`: it builds what this needs.
        """
        whole = self._whole_model()
        if whole is not None:
            try:
                return whole(x)
            except Exception as exc:  # noqa: BLE001 - as in features(): fall back, never fail a prediction
                reference = Backbone("torch-fp32", self._eager_outputs)  # builds nothing: callers may hold EXPORT_GUARD
                if whole.name == reference.name:
                    raise
                warn_caller(f"{whole.name} (whole model) failed while serving ({type(exc).__name__}: {exc}); "
                            f"falling back to {reference.name}")
                with self._lock:
                    self._whole["outputs"] = reference
                return reference(x)
        last = self.model.stage_names[-1]
        features = self.features(x, last)
        with torch.inference_mode():
            return self.head(last)(features)

    def outputs_backend(self) -> str:
        """What computes `outputs()` (building it if needed), e.g. "onnxruntime-fp32" or "torchscript-bf16 + torch head"."""
        whole = self._whole_model()
        return whole.name if whole is not None else f"{self.backend(self.model.stage_names[-1])} + torch head"

    def _eager_outputs(self, x: torch.Tensor) -> ModelOutput:
        with torch.no_grad():
            return self.model.forward_outputs(x)

    def _whole_model(self) -> Backbone | None:
        return self._once(self._whole, "outputs", self._build_whole)

    def _build_whole(self) -> Backbone | None:
        """The first whole-model path that builds and agrees with eager fp32; None: backbone and head."""
        if self.device.type != "cpu":
            return None
        reference = Backbone("torch-fp32", self._eager_outputs)
        for precision in {"fp32": ["fp32"], "int8": ["int8", "fp32"]}.get(self.precision, []):
            calibration = self._calibration() if precision == "int8" else None
            whole = self._checked(precision, lambda: ort_outputs(self.model, self.input_size, calibration),
                                  reference, "the whole model")
            if whole is not None:
                return whole
        return None

    def _checked(self, precision: str, build: Callable[[], Backbone], reference: Backbone, what: str) -> Backbone | None:
        """`build()` if it builds and agrees with `reference` on sample inputs, else None (with a warning)."""
        inputs = sample_inputs(self.input_size, self.mean, self.std)
        try:
            candidate = build()
            with EXPORT_GUARD.running():  # the check runs the eager model: not while another thread exports
                check_backbone(candidate, reference, inputs, TOLERANCES[precision])
            return candidate
        except Exception as exc:  # noqa: BLE001 - any failure of a fast path means: use the next one
            warn_caller(f"serving {what} without the {precision} fast path ({type(exc).__name__}: {exc})")
            return None

    def _reference(self, layer: str) -> Backbone:
        return eager_backbone(self.model, layer)

    def _candidates(self, layer: str) -> list[tuple[str, Callable[[], Backbone]]]:
        """(precision, builder) of each path to try, fastest first; the last is always eager torch."""
        if self.device.type != "cpu":
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
            return [("fp32", lambda: eager_backbone(self.model, layer, autocast=dtype))]
        size = self.input_size
        ort_fp32 = ("fp32", lambda: ort_backbone(self.model, layer, size))
        eager = ("fp32", lambda: self._reference(layer))
        if self.precision == "bf16":
            return [("bf16", lambda: fused_bf16_backbone(self.model, layer, size)), ort_fp32, eager]
        if self.precision == "int8":
            return [("int8", lambda: ort_backbone(self.model, layer, size, self._calibration())), ort_fp32, eager]
        return [ort_fp32, eager]

    def _calibration(self) -> torch.Tensor:
        """int8's calibration inputs: 32 letterboxed synthetic side views (rendered once per size)."""
        return calibration_inputs(self.input_size, self.mean, self.std)

    def _backbone(self, layer: str) -> Backbone:
        return self._once(self._backbones, layer, lambda: self._build(layer))

    def _build(self, layer: str) -> Backbone:
        """The first candidate that builds and agrees with eager fp32 on sample inputs."""
        candidates = self._candidates(layer)
        if len(candidates) == 1:  # a GPU: torch is the path (autocast is torch's own, not checked here)
            return candidates[0][1]()
        reference = self._reference(layer)
        for precision, build in candidates[:-1]:
            backbone = self._checked(precision, build, reference, layer)
            if backbone is not None:
                return backbone
        return reference
