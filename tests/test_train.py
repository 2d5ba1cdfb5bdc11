"""The fine-tuning routine: learning, cached features, cancel, atomic checkpoints, reproducibility."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from posture.checkpoints import load_checkpoint, read_info
from posture.errors import DatasetError, UsageError
from posture.train import TrainConfig, train


def _colour_dataset(root: Path, per_class: int = 12, size=(40, 30), seed=0) -> Path:
    """Two classes a small CNN separates in a few steps: reddish vs bluish noise."""
    rng = np.random.default_rng(seed)
    for name, colour in [("normal", (190, 60, 60)), ("turtle_neck", (60, 60, 190))]:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (*size[::-1], 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def colours(tmp_path) -> Path:
    return _colour_dataset(tmp_path / "data")


def _tiny(**kw) -> TrainConfig:
    base = dict(arch="resnet14", init="scratch", epochs=3, batch_size=8, img_size=32, workers=0, seed=0)
    return TrainConfig(**{**base, **kw})


def test_training_beats_chance_and_writes_a_self_describing_checkpoint(colours, tmp_path):
    events = []
    result = train(colours, _tiny(epochs=4, lr=3e-3), out=tmp_path / "m.safetensors", progress=events.append)
    assert result.val_report.metrics["accuracy"] >= 0.8
    info = read_info(tmp_path / "m.safetensors")
    assert info.class_names == ["normal", "turtle_neck"] and info.input_size == 32
    assert len(info.history) == len(result.history) >= 1 and info.metrics["val"]["n"] == 4
    kinds = [e.kind for e in events]
    assert kinds[0] == "phase" and "step" in kinds and kinds.count("epoch") == len(result.history)
    assert kinds[-1] == "done" and all(e.eta_s >= 0 for e in events if e.kind == "step")


def test_same_seed_same_model(colours):
    a = train(colours, _tiny(epochs=2))
    b = train(colours, _tiny(epochs=2))
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_cached_features_give_the_same_head_as_the_plain_loop(colours):
    cfg = dict(arch="resnet18", freeze=True, augment=False, epochs=3, lr=1e-2)
    cached = train(colours, _tiny(**cfg, cache_features=True))
    plain = train(colours, _tiny(**cfg, cache_features=False))
    torch.testing.assert_close(cached.model.fc.weight, plain.model.fc.weight, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(cached.model.fc.bias, plain.model.fc.bias, atol=1e-5, rtol=1e-4)
    # and the backbone was not touched by either
    torch.testing.assert_close(cached.model.conv1.weight, plain.model.conv1.weight)
    assert [h["val_loss"] for h in cached.history] == pytest.approx([h["val_loss"] for h in plain.history], abs=1e-5)


def test_cancel_leaves_no_checkpoint_and_the_previous_one_untouched(colours, tmp_path):
    out = tmp_path / "m.safetensors"
    train(colours, _tiny(epochs=1), out=out)
    before = out.read_bytes()
    cancel = threading.Event()

    def cancel_mid_epoch(event):
        if event.kind == "step" and event.epoch == 2 and event.step == 1:
            cancel.set()

    result = train(colours, _tiny(epochs=3, seed=1), out=out, progress=cancel_mid_epoch, cancel=cancel)
    assert result.cancelled and result.checkpoint is None
    assert len(result.history) == 1 and result.model is not None  # the finished epoch is kept
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.safetensors"]


def test_a_cancelled_run_can_be_finished_with_its_best_epoch(colours, tmp_path):
    out = tmp_path / "m.safetensors"
    cancel = threading.Event()

    def cancel_in_second_epoch(event):
        if event.kind == "step" and event.epoch == 2 and event.step == 1:
            cancel.set()

    result = train(colours, _tiny(epochs=3), out=out, progress=cancel_in_second_epoch, cancel=cancel,
                   finish_cancelled=True)
    assert result.cancelled and result.checkpoint == out and len(result.history) == 1
    info = read_info(out)
    assert info.metrics["best_epoch"] == 1 and "accuracy" in info.metrics["val"]
    assert "temperature" in info.train_config  # finished like a complete run: calibrated too


def test_error_mid_run_leaves_the_previous_checkpoint(colours, tmp_path):
    out = tmp_path / "m.safetensors"
    train(colours, _tiny(epochs=1), out=out)
    before = out.read_bytes()

    def explode(event):
        if event.kind == "step" and event.step == 2:
            raise MemoryError("simulated out of memory")

    with pytest.raises(MemoryError):
        train(colours, _tiny(epochs=2), out=out, progress=explode)
    assert out.read_bytes() == before


def test_given_train_and_val_folders_are_used(tmp_path):
    _colour_dataset(tmp_path / "d" / "train", per_class=6)
    _colour_dataset(tmp_path / "d" / "val", per_class=3, seed=1)
    result = train(tmp_path / "d", _tiny(epochs=1))
    assert result.val_report.metrics["n"] == 6


def test_fine_tuning_from_a_posture_checkpoint(colours, tmp_path):
    first = train(colours, _tiny(epochs=1), out=tmp_path / "a.safetensors")
    result = train(colours, _tiny(epochs=1, init=str(tmp_path / "a.safetensors"), img_size=None))
    assert result.info.input_size == 32 and result.info.init.endswith("a.safetensors")
    model, _ = load_checkpoint(tmp_path / "a.safetensors")
    assert torch.equal(model.conv1.weight, first.model.conv1.weight)


def test_the_output_stride_is_recorded_and_kept_when_training_continues(colours, tmp_path):
    fine = dict(arch="resnet18", freeze=False, epochs=1, lr=1e-3)
    train(colours, _tiny(**fine, output_stride=16), out=tmp_path / "a.safetensors")
    model, info = load_checkpoint(tmp_path / "a.safetensors")
    assert info.output_stride == 16 and model.forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (2, 2)
    again = train(colours, _tiny(**fine, init=str(tmp_path / "a.safetensors")))
    assert again.info.output_stride == 16 and again.model.output_stride == 16
    coarser = train(colours, _tiny(**fine, init=str(tmp_path / "a.safetensors"), output_stride=32))
    assert coarser.info.output_stride == 32 and coarser.model.output_stride == 32
    assert train(colours, _tiny(epochs=1)).info.output_stride == 4  # resnet14's only one


def test_an_output_stride_the_architecture_lacks_is_refused_before_any_work(colours):
    with pytest.raises(UsageError, match="output stride is 4, not 16"):
        train(colours, _tiny(output_stride=16))


def test_an_unknown_cam_map_is_refused_before_any_work(colours):
    with pytest.raises(UsageError, match="cam map must be one of relu, softplus"):
        train(colours, _tiny(cam_map="sigmoid"))


def test_a_class_with_too_few_images_is_refused(tmp_path):
    root = _colour_dataset(tmp_path / "d", per_class=4)
    for p in list((root / "turtle_neck").iterdir())[1:]:
        p.unlink()
    with pytest.raises(DatasetError, match="turtle_neck"):
        train(root, _tiny(epochs=1))


def test_an_image_unreadable_mid_run_is_a_clear_error_from_a_loader_worker(colours):
    from posture.data import UploadLimits, scan_dataset
    from posture.errors import ImageError

    scan = scan_dataset(colours, UploadLimits.local())
    for path in scan.files["normal"]:
        path.write_bytes(b"not a picture any more")  # after the scan checked them
    with pytest.raises(ImageError) as err:
        train(scan, _tiny(epochs=1, workers=1))
    assert "Traceback" not in str(err.value) and "not an image" in str(err.value)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    """A tiny synthetic set in the synth layout: labels.csv with angles, styles, and no_side_view/."""
    from posture.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(root, 40, seed=5, config=SynthConfig(size_range=(64, 80), negatives=0.2), workers=1)
    return root


def test_angles_and_a_no_side_view_folder_train_the_extra_heads(synth_set, tmp_path):
    from posture.predict import Predictor

    result = train(synth_set, _tiny(epochs=1), out=tmp_path / "m.safetensors")
    info = read_info(tmp_path / "m.safetensors")
    assert info.heads == ["cva", "side_view", "gate"]
    assert info.train_config["gate"]["n_fit"] == sum(it.side_view for it in _train_items(synth_set))
    row = result.history[0]
    assert row["val_cva_mae"] > 0 and 0.0 <= row["val_side_acc"] <= 1.0
    val = info.metrics["val"]
    assert val["side_view"]["n_without"] > 0 and val["cva_n"] == val["n"]  # every side view had an angle
    pred = Predictor.from_checkpoint(tmp_path / "m.safetensors").predict(next(synth_set.glob("normal/*.jpg")))
    assert pred.cva_deg is not None and pred.side_view in (True, False)


def test_the_gate_gets_a_group_per_style_when_every_side_view_has_one(synth_set, tmp_path, monkeypatch):
    from posture import calibrate

    monkeypatch.setattr(calibrate, "MIN_GROUP", 1)  # the tiny set has a few pictures per style
    train(synth_set, _tiny(epochs=1), out=tmp_path / "m.safetensors")
    styles = sorted({it.style for it in _train_items(synth_set) if it.side_view})
    assert len(styles) > 1 and read_info(tmp_path / "m.safetensors").train_config["gate"]["groups"] == styles
    loaded, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert loaded.heads["gate"].means.shape[0] == len(styles) and loaded.heads["gate"].fitted
    monkeypatch.setattr(calibrate, "MIN_GROUP", 10**6)  # too few per style: one group for all
    train(synth_set, _tiny(epochs=1), out=tmp_path / "one.safetensors")
    assert read_info(tmp_path / "one.safetensors").train_config["gate"]["groups"] == []
    assert load_checkpoint(tmp_path / "one.safetensors")[0].heads["gate"].means.shape[0] == 1


def _train_items(root: Path) -> list:
    from posture.data import UploadLimits, scan_dataset
    from posture.train import dataset_items

    return dataset_items(scan_dataset(root, UploadLimits.local()), _tiny().resolved())[0]


def test_folders_without_angles_or_negatives_give_a_model_without_them(colours, tmp_path):
    from posture.predict import Predictor

    train(colours, _tiny(epochs=1), out=tmp_path / "m.safetensors")
    assert read_info(tmp_path / "m.safetensors").heads == []
    pred = Predictor.from_checkpoint(tmp_path / "m.safetensors").predict(next(colours.glob("normal/*.png")))
    assert pred.cva_deg is None and pred.side_view is None


def test_excluded_styles_are_left_out_of_both_splits(synth_set):
    from posture.data import UploadLimits, scan_dataset
    from posture.train import dataset_items

    scan = scan_dataset(synth_set, UploadLimits.local())
    cfg = _tiny().resolved()
    train_items, val_items = dataset_items(scan, cfg)
    styles = {it.style for it in train_items + val_items if it.style}
    assert len(styles) >= 3
    left_out = sorted(styles)[:2]
    kept_train, kept_val = dataset_items(scan, replace(cfg, exclude_styles=tuple(left_out)))
    assert not {it.style for it in kept_train + kept_val} & set(left_out)
    assert len(kept_train) + len(kept_val) == sum(it.style not in left_out for it in train_items + val_items)


@pytest.mark.parametrize("freeze", [True, False])
def test_retraining_keeps_heads_only_where_their_features_stay(synth_set, colours, tmp_path, freeze):
    """A frozen backbone keeps the checkpoint's heads the new data cannot teach; a trained one drops them."""
    train(synth_set, _tiny(epochs=1), out=tmp_path / "a.safetensors")
    before, _ = load_checkpoint(tmp_path / "a.safetensors")
    result = train(colours, _tiny(epochs=1, init=str(tmp_path / "a.safetensors"), freeze=freeze, img_size=None))
    if freeze:
        assert result.info.heads == ["cva", "side_view", "gate"]  # the gate fitted anew on these side views
        for a, b in zip(before.heads.parameters(), result.model.heads.parameters()):
            assert torch.equal(a, b)  # kept as they were: nothing here teaches them
        assert not torch.equal(before.heads["gate"].means, result.model.heads["gate"].means)
    else:
        assert result.info.heads == []


def test_an_absent_training_device_is_refused_before_any_work(colours, monkeypatch):
    import posture.devices as devices
    from posture.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(UsageError, match="'cuda' is not available on this machine; available: cpu"):
        train(colours, _tiny(device="cuda"))
    with pytest.raises(UsageError, match="device must be one of"):
        _tiny(device="tpu").resolved()
    assert train(colours, _tiny(epochs=1, device="cpu")).model is not None


@pytest.mark.parametrize("precision, freeze, device, gpu_dtype, want", [
    ("fp32", False, "cpu", None, None),
    ("bf16", False, "cpu", None, torch.bfloat16),
    ("auto", True, "cuda", torch.float16, None),  # a frozen backbone trains its heads in fp32
    ("auto", False, "cuda", torch.float16, torch.float16),
    ("auto", False, "cuda", torch.bfloat16, torch.bfloat16),
    ("bf16", False, "cuda", torch.float16, torch.bfloat16),
    ("fp32", False, "cuda", torch.bfloat16, None),
])
def test_mixed_precision_follows_the_device(monkeypatch, precision, freeze, device, gpu_dtype, want):
    import posture.train as train_module

    monkeypatch.setattr(train_module, "autocast_dtype", lambda d: gpu_dtype if d.type != "cpu" else None)
    cfg = _tiny(precision=precision, freeze=freeze)
    assert train_module._mixed_precision(cfg, torch.device(device)) == want


def test_float16_training_scales_its_gradients(colours, monkeypatch):
    """The GPU's float16 path (autocast plus GradScaler), run on the CPU, which has both."""
    import posture.train as train_module

    steps = []
    real_step = torch.amp.GradScaler.step

    def counted(self, optimizer, *args, **kwargs):
        steps.append(self.get_scale())
        return real_step(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "step", counted)
    monkeypatch.setattr(train_module, "_mixed_precision", lambda cfg, device: torch.float16)
    result = train(colours, _tiny(epochs=3, lr=3e-3))
    assert len(steps) == 3 * 3 and all(scale > 1 for scale in steps)  # 24 training images, batches of 8
    assert result.val_report.metrics["accuracy"] >= 0.75
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in result.model.parameters())


def test_a_model_trained_with_closeups_gets_a_gate_fitted_on_closeups_too(synth_set, tmp_path):
    side = sum(it.side_view for it in _train_items(synth_set))
    train(synth_set, replace(_tiny(epochs=1), closeup=0.5), out=tmp_path / "m.safetensors")
    gate = read_info(tmp_path / "m.safetensors").train_config["gate"]
    assert gate["closeups"] == side and gate["n_fit"] == 2 * side  # every synthetic side view has a box
    model, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert model.heads["gate"].fitted
    train(synth_set, _tiny(epochs=1), out=tmp_path / "plain.safetensors")  # without close-ups: plain views only
    plain = read_info(tmp_path / "plain.safetensors").train_config["gate"]
    assert plain["closeups"] == 0 and plain["n_fit"] == side


def test_refitting_a_gate_cuts_its_closeups_as_the_model_was_trained(synth_set, tmp_path, monkeypatch):
    """A checkpoint records its close-ups' largest box share; one from before that setting was
    trained with 0.75, and a refitted gate must know those close-ups, not today's default."""
    import posture.calibrate as calibrate
    from posture.checkpoints import save_checkpoint
    from posture.imagedata import LEGACY_CLOSEUP_LARGEST

    train(synth_set, replace(_tiny(epochs=1), closeup=0.5, closeup_largest=0.9), out=tmp_path / "m.safetensors")
    model, info = load_checkpoint(tmp_path / "m.safetensors")
    del info.train_config["closeup_largest"]
    save_checkpoint(tmp_path / "old.safetensors", model, info)
    seen = []
    fit = calibrate.fit_gate_
    monkeypatch.setattr(calibrate, "fit_gate_", lambda *a, **kw: seen.append(kw["closeup"]) or fit(*a, **kw))
    calibrate.refit_gate(tmp_path / "m.safetensors", synth_set, tmp_path / "refit.safetensors")
    calibrate.refit_gate(tmp_path / "old.safetensors", synth_set, tmp_path / "refit-old.safetensors")
    assert seen == [0.9, LEGACY_CLOSEUP_LARGEST]


def test_restyled_views_draw_each_picture_by_one_op_in_turn(synth_set):
    from posture.calibrate import RestyledView
    from posture.imagedata import RESTYLE_OPS, ImageDataset

    base = ImageDataset([it for it in _train_items(synth_set) if it.side_view][:len(RESTYLE_OPS) + 1], 48)
    view = RestyledView(base)
    assert [view.op(i) for i in range(len(view))] == [*RESTYLE_OPS, RESTYLE_OPS[0]]
    for i in range(len(view)):
        drawn = np.asarray(view.load_square(i))
        assert drawn.shape == (48, 48, 3) and not np.array_equal(drawn, np.asarray(base.load_square(i))), view.op(i)
        assert np.array_equal(drawn, np.asarray(view.load_square(i)))  # the same view on every fit
    base.preload()
    assert np.array_equal(np.asarray(RestyledView(base).load_square(6)), np.asarray(view.load_square(6)))
    two = RestyledView(base, ["silhouette", "outline"])
    assert [two.op(i) for i in range(4)] == ["silhouette", "outline", "silhouette", "outline"]
    assert len(np.unique(np.asarray(two.load_square(0)).reshape(-1, 3), axis=0)) == 2  # two flat colours


def test_a_gate_fitted_on_restyled_views_has_a_group_per_op_and_knows_them(synth_set, tmp_path, monkeypatch):
    from posture import calibrate
    from posture.imagedata import RESTYLE_OPS, ImageDataset

    monkeypatch.setattr(calibrate, "MIN_GROUP", 1)  # the tiny set has a few pictures per style and op
    side = [it for it in _train_items(synth_set) if it.side_view]
    train(synth_set, replace(_tiny(epochs=1), gate_restyle=True), out=tmp_path / "r.safetensors")
    gate = read_info(tmp_path / "r.safetensors").train_config["gate"]
    ops = sorted(f"restyled-{op}" for op in RESTYLE_OPS)
    assert gate["restyled"] == len(side) and gate["n_fit"] == 2 * len(side) and gate["closeups"] == 0
    assert gate["groups"] == sorted({it.style for it in side} | set(ops))
    calibrate.refit_gate(tmp_path / "r.safetensors", synth_set, tmp_path / "again.safetensors")  # as trained
    assert read_info(tmp_path / "again.safetensors").train_config["gate"]["groups"] == gate["groups"]
    calibrate.refit_gate(tmp_path / "r.safetensors", synth_set, tmp_path / "plain.safetensors", restyle=False)
    plain = read_info(tmp_path / "plain.safetensors")
    assert plain.train_config["gate_restyle"] is False and not set(ops) & set(plain.train_config["gate"]["groups"])

    # The same weights: only the gate differs. Outlined training pictures are familiar to the
    # gate that learnt them, and further from every group of the gate that did not.
    def familiarity(path: Path) -> torch.Tensor:  # the gate's logit on the outlined side views
        from posture.fit import extract_features

        model, info = load_checkpoint(path)
        view = calibrate.RestyledView(ImageDataset(side, info.input_size))
        logits = model.heads["gate"](extract_features(model, view, 8))
        return logits[[i for i in range(len(view)) if view.op(i) == "outline"]]

    assert familiarity(tmp_path / "r.safetensors").mean() > familiarity(tmp_path / "plain.safetensors").mean()


def test_a_restyled_gate_learns_the_ops_the_model_was_trained_with(synth_set, tmp_path, monkeypatch):
    from posture import calibrate

    monkeypatch.setattr(calibrate, "MIN_GROUP", 1)
    side = [it for it in _train_items(synth_set) if it.side_view]
    cfg = replace(_tiny(epochs=1), restyle=0.5, restyle_ops=("outline", "silhouette"), gate_restyle=True)
    train(synth_set, cfg, out=tmp_path / "r.safetensors")
    gate = read_info(tmp_path / "r.safetensors").train_config["gate"]
    assert gate["groups"] == sorted({it.style for it in side} | {"restyled-outline", "restyled-silhouette"})
    calibrate.refit_gate(tmp_path / "r.safetensors", synth_set, tmp_path / "again.safetensors")
    assert read_info(tmp_path / "again.safetensors").train_config["gate"]["groups"] == gate["groups"]
