"""Self-describing safetensors checkpoints: round trips and refusals."""

from __future__ import annotations

import json
import os
import pickle
import struct

import pytest
import torch
from safetensors.torch import save_file

from conftest import CLASSES, make_checkpoint
from posture.checkpoints import (
    ModelInfo,
    load_checkpoint,
    read_info,
    record_metrics,
    resolve_checkpoint,
    save_checkpoint,
)
from posture.errors import CheckpointError
from posture.models import build_model, list_models


@pytest.mark.parametrize("arch", list_models())
def test_round_trip_preserves_outputs_bit_for_bit(tmp_path, arch):
    path = make_checkpoint(tmp_path / "m.safetensors", arch)
    torch.manual_seed(0)
    original = build_model(arch, 2)
    for m in original.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    loaded, info = load_checkpoint(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(original.eval()(x), loaded(x))
    assert info.arch == arch and info.class_names == CLASSES and info.input_size == 64
    assert not loaded.training


def test_metadata_round_trip(tmp_path):
    info = ModelInfo(arch="resnet14", class_names=["a", "b", "c"], input_size=96, init="scratch",
                     metrics={"val": {"accuracy": 0.9}}, history=[{"epoch": 1, "val_loss": 0.5}])
    save_checkpoint(tmp_path / "m.safetensors", build_model("resnet14", 3), info)
    back = read_info(tmp_path / "m.safetensors")
    assert back.class_names == ["a", "b", "c"] and back.metrics == {"val": {"accuracy": 0.9}}
    assert back.history == [{"epoch": 1, "val_loss": 0.5}] and back.created_at


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_renamed_safetensors_is_refused_without_running_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": _Boom()}))
    with pytest.raises(CheckpointError, match="not a"):
        load_checkpoint(path)
    torch.save({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "model.safetensors")
    assert not (tmp_path / "PWNED").exists()


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    save_file(build_model("resnet14").state_dict(), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a posture checkpoint"):
        load_checkpoint(tmp_path / "plain.safetensors")


def test_wrong_tensors_for_the_architecture_are_refused(tmp_path):
    info = ModelInfo(arch="resnet18", class_names=CLASSES, input_size=64)
    save_checkpoint(tmp_path / "m.safetensors", build_model("resnet14"), info)
    with pytest.raises(CheckpointError, match="do not match"):
        load_checkpoint(tmp_path / "m.safetensors")


@pytest.mark.parametrize("field,value", [("arch", "vgg"), ("class_names", json.dumps(["only"])),
                                         ("input_size", "99999"), ("class_names", "{not json"),
                                         ("output_stride", "8"), ("output_stride", "sixteen")])
def test_bad_metadata_is_refused(tmp_path, field, value):
    meta = ModelInfo(arch="resnet14", class_names=CLASSES, input_size=64).to_metadata()
    meta[field] = value
    save_file(build_model("resnet14").state_dict(), tmp_path / "m.safetensors", metadata=meta)
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "m.safetensors")


def test_output_stride_is_recorded_and_rebuilt(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet18", 2, output_stride=16).eval()
    info = ModelInfo(arch="resnet18", class_names=CLASSES, input_size=64, output_stride=model.output_stride)
    save_checkpoint(tmp_path / "m.safetensors", model, info)
    loaded, back = load_checkpoint(tmp_path / "m.safetensors")
    x = torch.randn(1, 3, 64, 64)
    assert back.output_stride == 16 and loaded.output_stride == 16
    assert loaded.forward_features(x).shape[-2:] == (4, 4)  # 64 px / 16
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_a_checkpoint_without_an_output_stride_loads_with_the_architectures(tmp_path):
    meta = ModelInfo(arch="resnet18", class_names=CLASSES, input_size=64).to_metadata()
    del meta["output_stride"]  # written before the field existed
    save_file(build_model("resnet18").state_dict(), tmp_path / "m.safetensors", metadata=meta)
    model, info = load_checkpoint(tmp_path / "m.safetensors")
    assert info.output_stride == 0 and model.output_stride == 32


def test_oversized_header_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**40) + b"{}")
    with pytest.raises(CheckpointError, match="header"):
        read_info(path)


def test_failed_save_keeps_the_previous_checkpoint_and_no_temp_files(tmp_path, monkeypatch):
    path = make_checkpoint(tmp_path / "m.safetensors", "resnet14")
    before = path.read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("posture.checkpoints.save_file", disk_full)
    with pytest.raises(OSError):
        save_checkpoint(path, build_model("resnet14"), ModelInfo("resnet14", CLASSES, 64))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_resolve_bundled_name_or_path(checkpoint_dir, monkeypatch, tmp_path):
    from posture.checkpoints import BUNDLED_DIR

    monkeypatch.setenv("POSTURE_CHECKPOINTS", str(tmp_path))  # the CLI's and the app's; the library ignores it
    assert resolve_checkpoint("resnet14", checkpoint_dir) == checkpoint_dir / "resnet14.safetensors"
    assert resolve_checkpoint(checkpoint_dir / "resnet18.safetensors").name == "resnet18.safetensors"
    with pytest.raises(CheckpointError, match="bundled: resnet14, resnet18"):
        resolve_checkpoint("resnet50", checkpoint_dir)
    with pytest.raises(CheckpointError, match="none found in"):
        resolve_checkpoint("resnet14", tmp_path)
    if (BUNDLED_DIR / "resnet14.safetensors").is_file():  # without a folder: the repo's checkpoints/
        assert resolve_checkpoint("resnet14") == BUNDLED_DIR / "resnet14.safetensors"


def test_float16_storage_halves_the_file_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = build_model("resnet14", 2).eval()
    full = save_checkpoint(tmp_path / "a.safetensors", model, ModelInfo("resnet14", CLASSES, 64))
    half = save_checkpoint(tmp_path / "b.safetensors", model,
                           ModelInfo("resnet14", CLASSES, 64, storage_dtype="float16"))
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, info = load_checkpoint(half)
    assert info.storage_dtype == "float16" and loaded.conv1.weight.dtype == torch.float32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=1e-2)
    record_metrics(half, "test", {"accuracy": 1.0})  # re-saving keeps the storage dtype
    assert read_info(half).storage_dtype == "float16" and half.stat().st_size < 0.6 * full.stat().st_size
