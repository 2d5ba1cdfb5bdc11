"""Evaluation on a labelled folder: report files, Grad-CAM box scores, recording metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from posture.checkpoints import read_info, record_metrics
from posture.evaluate import evaluate_folder
from posture.predict import Predictor
from posture.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(root, 8, seed=3, config=SynthConfig(size_range=(96, 128)), workers=1)
    return root


def test_report_on_a_synthetic_folder(checkpoint_dir, synth_set, tmp_path):
    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    report = evaluate_folder(predictor, synth_set, report_dir=tmp_path / "report")
    m = report.metrics
    assert m["n"] == 8 and sum(map(sum, m["confusion"])) == 8
    assert 0.0 <= m["cam_mass_in_box"] <= 1.0 and 0.0 <= m["pointing_game"] <= 1.0
    assert all("cam_mass_in_box" in row for row in report.rows)
    files = {p.name for p in (tmp_path / "report").iterdir()}  # the tiny checkpoint has no history
    assert {"metrics.json", "predictions.csv", "confusion.png"} <= files
    wrong = len(report.misclassified)
    assert len(list((tmp_path / "report" / "misclassified").glob("*.png"))) == wrong if wrong else True
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["accuracy"] == m["accuracy"]


def test_record_metrics_keeps_the_model_and_adds_the_numbers(checkpoint_dir, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes((checkpoint_dir / "resnet14.safetensors").read_bytes())
    record_metrics(path, "test", {"accuracy": 0.5})
    info = read_info(path)
    assert info.metrics["test"] == {"accuracy": 0.5}
    before = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    after = Predictor.from_checkpoint(path)
    for a, b in zip(before.model.state_dict().values(), after.model.state_dict().values()):
        assert (a == b).all()


def test_evaluate_cli_json_and_record(checkpoint_dir, synth_set, tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes((checkpoint_dir / "resnet14.safetensors").read_bytes())
    r = subprocess.run([sys.executable, "-m", "posture", "evaluate", "--model", str(path), "--data",
                        str(synth_set), "--json", "--record-as", "test"], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 8
    assert read_info(path).metrics["test"]["n"] == 8


def test_misclassified_rows_name_their_overlay(checkpoint_dir, synth_set, tmp_path):
    from posture.data import scan_dataset
    from posture.evaluate import evaluate_items

    predictor = Predictor.from_checkpoint(checkpoint_dir / "resnet14.safetensors")
    scan = scan_dataset(synth_set)
    items = [(p, i) for i, c in enumerate(scan.class_names) for p in scan.files[c]]
    # Every image labelled with the class the model does not predict: all of them are misclassified.
    preds = {p: predictor.predict(p, explain=False).label for p, _ in items}
    flipped = [(p, 1 - scan.class_names.index(preds[p])) for p, _ in items]
    report = evaluate_items(predictor, flipped, scan.class_names, misclassified_dir=tmp_path / "wrong")
    assert len(report.misclassified) == len(items)
    for row in report.misclassified:
        overlay = Path(row["overlay"])
        assert overlay.parent == tmp_path / "wrong" and overlay.is_file()
        assert f"_{row['label']}_as_{row['predicted']}" in overlay.stem


@pytest.mark.parametrize("epochs", [1, 3])
def test_learning_curves_name_both_lines_and_count_whole_epochs(epochs):
    from posture.evaluate import learning_curves_figure

    history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": 0.5 + 0.1 * e, "val_loss": 1.1 / e,
                "val_acc": 0.45 + 0.1 * e} for e in range(1, epochs + 1)]
    fig = learning_curves_figure(history)
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "validation"]
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert all(float(t).is_integer() for t in ticks) and set(range(1, epochs + 1)) <= set(map(int, ticks))
        assert all(line.get_marker() == "o" for line in ax.lines)  # a single epoch still shows as points
