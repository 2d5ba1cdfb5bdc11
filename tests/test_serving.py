"""Serving: precision choice, each fast path against eager fp32 (with Captum), fallbacks on injected faults,
thread safety, and the caller's model left as it was."""

from __future__ import annotations

import inspect
import io
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import posture.backends as backends
import posture.serving as serving
from conftest import CLASSES, make_checkpoint, person_like
from posture.backends import Backbone
from posture.checkpoints import ModelInfo, load_checkpoint
from posture.errors import UsageError
from posture.explain import grad_cam
from posture.models import ModelOutput, build_model, list_models
from posture.predict import Predictor
from posture.serving import bf16_supported, resolve_precision
from posture.synth import SynthConfig, render_indexed


@pytest.fixture(scope="module")
def checkpoints_128(tmp_path_factory):
    """Checkpoints at 128 px, so resnet18's last stage has a 4x4 map worth correlating."""
    folder = tmp_path_factory.mktemp("serving")
    return {arch: make_checkpoint(folder / f"{arch}.safetensors", arch, 128, seed=7) for arch in list_models()}


def _pictures(n: int = 3) -> list[Image.Image]:
    """Synthetic side-view pictures (not square: they are letterboxed), plus the blob picture."""
    config = SynthConfig(size_range=(160, 200))
    return [Image.open(io.BytesIO(render_indexed(11, i, config)[0])) for i in range(n)] + [person_like(seed=2)]


def _agree(a, b, least: float = 0.99) -> float | None:
    """Two explanations of the same class: both empty, or Pearson >= `least`; -> the Pearson (None if empty)."""
    assert a.target == b.target and a.cam_empty == b.cam_empty
    if a.cam_empty:
        return None
    r = float(np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1])
    assert r >= least, r
    return r


def test_precision_choice(monkeypatch):
    monkeypatch.setenv(serving.PRECISION_ENV, "fp32")  # read by the CLI and the app, never by the library
    monkeypatch.setattr(serving, "bf16_supported", lambda: True)
    assert resolve_precision() == resolve_precision(None) == "bf16"
    assert resolve_precision("auto") == resolve_precision(" BF16 ") == "bf16"
    monkeypatch.setattr(serving, "bf16_supported", lambda: False)
    assert resolve_precision() == resolve_precision("auto") == "fp32"
    with pytest.raises(UsageError, match="auto, fp32, bf16"):
        resolve_precision("fp8")
    assert resolve_precision(" INT8 ") == "int8"  # opt-in only: never what auto picks
    assert resolve_precision("auto", torch.device("cuda")) in ("bf16", "fp16")  # no GPU needed to choose


def test_auto_serves_fp32_through_onnxruntime_without_native_bf16(monkeypatch, checkpoint_dir):
    monkeypatch.delenv(serving.PRECISION_ENV, raising=False)
    monkeypatch.setattr(serving, "bf16_supported", lambda: False)
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    assert predictor.precision == "fp32" and predictor.backend() == "onnxruntime-fp32"


def test_auto_serves_bf16_where_the_cpu_has_it(checkpoint_dir):
    if not bf16_supported():
        pytest.skip("this CPU has no native bfloat16; the fp32 choice is tested above")
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors", precision="auto")
    assert predictor.precision == "bf16" and predictor.backend() == "torchscript-bf16"


_LAYERS = [(arch, layer) for arch in list_models() for layer in build_model(arch).cam_layers]


@pytest.mark.parametrize("arch, layer", _LAYERS)
def test_fp32_path_equals_the_whole_model_with_captum(checkpoint_dir, arch, layer):
    predictor = Predictor.from_checkpoint(checkpoint_dir / f"{arch}.safetensors", precision="fp32", mirror=False)
    assert predictor.backend(layer) == "onnxruntime-fp32"
    model, _ = load_checkpoint(checkpoint_dir / f"{arch}.safetensors")  # an independent eager copy
    for img in _pictures(2):
        _, x, box = predictor.prepare(img)
        reference = grad_cam(model, x, layer=model.cam_layer(layer))  # the whole model, hooks on that stage
        pred = predictor.predict(img, layer=layer)
        assert pred.layer == layer
        probs = torch.softmax(reference.logits, dim=1)[0].tolist()
        assert list(pred.probabilities.values()) == pytest.approx(probs, abs=1e-5)
        expected = box.unletterbox(reference.cams[0])
        assert expected.max() > 0
        assert np.allclose(pred.heatmap, expected / expected.max(), atol=1e-4)


@pytest.mark.parametrize("arch", list_models())
def test_bf16_agrees_with_fp32(checkpoints_128, arch, prob_tol=0.02, least=0.98):
    exact = Predictor.from_checkpoint(checkpoints_128[arch], precision="fp32")
    fast = Predictor.from_checkpoint(checkpoints_128[arch], precision="bf16")
    assert fast.precision == "bf16"
    if bf16_supported():
        assert fast.backend() == "torchscript-bf16"
    pearson = []
    images = _pictures()
    batch = fast.predict_batch(images)
    for img, b in zip(images, batch):
        a, single = exact.predict(img), fast.predict(img)
        assert list(single.probabilities.values()) == pytest.approx(list(a.probabilities.values()), abs=prob_tol)
        assert list(b.probabilities.values()) == pytest.approx(list(single.probabilities.values()), abs=1e-4)
        for target in CLASSES:  # each class, named
            r = _agree(exact.predict(img, target=target), fast.predict(img, target=target), least)
            pearson += [] if r is None else [r]
    assert len(pearson) >= 4  # most explanations had something to show, so the agreement was tested
    assert np.median(pearson) >= 0.95


class _Fault(Exception):
    """Anything at all: not a RuntimeError, so a narrow `except` would let it through."""


def _broken(kind: str):
    """A backbone builder that fails the way `kind` says."""
    def build(model, layer, size, *args, **kwargs):
        if kind == "build":
            raise _Fault("the engine could not be built")
        if kind == "disagrees":
            return Backbone("broken", lambda x: torch.zeros_like(backends.eager_backbone(model, layer)(x)))
        if kind == "nan":
            return Backbone("broken", lambda x: backends.eager_backbone(model, layer)(x) * float("nan"))
        real = backends.eager_backbone(model, layer)
        calls = []

        def run(x):  # "runtime": agrees when checked, then fails while serving
            calls.append(1)
            if len(calls) > 2 * x.shape[0] + 1:
                raise _Fault("the engine died")
            return real(x)

        return Backbone("broken", run)

    return build


@pytest.mark.parametrize("kind", ["build", "disagrees", "nan", "runtime"])
@pytest.mark.parametrize("precision, engine", [("fp32", "ort_backbone"), ("bf16", "fused_bf16_backbone")])
def test_a_fast_path_that_fails_in_any_way_is_replaced(monkeypatch, checkpoint_dir, kind, precision, engine):
    exact = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision="fp32")
    img = person_like(seed=5)
    a = exact.predict(img)
    monkeypatch.setattr(serving, engine, _broken(kind))
    fast = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision=precision)
    with pytest.warns(RuntimeWarning, match="broken|could not be built|died"):
        b = fast.predict(img)
        b = fast.predict(img)  # "runtime" fails on this call, after passing the build check
    assert fast.backend() != "broken"
    assert list(b.probabilities.values()) == pytest.approx(list(a.probabilities.values()), abs=0.01)
    _agree(a, b)


def test_without_onnxruntime_fp32_is_served_eagerly(monkeypatch, checkpoint_dir):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors", precision="fp32")
    with pytest.warns(RuntimeWarning, match="fp32 fast path"):
        assert predictor.backend() == "torch-fp32"
    assert predictor.predict(person_like()).cam is not None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_first_calls_from_many_threads_build_once_and_agree(monkeypatch, checkpoint_dir, precision):
    builds = []
    for name in ("ort_backbone", "fused_bf16_backbone"):
        real = getattr(serving, name)

        def counted(*args, _real=real, **kwargs):
            builds.append(args[1])
            return _real(*args, **kwargs)

        monkeypatch.setattr(serving, name, counted)
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet18.safetensors", precision=precision)
    images = [person_like(seed=s) for s in range(6)]
    layers = ["layer3", "layer4"] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:  # every thread's first call races for the builds
        results = list(pool.map(lambda a: predictor.predict(a[0], layer=a[1]), zip(images, layers)))
    assert sorted(builds) == ["layer3", "layer4"]
    for img, layer, r in zip(images, layers, results):
        again = predictor.predict(img, layer=layer)
        assert r.probabilities == pytest.approx(again.probabilities, abs=1e-6)
        assert np.allclose(r.heatmap, again.heatmap, atol=1e-5)


def test_the_callers_model_is_left_untouched():
    model = build_model("resnet14").train()
    model.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    predictor = Predictor(model, ModelInfo("resnet14", CLASSES, 32), precision="fp32")
    predictor.predict(person_like(), layer="layer2")
    assert predictor.model is not model and model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not predictor.model.training  # and the served copy stays in eval mode after Grad-CAM
    assert not any(p.requires_grad for p in predictor.model.parameters())


def test_from_checkpoint_serves_the_loaded_model_without_copying(monkeypatch, checkpoint_dir):
    import types

    import posture.predict as predict

    def no_copy(obj, memo=None):
        raise AssertionError("from_checkpoint copied the model it had just loaded")

    monkeypatch.setattr(predict, "copy", types.SimpleNamespace(deepcopy=no_copy))
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors", precision="fp32")
    assert predictor.predict(person_like()).label in CLASSES


def test_only_posture_models_are_served():
    with pytest.raises(TypeError, match="PostureNet"):
        serving.ServingModel(nn.Conv2d(3, 4, 3), 32)


def test_the_head_runs_on_the_served_model():
    """The head shares the served model's modules: no stale copy of the classifier."""
    predictor = Predictor(build_model("resnet14"), ModelInfo("resnet14", CLASSES, 32), precision="fp32")
    assert predictor.serving.head("layer3").model.fc is predictor.model.fc
    assert predictor.serving.head("layer2").model is predictor.model


def test_the_fuser_switch_is_restored_after_building():
    was_on = torch.jit.onednn_fusion_enabled()
    model = build_model("resnet14", 2).eval()
    features = backends.fused_bf16_backbone(model, "layer3", 64)(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, 64, 16, 16) and features.dtype == torch.float32
    assert torch.jit.onednn_fusion_enabled() == was_on


def test_the_build_check_uses_pictures_and_compares_batches():
    inputs = backends.sample_inputs(64)
    assert inputs.shape == (4, 3, 64, 64)
    flat = [int((p[0].std(dim=1) < 1e-3).sum() + (p[0].std(dim=0) < 1e-3).sum()) for p in inputs[:3]]
    assert all(p.std() > 0.1 for p in inputs) and max(flat) >= 2  # pictures, one at least letterboxed
    model = build_model("resnet14").eval()
    reference = backends.eager_backbone(model, "layer2")
    calls = []

    def only_batch_one_right(x):  # right one image at a time, wrong for a batch: the check must see it
        calls.append(x.shape[0])
        return reference(x) if x.shape[0] == 1 else torch.zeros_like(reference(x))

    with pytest.raises(backends.BackboneMismatch):
        backends.check_backbone(Backbone("b1", only_batch_one_right), reference, inputs, 0.01)


@pytest.mark.parametrize("fmt, pil_format", [("jpeg", "JPEG"), ("png", "PNG"), ("JPG", "JPEG")])
def test_overlay_bytes_decode_to_the_overlay(checkpoint_dir, fmt, pil_format):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    pred = predictor.predict(person_like(200, 120))
    data = pred.overlay_bytes(0.5, fmt)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.format == pil_format and decoded.size == (200, 120)
    diff = np.abs(np.asarray(decoded.convert("RGB"), dtype=int) - np.asarray(pred.overlay(0.5), dtype=int))
    assert diff.mean() < (3.0 if pil_format == "JPEG" else 1e-9)
    with pytest.raises(ValueError, match="jpeg, png"):
        pred.overlay_bytes(0.5, "gif")


def _model_with_heads(arch: str = "resnet14", fitted_gate: bool = True) -> tuple[nn.Module, ModelInfo]:
    torch.manual_seed(3)
    model = build_model(arch, num_classes=len(CLASSES), heads=["cva", "side_view", "gate"]).eval()
    if fitted_gate:
        gate = model.heads["gate"]
        gate.means.normal_()
        gate.threshold.fill_(40.0)
        gate.scale.fill_(2.0)
    return model, ModelInfo(arch=arch, class_names=list(CLASSES), input_size=64, heads=["cva", "side_view", "gate"])


@pytest.mark.parametrize("fitted_gate", [True, False])
def test_explain_false_runs_the_whole_model_in_onnxruntime(fitted_gate):
    model, info = _model_with_heads(fitted_gate=fitted_gate)
    predictor = Predictor(model, info, precision="fp32")
    img = person_like(seed=1)
    plain = predictor.predict(img, explain=False, layer="layer1")
    assert predictor.serving.outputs_backend() == "onnxruntime-fp32"
    assert predictor.serving._backbones == {}  # no backbone (and no torch head) was needed for it
    explained = predictor.predict(img, layer="layer1")
    assert plain.probabilities == pytest.approx(explained.probabilities, abs=1e-5)
    assert plain.cva_deg == pytest.approx(explained.cva_deg, abs=1e-3)
    assert plain.side_view == explained.side_view
    assert plain.side_view_prob == pytest.approx(explained.side_view_prob, abs=1e-5)


def test_bf16_predictions_without_grad_cam_run_the_backbone_then_the_head():
    model, info = _model_with_heads()
    predictor = Predictor(model, info, precision="bf16")
    predictor.predict(person_like(), explain=False)
    assert predictor.serving.outputs_backend().endswith("+ torch head")
    assert set(predictor.serving._backbones) == {"layer3"}


def _broken_whole(kind: str):
    def build(model, size, calibration=None):
        real = backends.ort_outputs(model, size, calibration)
        if kind == "build":
            raise _Fault("the engine could not be built")
        if kind == "disagrees":
            return Backbone("broken", lambda x: ModelOutput(*(None if v is None else v + 1.0
                                                              for v in vars(real(x)).values())))
        calls = []

        def run(x):  # agrees when checked (a batch, then each of the 4 sample inputs), then fails
            calls.append(1)
            if len(calls) > 1 + len(backends.sample_inputs(size)):
                raise _Fault("the engine died")
            return real(x)

        return Backbone("broken", run)

    return build


@pytest.mark.parametrize("kind", ["build", "disagrees", "runtime"])
def test_a_whole_model_path_that_fails_in_any_way_is_replaced(monkeypatch, kind):
    model, info = _model_with_heads()
    img = person_like(seed=4)
    want = Predictor(model, info, precision="fp32").predict(img, explain=False)
    monkeypatch.setattr(serving, "ort_outputs", _broken_whole(kind))
    predictor = Predictor(model, info, precision="fp32")
    with pytest.warns(RuntimeWarning, match="broken|could not be built|died"):
        predictor.predict(img, explain=False)
        got = predictor.predict(img, explain=False)  # "runtime" fails on this call
    # not built or not agreeing: the backbone and head paths; failing after the check: eager torch
    want_backend = "torch-fp32" if kind == "runtime" else "onnxruntime-fp32 + torch head"
    assert predictor.serving.outputs_backend() == want_backend
    assert got.probabilities == pytest.approx(want.probabilities, abs=1e-5)
    assert got.cva_deg == pytest.approx(want.cva_deg, abs=1e-3)
    assert got.side_view_prob == pytest.approx(want.side_view_prob, abs=1e-5)


def test_a_thread_lock_is_not_held_while_serving(checkpoint_dir):
    """Built backbones run without the build lock, so one slow build does not stall other layers' requests."""
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors", precision="fp32")
    predictor.predict(person_like())
    predictor.predict(person_like(), explain=False)
    with predictor.serving._lock:  # a build in progress elsewhere
        done = threading.Event()
        threading.Thread(target=lambda: (predictor.predict(person_like()), predictor.predict(person_like(), explain=False),
                                         done.set())).start()
        assert done.wait(20)


def test_an_export_waits_for_running_model_calls_and_new_calls_wait_for_it():
    import threading
    import time

    from posture.backends import ExportGuard

    guard, order = ExportGuard(), []
    release = threading.Event()

    def call():
        with guard.running():
            order.append("call started")
            release.wait(5)
            order.append("call ended")

    def export():
        with guard.exporting():
            order.append("export")

    def late_call():
        with guard.running():
            order.append("late call")

    first = threading.Thread(target=call)
    first.start()
    while "call started" not in order:
        time.sleep(0.01)
    exporter = threading.Thread(target=export)
    exporter.start()
    time.sleep(0.2)
    late = threading.Thread(target=late_call)  # arrives while the export waits: goes after it
    late.start()
    time.sleep(0.2)
    assert order == ["call started"]
    release.set()
    for t in (first, exporter, late):
        t.join(5)
    assert order == ["call started", "call ended", "export", "late call"]


def test_int8_serves_a_quantized_model_and_explains_with_the_fp32_head(checkpoints_128):
    exact = Predictor.from_checkpoint(checkpoints_128["resnet18"], precision="fp32")
    quick = Predictor.from_checkpoint(checkpoints_128["resnet18"], precision="int8")
    assert quick.precision == "int8"
    for picture in _pictures(3):
        a, b = exact.predict(picture, explain=False), quick.predict(picture, explain=False)
        diff = max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities)
        assert diff <= 0.1, diff
    assert quick.serving.outputs_backend() == "onnxruntime-int8"
    explained = quick.predict(_pictures(1)[0], layer="layer3")
    assert quick.backend("layer3") == "onnxruntime-int8" and explained.cam is not None and explained.cam.max() == 1.0
    with pytest.raises(UsageError, match="int8 serving runs on the CPU"):
        resolve_precision("int8", torch.device("cuda"))


@pytest.mark.parametrize("flags, reduce", [
    (["avx2"], True),  # AVX2 alone: uint8 x int8 sums can saturate, so weights keep 7 bits
    (["avx2", "avx512f"], True),
    (["avx2", "avx_vnni"], False),
    (["avx2", "avx512f", "avx512_vnni", "avx512_bf16"], False),
    (["avx2", "avx512f", "amx_int8"], False),
    ([], False),  # not x86 (or flags unknown): full 8-bit weights
])
def test_int8_weights_use_seven_bits_only_on_x86_without_vnni(flags, reduce):
    assert backends.int8_reduce_range(flags) is reduce


def test_int8_quantizes_with_the_range_this_cpu_needs(monkeypatch):
    from onnxruntime import quantization

    seen = []
    real = quantization.quantize_static

    def spy(*args, **kwargs):
        seen.append(kwargs.get("reduce_range"))
        return real(*args, **kwargs)

    monkeypatch.setattr(quantization, "quantize_static", spy)
    model = build_model("resnet14", num_classes=2).eval()
    for flags, reduce in ((["avx2"], True), (["avx2", "avx512f", "avx512_vnni"], False)):
        monkeypatch.setattr(backends, "cpu_flags", lambda flags=flags: flags)
        backends.ort_backbone(model, "layer3", 32, calibration=torch.rand(2, 3, 32, 32))
        assert seen[-1] is reduce


def test_int8_that_cannot_be_built_serves_fp32(monkeypatch, checkpoints_128):
    def no_quantizer(data, calibration):
        raise _Fault("no quantizer here")

    monkeypatch.setattr(backends, "_quantized", no_quantizer)
    predictor = Predictor.from_checkpoint(checkpoints_128["resnet14"], precision="int8")
    with pytest.warns(RuntimeWarning, match="int8 fast path.*no quantizer"):
        predictor.predict(person_like(), explain=False)
    assert predictor.serving.outputs_backend() == "onnxruntime-fp32"


def test_a_refused_fast_path_warns_at_the_callers_line(monkeypatch, checkpoint_dir):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # the fp32 fast path cannot be built
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors", precision="fp32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = inspect.currentframe().f_lineno + 1
        predictor.predict(person_like())
    refused = [w for w in caught if "fp32 fast path" in str(w.message)]
    assert refused, [str(w.message) for w in caught]
    assert {(w.filename, w.lineno) for w in refused} == {(__file__, line)}
