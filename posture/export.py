"""ONNX export: a posture model as one self-describing `.onnx` file any ONNX runtime can serve.

The file takes `image` (B, 3, S, S) float32, letterboxed and normalised as `posture.preprocess`
does, and gives `logits` (B, K) and, when the model has those heads, `cva_deg` (B,) and
`side_view_logit` (B,). Its metadata (`metadata_props`) carries what is needed to use it
without posture: class names, input size, mean/std, heads, output names, CVA threshold, version.
Graphs are captured with `torch.export` (the exporter torch maintains), batch size dynamic.
Serving uses `onnx_bytes` to run backbones in ONNX Runtime.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from posture._version import __version__
from posture.backends import EXPORT_GUARD
from posture.checkpoints import ModelInfo
from posture.errors import UsageError
from posture.models import PostureNet

__all__ = ["AllOutputs", "export_onnx", "onnx_bytes", "onnx_metadata", "output_names"]

_MAX_BATCH = 4096


def onnx_bytes(module: nn.Module, example: torch.Tensor, outputs: Sequence[str], input_name: str = "image") -> bytes:
    """`module` (in eval mode, one tensor in) as a serialised ONNX model with a dynamic batch dimension.

    Runs alone in the process (`EXPORT_GUARD`): model calls elsewhere wait for it, and it for them.
    """
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    with EXPORT_GUARD.exporting():
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=[input_name], output_names=list(outputs),
            dynamic_shapes=({0: batch},), verbose=False,
        )
    return program.model_proto.SerializeToString()


class AllOutputs(nn.Module):
    """A PostureNet's logits and every auxiliary head's output, as a tuple (what ONNX outputs are)."""

    def __init__(self, model: PostureNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_outputs(image)
        return tuple(v for v in (out.logits, out.cva_deg, out.side_view_logit) if v is not None)


def output_names(model: PostureNet) -> list[str]:
    """The exported file's output names, in order: logits, then cva_deg / side_view_logit if present."""
    heads = model.head_names  # a "gate" head has no output of its own: it lowers side_view_logit
    return ["logits", *(["cva_deg"] if "cva" in heads else []), *(["side_view_logit"] if "side_view" in heads else [])]


def onnx_metadata(info: ModelInfo, outputs: Sequence[str]) -> dict[str, str]:
    """The metadata_props an exported file carries: JSON for lists, plain text for the rest."""
    return {
        "producer": "posture",
        "posture_version": __version__,
        "arch": info.arch,
        "class_names": json.dumps(list(info.class_names)),
        "input_size": str(info.input_size),
        "mean": json.dumps(list(info.mean)),
        "std": json.dumps(list(info.std)),
        "heads": json.dumps(list(info.heads)),
        "outputs": json.dumps(list(outputs)),
        "cva_threshold": str(info.cva_threshold),
        "input_layout": "NCHW float32, RGB scaled to [0, 1], letterboxed (padded with the mean) and normalised",
    }


def export_onnx(model: nn.Module, info: ModelInfo, out: str | Path) -> Path:
    """Write `model` (with the metadata of `info`) to `out` as ONNX, atomically; returns the path.

    The caller's model is left as it was (a copy in eval mode is exported).
    """
    import onnx  # imported on first use: only exporting needs it

    if not isinstance(model, PostureNet):
        raise UsageError(f"only posture models can be exported, got {type(model).__name__}")
    if info.num_classes != model.fc.out_features:
        raise UsageError(f"the model has {model.fc.out_features} classes but info names {info.num_classes}")
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"{out}: an ONNX file name ends in .onnx")
    wrapper = AllOutputs(copy.deepcopy(model).float().cpu()).eval().requires_grad_(False)
    example = torch.zeros(1, 3, info.input_size, info.input_size)
    outputs = output_names(model)
    proto = onnx.load_from_string(onnx_bytes(wrapper, example, outputs))
    onnx.helper.set_model_props(proto, onnx_metadata(info, outputs))
    proto.doc_string = f"posture {info.arch} ({', '.join(info.class_names)}), input {info.input_size} px"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        Path(tmp).write_bytes(proto.SerializeToString())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
