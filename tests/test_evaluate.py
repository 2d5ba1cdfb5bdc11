"""Evaluation on a labelled folder: report files, per-style figures, angle error, the side-view flag,
Grad-CAM box scores, recording metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from posture.checkpoints import ModelInfo, read_info, record_metrics, save_checkpoint
from posture.evaluate import evaluate_folder, summarise
from posture.models import build_model
from posture.predict import Predictor
from posture.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    generate_dataset(root, 20, seed=3, config=SynthConfig(size_range=(96, 128), negatives=0.2), workers=1)
    return root


@pytest.fixture(scope="module")
def headed(tmp_path_factory) -> Path:
    """A (random) resnet14 with both auxiliary heads."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("headed") / "m.safetensors"
    info = ModelInfo("resnet14", ["normal", "turtle_neck"], 64, heads=["cva", "side_view"])
    return save_checkpoint(path, build_model("resnet14", heads=info.heads), info)


def test_report_on_a_synthetic_folder(headed, synth_set, tmp_path):
    predictor = Predictor.from_checkpoint(headed)
    report = evaluate_folder(predictor, synth_set, report_dir=tmp_path / "report")
    m = report.metrics
    assert m["n_images"] == 20 and m["n"] == 16 and sum(map(sum, m["confusion"])) == 16  # classes: side views only
    assert 0.0 <= m["cam_mass_in_box"] <= 1.0 and 0.0 <= m["pointing_game"] <= 1.0
    assert all("cam_mass_in_box" in row for row in report.rows if row["label"])
    side_rows = [r for r in report.rows if r["label"]]
    assert m["cva_mae"] == pytest.approx(np.mean([abs(r["cva_pred"] - r["cva_true"]) for r in side_rows]), abs=1e-3)
    flag = m["side_view"]
    assert flag["n_side_views"] == 16 and flag["n_without"] == 4
    assert sum(flag["without_flagged_by_kind"].values()) >= 0 and set(flag["without_flagged_by_kind"]) <= {
        r["view"] for r in report.rows if not r["label"]}
    assert set(m["by_style"]) == {r["style"] for r in report.rows if r["style"]}
    assert sum(s.get("n", 0) for s in m["by_style"].values()) == 16
    files = {p.name for p in (tmp_path / "report").iterdir()}  # the tiny checkpoint has no history
    assert {"metrics.json", "predictions.csv", "confusion.png", "cam_grid.jpg"} <= files
    wrong = len(report.misclassified)
    assert wrong == sum(r["label"] != r["predicted"] for r in side_rows)
    assert len(list((tmp_path / "report" / "misclassified").glob("*.png"))) == wrong
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["accuracy"] == m["accuracy"]


def test_summary_of_the_side_view_flag_counts_each_way():
    names = ["normal", "turtle_neck"]
    rows = [
        {"label": "normal", "p_normal": 0.9, "p_turtle_neck": 0.1, "side_view_prob": 0.9, "view": "side"},
        {"label": "turtle_neck", "p_normal": 0.2, "p_turtle_neck": 0.8, "side_view_prob": 0.3, "view": "side"},
        {"label": "", "p_normal": 0.5, "p_turtle_neck": 0.5, "side_view_prob": 0.1, "view": "frontal"},
        {"label": "", "p_normal": 0.5, "p_turtle_neck": 0.5, "side_view_prob": 0.7, "view": "empty"},
    ]
    m = summarise(rows, names)
    assert m["accuracy"] == 1.0 and m["n"] == 2
    assert m["side_view"]["side_views_flagged"] == 0.5 and m["side_view"]["without_flagged"] == 0.5
    assert m["side_view"]["without_flagged_by_kind"] == {"empty": 0.0, "frontal": 1.0}


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
                        str(synth_set), "--json", "--record-as", "test", "--device", "cpu", "--precision", "fp32"],
                       capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parent.parent, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["n"] == 16
    recorded = read_info(path).metrics["test"]
    assert recorded["n"] == 16 and recorded["mirror"] is True  # the figures say how they were answered


def test_choose_layer_measures_every_layer_and_records_the_best(headed, synth_set, tmp_path):
    from posture.evaluate import choose_cam_layer

    path = tmp_path / "m.safetensors"
    path.write_bytes(headed.read_bytes())
    best, scores = choose_cam_layer(path, synth_set)
    assert set(scores) == {"layer1", "layer2", "layer3"}
    assert best == max(scores, key=lambda k: scores[k]["cam_mass_in_box"] + scores[k]["pointing_game"])
    info = read_info(path)
    assert info.cam_layer == best and info.metrics["cam_layers"]["chosen"] == best
    assert Predictor.from_checkpoint(path).predict(next(synth_set.glob("normal/*.jpg"))).layer == best


def test_the_report_shows_the_first_side_views_of_each_style_with_their_grad_cam(headed, synth_set, tmp_path):
    from PIL import Image

    from posture.evaluate import evaluate_items, folder_items, write_report

    predictor = Predictor.from_checkpoint(headed)
    items, classes = folder_items(synth_set)
    report = evaluate_items(predictor, items, classes, cam_examples=2)
    rows = {r["file"]: r for r in report.rows}
    side = [it for it in items if it.side_view]
    assert list(report.cam_examples) == sorted({it.style for it in side})  # no picture without a side view
    for style, shown in report.cam_examples.items():
        first = [it for c in range(len(classes))
                 for it in [it for it in side if (it.style, it.label) == (style, c)][:2]]
        assert len(shown) == len(first)
        for ex, item in zip(shown, first):
            row = rows[str(item.path)]
            true, predicted = (row[k].replace("_", " ") for k in ("label", "predicted"))
            assert ex.caption.startswith(f"{true} {item.cva_deg:.0f}° → {predicted} {row['cva_pred']:.0f}°")
            assert ex.correct == (row["predicted"] == row["label"] and row["side_view_prob"] >= 0.5)
            assert max(ex.overlay.size) <= 256 and ex.box == item.box
    write_report(report, tmp_path / "r", classes)
    grid = Image.open(tmp_path / "r" / "cam_grid.jpg")
    assert grid.height > grid.width / 2  # up to four pictures a row, a row per style


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
