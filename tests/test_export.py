"""ONNX export: the file gives the torch model's outputs (logits within 1e-4), carries its metadata,
takes any batch size, and leaves the caller's model as it was; the CLI writes it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import CLASSES, person_like
from posture.__main__ import main
from posture.checkpoints import ModelInfo, load_checkpoint
from posture.errors import UsageError
from posture.export import export_onnx
from posture.models import build_model, list_models
from posture.predict import Predictor


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _inputs(predictor: Predictor, n: int = 3) -> torch.Tensor:
    """(n + 1, 3, S, S): letterboxed pictures as the predictor prepares them, and one noise image."""
    pictures = [predictor.prepare(person_like(160 + 20 * i, 120, seed=i))[1] for i in range(n)]
    noise = torch.randn(1, 3, predictor.info.input_size, predictor.info.input_size,
                        generator=torch.Generator().manual_seed(0))
    return torch.cat([*pictures, noise])


@pytest.mark.parametrize("arch", list_models())
def test_exported_logits_match_the_torch_model(tmp_path, checkpoint_dir, arch):
    model, info = load_checkpoint(checkpoint_dir / f"{arch}.safetensors")
    path = export_onnx(model, info, tmp_path / f"{arch}.onnx")
    session = _session(path)
    assert [o.name for o in session.get_outputs()] == ["logits"]
    x = _inputs(Predictor(model, info, precision="fp32"))
    with torch.no_grad():
        want = model(x).numpy()
    (batch,) = session.run(None, {"image": x.numpy()})
    singles = np.concatenate([session.run(None, {"image": x[i : i + 1].numpy()})[0] for i in range(len(x))])
    assert batch.shape == want.shape == (len(x), len(CLASSES))
    assert np.abs(batch - want).max() <= 1e-4
    assert np.abs(singles - want).max() <= 1e-4  # the batch dimension is dynamic
    assert np.abs(want).max() > 1e-3  # logits that say something: the tolerance is a real check


def test_metadata_describes_the_model(tmp_path, checkpoint_dir):
    model, info = load_checkpoint(checkpoint_dir / "resnet14.safetensors")
    info.cva_threshold = 48.0
    path = export_onnx(model, info, tmp_path / "sub" / "m.onnx")  # the folder is made
    meta = _session(path).get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == info.class_names == CLASSES
    assert int(meta["input_size"]) == info.input_size
    assert json.loads(meta["mean"]) == pytest.approx(info.mean) and json.loads(meta["std"]) == pytest.approx(info.std)
    assert json.loads(meta["outputs"]) == ["logits"] and json.loads(meta["heads"]) == []
    assert meta["arch"] == "resnet14" and float(meta["cva_threshold"]) == 48.0
    onnx.checker.check_model(onnx.load(str(path)))
    image = _session(path).get_inputs()[0]
    assert image.name == "image" and image.shape[1:] == [3, info.input_size, info.input_size]


@pytest.mark.parametrize("groups", [1, 3])
def test_extra_heads_are_outputs_and_match(tmp_path, groups):
    torch.manual_seed(3)
    model = build_model("resnet14", len(CLASSES)).add_heads(["cva", "side_view", "gate"]).eval()
    x = torch.randn(12, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # fit the gate tightly, so it decides some side-view logits
        pooled = model.pool(model.forward_features(torch.randn(40, 3, 64, 64)))
        model.heads["gate"].fit(pooled[:30], torch.arange(30) % 2, pooled[30:], quantile=0.5,
                                groups=torch.arange(30) % groups)  # exported from a batch of one, run on 12
        want = model.forward_outputs(x)
        features = model.pool(model.forward_features(x))
        gated = model.heads["gate"](features) < model.heads["side_view"](features)[:, 0]
    assert gated.any() and not gated.all()  # both the head and the gate decide some outputs
    info = ModelInfo("resnet14", list(CLASSES), 64, heads=model.head_names)
    session = _session(export_onnx(model, info, tmp_path / "heads.onnx"))
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits", "cva_deg", "side_view_logit"]
    got = dict(zip(names, session.run(None, {"image": x.numpy()})))
    assert np.abs(got["logits"] - want.logits.numpy()).max() <= 1e-4
    assert np.allclose(got["cva_deg"], want.cva_deg.numpy(), atol=1e-3)
    assert np.allclose(got["side_view_logit"], want.side_view_logit.numpy(), rtol=1e-4, atol=1e-3)
    assert json.loads(session.get_modelmeta().custom_metadata_map["outputs"]) == names


def test_the_callers_model_is_left_as_it_was(tmp_path):
    model = build_model("resnet14", len(CLASSES)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, ModelInfo("resnet14", list(CLASSES), 32), tmp_path / "m.onnx")
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_refusals(tmp_path):
    model = build_model("resnet14", len(CLASSES))
    with pytest.raises(UsageError, match=r"\.onnx"):
        export_onnx(model, ModelInfo("resnet14", list(CLASSES), 32), tmp_path / "m.safetensors")
    with pytest.raises(UsageError, match="3 classes"):
        export_onnx(build_model("resnet14", 3), ModelInfo("resnet14", list(CLASSES), 32), tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="posture models"):
        export_onnx(torch.nn.Linear(2, 2), ModelInfo("resnet14", list(CLASSES), 32), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_cli_export(tmp_path, checkpoint_dir, capsys):
    out = tmp_path / "resnet14.onnx"
    assert main(["export", str(checkpoint_dir / "resnet14.safetensors"), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"onnx": str(out), "bytes": out.stat().st_size} and out.stat().st_size > 100_000
    assert json.loads(_session(out).get_modelmeta().custom_metadata_map["class_names"]) == CLASSES
    assert main(["export", str(checkpoint_dir / "resnet14.safetensors"), "--out", str(tmp_path / "x.bin")]) == 2
    assert ".onnx" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2


def test_exports_while_a_model_trains_in_another_thread(tmp_path, monkeypatch):
    """torch.export patches nn.Module.__call__ process-wide: training steps must not run inside an export."""
    import threading

    from PIL import Image

    from posture.train import TrainConfig, train

    rng = np.random.default_rng(0)
    for name, colour in [("normal", (190, 60, 60)), ("turtle_neck", (60, 60, 190))]:
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(24):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (24, 24, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    cfg = TrainConfig(arch="resnet14", init="scratch", epochs=30, patience=30, batch_size=2, img_size=24,
                      workers=0, precision="fp32")
    outcome: dict = {}
    epoch_done, stop = threading.Event(), threading.Event()

    def progress(event) -> None:
        if event.kind == "epoch":
            epoch_done.set()

    def run() -> None:
        try:
            outcome["result"] = train(tmp_path / "data", cfg, progress=progress, cancel=stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc

    trainer = threading.Thread(target=run)
    trainer.start()
    model = build_model("resnet14", num_classes=2).eval()
    info = ModelInfo(arch="resnet14", class_names=["normal", "turtle_neck"], input_size=24)
    exports = 0
    while trainer.is_alive() and exports < 3:
        export_onnx(model, info, tmp_path / f"m{exports}.onnx")
        exports += 1
    epoch_done.wait(timeout=120)  # then one finished epoch, and the remaining ones are not needed
    stop.set()
    trainer.join()
    assert "error" not in outcome, outcome.get("error")
    assert exports >= 2 and outcome["result"].model is not None


def test_the_readme_onnx_example_gives_the_predictors_probabilities(tmp_path, capsys):
    """The README's onnxruntime snippet (its own letterbox and softmax) agrees with `Predictor`."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", (root / "README.md").read_text(), re.S)
                  if "onnxruntime" in b]
    onnx_path = tmp_path / "bundled.onnx"
    assert main(["export", "resnet14", "--out", str(onnx_path)]) == 0  # the bundled model: its probabilities vary
    photo = root / "examples" / "normal_cva54_silhouette.jpg"  # a picture the bundled model is unsure of
    code = snippet.replace('"resnet18.onnx"', repr(str(onnx_path))).replace(
        '"examples/turtle_neck_cva35_flat.jpg"', repr(str(photo)))
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    shown = ast.literal_eval(capsys.readouterr().out.strip().splitlines()[-1])
    want = Predictor.from_checkpoint("resnet14").predict(photo).probabilities
    assert 0.05 < want["normal"] < 0.95  # not saturated, so the comparison means something
    assert shown == pytest.approx(want, abs=0.02)
