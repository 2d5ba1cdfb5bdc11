"""Ways to run a model's backbone (its conv stages up to a layer), each checked against eager fp32 when built.

- `torch-fp32`: eager torch on the model itself, the exact reference; also the GPU path
  (under autocast there).
- `onnxruntime-fp32`: the backbone exported with `torch.export` and run by ONNX Runtime's
  CPU provider: the same numbers as eager fp32 (relative error ~1e-7), 2-3x faster on the
  CPUs measured (benchmarks/results). `ort_outputs` runs the whole model (pooling and every
  head too) this way, for predictions without Grad-CAM.
- `onnxruntime-int8`: the same graph statically quantized by ONNX Runtime (QDQ, per-channel
  int8 weights, uint8 activations) on synthetic side views; opt-in (`precision="int8"`).
- `torchscript-bf16`: a bfloat16 channels-last copy traced and frozen with TorchScript
  (batch norm folded) and compiled by the oneDNN Graph fuser (conv + bias + add + ReLU
  fused, weights pre-packed). Only worth it where the CPU computes bfloat16 natively
  (AVX512-BF16 or AMX): there it is ~3x faster than ONNX Runtime fp32. The fuser specialises
  on the input shape, so images go through one at a time. TorchScript is deprecated (and
  unsupported on Python 3.14): if building it fails for any reason, serving falls back.

Every fast backbone is compared with the reference on a few letterboxed synthetic pictures
(and one noise image) when it is built; `BackboneMismatch` is raised if they disagree.
"""

from __future__ import annotations

import copy
import threading
import warnings
from contextlib import contextmanager
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from posture.cpu import cpu_flags
from posture.models import ModelOutput, PostureNet

__all__ = [
    "EXPORT_GUARD",
    "TOLERANCES",
    "Backbone",
    "BackboneMismatch",
    "calibration_inputs",
    "check_backbone",
    "eager_backbone",
    "fused_bf16_backbone",
    "ort_backbone",
    "ort_outputs",
    "sample_inputs",
]

# Largest relative L2 error of the feature maps (or of each output) over the check inputs, per
# precision. int8's is a sanity check against a broken build (features err by 2-10% on the
# bundled models); its accuracy is measured in benchmarks/bench_int8.py.
TOLERANCES = {"fp32": 1e-4, "bf16": 0.03, "int8": 0.3}

# These deprecation notices concern our internal use of TorchScript, not the user's code;
# matched narrowly (message and module) so the user's own torch.jit calls still warn.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.(trace|trace_method|freeze)` is deprecated",
                        category=FutureWarning, module=r"torch\.jit\._(trace|freeze)")


class BackboneMismatch(RuntimeError):
    """A fast backbone whose features differ from the eager fp32 model's beyond its tolerance."""


class Backbone:
    """(B, 3, S, S) float32 -> (B, C, h, w) float32 features on the input's device, no autograd graph."""

    def __init__(self, name: str, run: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.name = name
        self._run = run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def __repr__(self) -> str:
        return f"Backbone({self.name!r})"


class _Features(nn.Module):
    """`model.forward_features` through `layer`, as a module with one tensor in and one out."""

    def __init__(self, model: PostureNet, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(image, upto=self.layer)


def eager_backbone(model: PostureNet, layer: str, autocast: torch.dtype | None = None) -> Backbone:
    """The model itself, eagerly (fp32, or under autocast on a GPU): the reference every other path is checked against."""
    device = next(model.parameters()).device

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
            return model.forward_features(x.to(device), upto=layer).float()

    where = "" if device.type == "cpu" else f"@{device.type}"
    return Backbone(f"torch-{_DTYPE_NAMES[autocast]}{where}", run)


_DTYPE_NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def _session_options():
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # follows OMP_NUM_THREADS / torch.set_num_threads
    options.inter_op_num_threads = 1
    # No busy-waiting after a run: the torch head, other requests or a training job need the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only; they surface as exceptions anyway
    return options


class ExportGuard:
    """Keeps `torch.export` apart from every other model call in the process.

    While `torch.export` traces a module it patches `nn.Module.__call__` for the whole process, so
    a forward pass running in another thread at that moment is caught by the tracer and fails
    (and the export with it). Model calls on request paths hold `running()` (many at once);
    an export holds `exporting()` (alone, and waiting calls let it go first).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self._exporting = False
        self._waiting = 0  # exports waiting: new calls wait behind them

    @contextmanager
    def running(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._exporting and not self._waiting)
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    @contextmanager
    def exporting(self):
        with self._cond:
            self._waiting += 1
            self._cond.wait_for(lambda: not self._exporting and not self._running)
            self._waiting -= 1
            self._exporting = True
        try:
            yield
        finally:
            with self._cond:
                self._exporting = False
                self._cond.notify_all()


EXPORT_GUARD = ExportGuard()


def _ort_session(module: nn.Module, input_size: int, outputs: Sequence[str], calibration: torch.Tensor | None):
    """`module` exported to ONNX (under EXPORT_GUARD) in an ONNX Runtime CPU session; statically
    quantized to int8 first (QDQ: per-channel int8 weights, uint8 activations) when `calibration`
    inputs (N, 3, S, S) are given."""
    import onnxruntime as ort

    from posture.export import onnx_bytes

    data = onnx_bytes(module, torch.zeros(1, 3, input_size, input_size), outputs)
    if calibration is not None:
        data = _quantized(data, calibration)
    return ort.InferenceSession(data, _session_options(), providers=["CPUExecutionProvider"])


def int8_reduce_range(flags: Sequence[str]) -> bool:
    """Whether int8 weights should use 7 bits on a CPU with these flags: on x86 without VNNI
    (AVX2 or AVX-512 alone) ONNX Runtime's uint8 x int8 products can saturate, which costs
    accuracy; its quantizer's `reduce_range` avoids that."""
    return bool({"avx2", "avx512f"} & set(flags)) and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


def _quantized(data: bytes, calibration: torch.Tensor) -> bytes:
    import logging
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(calibration[i : i + 1].numpy() for i in range(len(calibration)))

        def get_next(self) -> dict | None:
            x = next(self.items, None)
            return None if x is None else {"image": x}

    with tempfile.TemporaryDirectory(prefix="posture-int8-") as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(data)
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # its advice to pre-process the graph is logged at WARNING on the root logger
        try:
            quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                            reduce_range=int8_reduce_range(cpu_flags()))
        finally:
            root.setLevel(level)
        return target.read_bytes()


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


def ort_backbone(model: PostureNet, layer: str, input_size: int, calibration: torch.Tensor | None = None) -> Backbone:
    """The backbone through `layer` exported to ONNX and run by ONNX Runtime's CPU provider:
    fp32, or int8 when `calibration` inputs are given."""
    session = _ort_session(_Features(model, layer).eval(), input_size, ["features"], calibration)

    def run(x: torch.Tensor) -> torch.Tensor:
        (out,) = session.run(None, {"image": _numpy(x)})
        return torch.from_numpy(out)

    return Backbone("onnxruntime-fp32" if calibration is None else "onnxruntime-int8", run)


def ort_outputs(model: PostureNet, input_size: int, calibration: torch.Tensor | None = None) -> Backbone:
    """The whole model (logits and every auxiliary head) in ONNX Runtime (fp32, or int8 when
    `calibration` inputs are given): -> ModelOutput.

    What a prediction without Grad-CAM runs: nothing is left to torch, so no torch op (with
    its own thread pool) runs between two ONNX Runtime calls.
    """
    from posture.export import AllOutputs, output_names

    names = output_names(model)
    session = _ort_session(AllOutputs(model).eval(), input_size, names, calibration)

    def run(x: torch.Tensor) -> ModelOutput:
        values = dict(zip(names, (torch.from_numpy(o) for o in session.run(None, {"image": _numpy(x)}))))
        return ModelOutput(values["logits"], values.get("cva_deg"), values.get("side_view_logit"))

    return Backbone("onnxruntime-fp32" if calibration is None else "onnxruntime-int8", run)


# The oneDNN fuser switch is process-wide: every TorchScript build runs alone, with the switch
# on only inside this lock, so no other build's warm-up is fused by accident.
_JIT_LOCK = threading.Lock()


def fused_bf16_backbone(model: PostureNet, layer: str, input_size: int) -> Backbone:
    """A bfloat16, channels-last, frozen TorchScript copy of the backbone, compiled by the oneDNN Graph fuser."""
    bf16 = torch.bfloat16
    copy_ = _Features(copy.deepcopy(model), layer).eval().requires_grad_(False)
    copy_ = copy_.to(dtype=bf16, memory_format=torch.channels_last)
    example = torch.zeros(1, 3, input_size, input_size, dtype=bf16).contiguous(memory_format=torch.channels_last)
    with _JIT_LOCK, torch.no_grad():
        was_on = torch.jit.onednn_fusion_enabled()
        torch.jit.enable_onednn_fusion(True)
        try:
            fused = torch.jit.freeze(torch.jit.trace(copy_, example))
            for _ in range(3):  # the profiling executor profiles, then fuses for this shape: pay it here
                fused(example)
        finally:
            torch.jit.enable_onednn_fusion(was_on)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            xb = x.to(bf16).contiguous(memory_format=torch.channels_last)
            # The fused graph is batch-1, and its output may live in a buffer the next call reuses:
            # each image's features are copied (to fp32) before the next image runs.
            outs = [fused(xb[i : i + 1]).float() for i in range(xb.shape[0])]
        # Made outside inference mode (a normal tensor Grad-CAM may use), and in the default
        # layout: the eager head's convolutions run about 2x slower on a channels-last input.
        return torch.cat(outs).contiguous()

    return Backbone("torchscript-bf16", run)


@lru_cache(maxsize=8)
def _samples(size: int, mean: tuple[float, ...], std: tuple[float, ...], n: int) -> torch.Tensor:
    from posture.images import load_image
    from posture.preprocess import to_input
    from posture.synth import SynthConfig, render_indexed

    config = SynthConfig(size_range=(max(96, size), max(96, size) + 64))
    pictures = [to_input(load_image(render_indexed(2024, i, config)[0]), size, mean, std)[0] for i in range(n - 1)]
    noise = torch.randn(3, size, size, generator=torch.Generator().manual_seed(0))
    return torch.stack([*pictures, noise])  # (n, 3, S, S)


def sample_inputs(
    size: int, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225), n: int = 4
) -> torch.Tensor:
    """(n, 3, size, size) model inputs: n - 1 letterboxed synthetic side-view pictures and one noise image."""
    return _samples(size, tuple(mean), tuple(std), n).clone()


def _tensors(out: torch.Tensor | ModelOutput) -> dict[str, torch.Tensor]:
    if isinstance(out, ModelOutput):
        return {k: v for k, v in vars(out).items() if v is not None}
    return {"features": out}


def calibration_inputs(
    size: int, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225), n: int = 32
) -> torch.Tensor:
    """(n, 3, size, size) letterboxed synthetic side-view pictures: int8's calibration set."""
    return _samples(size, tuple(mean), tuple(std), n + 1)[:-1].clone()  # without the noise image


def check_backbone(candidate: Backbone, reference: Backbone, inputs: torch.Tensor, tolerance: float) -> float:
    """Compare two backbones (or whole models) on `inputs`, one image at a time and as a batch; -> relative error.

    Raises BackboneMismatch if the outputs or their shapes differ, a value is not finite where
    the reference's is, or the relative L2 error of any output exceeds `tolerance`.
    """
    want = _tensors(reference(inputs))
    worst = 0.0
    for got in (_tensors(candidate(inputs)), _tensors(_cat([candidate(x[None]) for x in inputs]))):
        if got.keys() != want.keys():
            raise BackboneMismatch(f"{candidate.name}: outputs {sorted(got)}, expected {sorted(want)}")
        for name, w in want.items():
            g = got[name].float().cpu()
            w = w.float().cpu()
            if g.shape != w.shape:
                raise BackboneMismatch(f"{candidate.name}: {name} {tuple(g.shape)}, expected {tuple(w.shape)}")
            finite = torch.isfinite(w)
            if not (bool(torch.isfinite(g[finite]).all()) and bool((g[~finite] == w[~finite]).all())):
                raise BackboneMismatch(f"{candidate.name}: {name} is not finite")
            error = float((g[finite] - w[finite]).norm() / w[finite].norm().clamp_min(1e-12))
            if not error <= tolerance:
                raise BackboneMismatch(f"{candidate.name}: {name}: relative error {error:.2e} "
                                       f"over the tolerance {tolerance:.0e}")
            worst = max(worst, error)
    return worst


def _cat(outs: list) -> torch.Tensor | ModelOutput:
    if isinstance(outs[0], ModelOutput):
        return ModelOutput(**{f: None if v is None else torch.cat([getattr(o, f) for o in outs])
                              for f, v in vars(outs[0]).items()})
    return torch.cat(outs)
