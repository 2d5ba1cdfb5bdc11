"""The command line, run as a user would: exit codes, JSON shape, overlays, clean errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "posture", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def test_predict_json_and_overlays(checkpoint_dir, image_file, tmp_path):
    out = tmp_path / "cams"
    r = run_cli("predict", image_file, image_file, "--model", checkpoint_dir / "resnet14.safetensors",
                "--cam-dir", out, "--alpha", "0.6", "--json")
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 2
    rec = records[0]
    assert set(rec) >= {"file", "label", "probabilities", "model", "latency_ms"}
    assert rec["model"] == "resnet14" and set(rec["probabilities"]) == {"normal", "turtle_neck"}
    assert abs(sum(rec["probabilities"].values()) - 1) < 1e-5 and rec["latency_ms"] > 0
    overlay = Image.open(out / f"{image_file.stem}_cam.png")
    assert overlay.size == Image.open(image_file).size


def test_no_mirror_answers_from_the_picture_alone(checkpoint_dir, image_file, tmp_path):
    """By default a picture and its mirror image get the same answer; `--no-mirror` gives each its own."""
    flipped = tmp_path / "flipped.png"
    Image.open(image_file).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    model = checkpoint_dir / "resnet14.safetensors"

    def probabilities(*extra: str) -> list[float]:
        r = run_cli("predict", image_file, flipped, "--model", model, "--precision", "fp32", "--json", *extra)
        assert r.returncode == 0, r.stderr
        return [json.loads(line)["probabilities"]["normal"] for line in r.stdout.splitlines()]

    both, alone = probabilities(), probabilities("--no-mirror")
    assert both[0] == pytest.approx(both[1], abs=1e-5)
    assert alone[0] != pytest.approx(alone[1], abs=1e-4)
    assert min(alone) - 1e-6 <= both[0] <= max(alone) + 1e-6  # the mean of two logits lies between them


def test_predict_by_bundled_name_with_target(checkpoint_dir, image_file):
    r = run_cli("predict", image_file, "--model", "resnet18", "--target", "turtle_neck",
                env={"POSTURE_CHECKPOINTS": str(checkpoint_dir)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{image_file}: ") and "normal=" in r.stdout


@pytest.mark.parametrize("case", ["not_an_image", "missing_model", "bad_target", "pickle_model"])
def test_user_mistakes_exit_nonzero_without_traceback(checkpoint_dir, image_file, tmp_path, case):
    model = checkpoint_dir / "resnet14.safetensors"
    args = ["predict", image_file, "--model", model]
    if case == "not_an_image":
        fake = tmp_path / "notes.jpg"
        fake.write_text("hello")
        args[1] = fake
    elif case == "missing_model":
        args[3] = tmp_path / "nope.safetensors"
    elif case == "bad_target":
        args += ["--target", "slouch"]
    else:
        bad = tmp_path / "evil.safetensors"
        bad.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
        args[3] = bad
    r = run_cli(*args)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_predict_on_a_chosen_device_and_precision(checkpoint_dir, image_file):
    model = checkpoint_dir / "resnet14.safetensors"
    r = run_cli("predict", image_file, "--model", model, "--device", "cpu", "--precision", "fp32", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["label"] in ("normal", "turtle_neck")
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # whatever this machine has, torch then sees no CUDA device
    r = run_cli("predict", image_file, "--model", model, "--device", "cuda", env=no_gpu)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'cuda' is not available on this machine" in r.stderr
    r = run_cli("predict", image_file, "--model", model, "--device", "tpu")
    assert r.returncode == 2 and "invalid choice: 'tpu'" in r.stderr
    # POSTURE_PRECISION is the CLI's default (read here, at the edge; the library reads no environment)
    r = run_cli("predict", image_file, "--model", model, env={"POSTURE_PRECISION": "fp8"})
    assert r.returncode == 2 and "precision must be one of" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("predict", image_file, "--model", model, "--precision", "fp32", env={"POSTURE_PRECISION": "fp8"})
    assert r.returncode == 0, r.stderr


def test_models_lists_bundled_and_given_checkpoints(checkpoint_dir, tmp_path):
    extra = tmp_path / "mine.safetensors"
    extra.write_bytes((checkpoint_dir / "resnet14.safetensors").read_bytes())
    r = run_cli("models", extra, "--json", env={"POSTURE_CHECKPOINTS": str(checkpoint_dir)})
    assert r.returncode == 0, r.stderr
    names = {m["name"]: m for m in json.loads(r.stdout)}
    assert set(names) == {"resnet14", "resnet18", "mine"}
    assert names["resnet18"]["arch"] == "resnet18" and names["mine"]["class_names"] == ["normal", "turtle_neck"]


def test_train_without_imagenet_weights_explains_the_offline_path(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "d" / c / f"{i}.png")
    r = run_cli("train", "--data", tmp_path / "d", "--arch", "resnet18", "--out", tmp_path / "m.safetensors",
                env={"POSTURE_RESNET18_WEIGHTS": str(tmp_path / "missing.pth")})
    assert r.returncode == 2 and "POSTURE_RESNET18_WEIGHTS" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_train_on_an_absent_device_is_a_clear_error(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "d" / c / f"{i}.png")
    r = run_cli("train", "--data", tmp_path / "d", "--arch", "resnet14", "--device", "cuda",
                "--out", tmp_path / "m.safetensors", env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "'cuda' is not available on this machine" in r.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_predict_a_folder_into_a_csv_with_overlays(checkpoint_dir, tmp_path):
    import csv

    from conftest import person_like

    folder = tmp_path / "shots"
    (folder / "later").mkdir(parents=True)
    for i in range(3):
        person_like(seed=i).save(folder / f"{i}.jpg")
    person_like(seed=5).save(folder / "later" / "3.png")
    person_like(seed=7).save(folder / "whole.jpg")
    (folder / "broken.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:300])  # a download cut short
    (folder / "whole.jpg").unlink()
    table, cams = tmp_path / "out.csv", tmp_path / "cams"
    r = run_cli("predict", folder, "--model", checkpoint_dir / "resnet14.safetensors", "--csv", table,
                "--cam-dir", cams, "--batch-size", "2")
    assert r.returncode == 1  # one file could not be scored: said, and the rest are done
    assert "broken.jpg: the image is damaged or truncated" in r.stderr and "Traceback" not in r.stderr
    assert "4 of 5 images scored" in r.stderr
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(row["file"]).name for row in rows] == ["0.jpg", "1.jpg", "2.jpg", "broken.jpg", "3.png"]
    assert all(row["label"] in ("normal", "turtle_neck") for row in rows if not row["error"])
    assert sorted(p.name for p in cams.iterdir()) == ["0_cam.png", "1_cam.png", "2_cam.png", "3_cam.png"]
    assert [line.split(":")[0] for line in r.stdout.splitlines()] == [row["file"] for row in rows if not row["error"]]


def test_models_prints_the_shared_metric_line(checkpoint_dir, tmp_path):
    from posture.checkpoints import ModelInfo, save_checkpoint
    from posture.models import build_model

    path = save_checkpoint(tmp_path / "scored.safetensors", build_model("resnet14", 2),
                           ModelInfo(arch="resnet14", class_names=["normal", "turtle_neck"], input_size=64,
                                     metrics={"val": {"accuracy": 0.875, "n": 8}}))
    r = run_cli("models", path, env={"POSTURE_CHECKPOINTS": str(checkpoint_dir)})
    assert r.returncode == 0, r.stderr
    assert "val (n=8): accuracy 0.875" in next(line for line in r.stdout.splitlines() if line.startswith("scored"))


def test_ctrl_c_during_training_writes_the_best_finished_epoch(tmp_path):
    import signal
    import threading
    import time

    _two_shades(tmp_path / "d", 8, 16)
    out = tmp_path / "m.safetensors"
    proc = subprocess.Popen([sys.executable, "-m", "posture", "train", "--data", str(tmp_path / "d"), "--arch",
                             "resnet14", "--init", "scratch", "--img-size", "16", "--batch-size", "4",
                             "--epochs", "500", "--patience", "500", "--workers", "0", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = bytearray()
    reader = threading.Thread(target=_drain, args=(proc.stderr, seen), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while b"epoch 3/500" not in seen and time.monotonic() < deadline:
        time.sleep(0.1)
    assert b"epoch 3/500" in seen, seen.decode(errors="replace")[-2000:]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    stdout = proc.stdout.read()
    assert proc.returncode == 0, seen.decode(errors="replace")[-2000:]
    assert b"finishing the best finished epoch" in seen and b"saved" in stdout
    from posture.checkpoints import read_info

    info = read_info(out)
    assert 2 <= len(info.history) < 500 and "temperature" in info.train_config


def _two_shades(root, per_class: int, size: int) -> None:
    """Classes a/ and b/ of solid squares, b redder: a model tells them apart in an epoch or two."""
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (size, size), (i * 20 + (120 if c == "b" else 0), 0, 0)).save(root / c / f"{i}.png")


def _drain(stream, into: bytearray) -> None:
    while chunk := stream.read1(4096):
        into.extend(chunk)


@pytest.mark.slow
def test_heldout_trains_without_each_style_and_prints_the_matrix(tmp_path):
    from posture.synth import SynthConfig, generate_dataset

    config = SynthConfig(size_range=(64, 80), styles=("flat", "lineart"), negatives=0.2)
    generate_dataset(tmp_path / "train", 40, seed=1, config=config, workers=1)
    generate_dataset(tmp_path / "test", 20, seed=2, config=config, workers=1)
    r = run_cli("heldout", "--data", tmp_path / "train", "--test", tmp_path / "test", "--arch", "resnet14",
                "--init", "scratch", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0",
                "--groups", "each", "--degrade", "0.5", "--restyle", "0.4", "--restyle-ops", "outline,silhouette",
                "--closeup", "0.2", "--closeup-largest", "0.85",
                "--out", tmp_path / "runs", "--no-mirror",
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "| held-out styles |" in r.stdout and "| flat |" in r.stdout and "| lineart |" in r.stdout
    matrix = json.loads((tmp_path / "runs" / "matrix.json").read_text())
    assert matrix["mirror"] is False  # scored from the picture alone, as asked
    for style, entry in matrix["styles"].items():
        assert entry["held_out"]["n"] > 0 and entry["in_style"]["n"] > 0
        assert (tmp_path / "runs" / f"without-{style}.safetensors").is_file()
    from posture.checkpoints import read_info

    recipe = read_info(tmp_path / "runs" / "without-flat.safetensors").train_config
    assert recipe["exclude_styles"] == ["flat"] and recipe["degrade"] == 0.5 and recipe["restyle"] == 0.4
    assert recipe["closeup"] == 0.2 and recipe["closeup_largest"] == 0.85
    assert recipe["restyle_ops"] == ["outline", "silhouette"]


def test_an_unknown_style_to_leave_out_is_a_clear_error(tmp_path):
    r = run_cli("train", "--data", tmp_path, "--out", tmp_path / "m.safetensors", "--exclude-style", "oil")
    assert r.returncode == 2 and "unknown style" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", ["degrade", "restyle", "closeup"])
def test_a_degrade_or_restyle_share_outside_0_1_is_a_clear_error(tmp_path, name):
    r = run_cli("train", "--data", tmp_path, "--out", tmp_path / "m.safetensors", f"--{name}", "1.5")
    assert r.returncode == 2 and f"{name} is a probability" in r.stderr and "Traceback" not in r.stderr


def test_an_unknown_restyle_op_is_a_clear_error(tmp_path):
    r = run_cli("train", "--data", tmp_path, "--out", tmp_path / "m.safetensors", "--restyle-ops", "outline,oil")
    assert r.returncode == 2 and "got 'oil'" in r.stderr and "silhouette" in r.stderr and "Traceback" not in r.stderr


def test_the_output_stride_and_cam_map_options_reach_the_checkpoint_and_a_wrong_stride_is_a_clear_error(tmp_path):
    _two_shades(tmp_path / "d", 6, 24)
    out = tmp_path / "m.safetensors"
    r = run_cli("train", "--data", tmp_path / "d", "--arch", "resnet18", "--init", "scratch", "--img-size", "32",
                "--epochs", "1", "--batch-size", "4", "--workers", "0", "--output-stride", "16", "--cam-weight", "0.1",
                "--cam-map", "softplus", "--out", out,
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    from posture.checkpoints import read_info

    info = read_info(out)
    assert info.output_stride == 16 and info.train_config["cam_map"] == "softplus"
    r = run_cli("train", "--data", tmp_path / "d", "--arch", "resnet14", "--output-stride", "16", "--out", out)
    assert r.returncode == 2 and "output stride is 4, not 16" in r.stderr and "Traceback" not in r.stderr
    assert read_info(out).output_stride == 16  # the earlier checkpoint is untouched


def test_gate_refits_a_checkpoints_gate_on_its_training_split(checkpoint_dir, tmp_path):
    from posture.checkpoints import load_checkpoint, read_info, record_metrics
    from posture.synth import SynthConfig, generate_dataset
    from posture.train import TrainConfig, train

    data = tmp_path / "set"
    generate_dataset(data, 40, seed=4, config=SynthConfig(size_range=(64, 80), negatives=0.2), workers=1)
    trained = tmp_path / "m.safetensors"
    train(data, TrainConfig(arch="resnet14", init="scratch", epochs=1, batch_size=8, img_size=32, workers=0),
          out=trained)
    record_metrics(trained, "test", {"accuracy": 0.5})
    out = tmp_path / "refit.safetensors"
    r = run_cli("gate", trained, "--data", data, "--out", out, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "gate: one group" in r.stdout and f"wrote {out}" in r.stdout
    before, after = load_checkpoint(trained)[0].state_dict(), load_checkpoint(out)[0].state_dict()
    assert before.keys() == after.keys()
    for key in before:  # the same split and features give the gate training fitted; nothing else moves
        torch.testing.assert_close(after[key], before[key], rtol=1e-5, atol=1e-4, msg=key)
    metrics = read_info(out).metrics
    assert "val" in metrics and "test" not in metrics  # the recorded test figures measured the old flag
    restyled = tmp_path / "restyled.safetensors"
    r = run_cli("gate", trained, "--data", data, "--out", restyled, "--restyle", "--json", env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    gate = json.loads(r.stdout)["gate"]
    assert gate["restyled"] == gate["n_fit"] // 2 > 0 and read_info(restyled).train_config["gate_restyle"] is True
    r = run_cli("gate", checkpoint_dir / "resnet14.safetensors", "--data", data, "--out", out)
    assert r.returncode == 2 and "no side-view head" in r.stderr and "Traceback" not in r.stderr
    _two_shades(tmp_path / "other", 4, 24)
    r = run_cli("gate", trained, "--data", tmp_path / "other", "--out", out)
    assert r.returncode == 2 and "knows" in r.stderr and "Traceback" not in r.stderr
