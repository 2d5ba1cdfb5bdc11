"""`posture.catalog`: one summary per checkpoint and the one metric line the CLI and the app share."""

from __future__ import annotations

from posture.catalog import metrics_text, summarize_checkpoint
from posture.checkpoints import ModelInfo, save_checkpoint
from posture.models import build_model


def test_metrics_text_names_every_recorded_split_with_its_count():
    metrics = {"val": {"accuracy": 0.93, "roc_auc": 0.981, "ece": 0.0213, "n": 200, "per_class": {}},
               "test": {"accuracy": 0.9, "n": 1000}, "best_epoch": 4}
    assert metrics_text(metrics) == ("val (n=200): accuracy 0.930, roc_auc 0.981, ece 0.021; "
                                     "test (n=1000): accuracy 0.900")


def test_metrics_text_of_flat_scores_and_of_nothing():
    assert metrics_text({"accuracy": 0.5, "roc_auc": None}) == "accuracy 0.500"
    assert metrics_text({}) == "-"
    assert metrics_text({"best_epoch": 3}) == "-"


def test_a_summary_reads_the_header_and_hides_where_training_started(tmp_path):
    info = ModelInfo(arch="resnet14", class_names=["a", "b"], input_size=64, init="/home/me/start.safetensors",
                     heads=["cva"], metrics={"test": {"accuracy": 0.8}, "val": {"accuracy": 0.9}})
    path = save_checkpoint(tmp_path / "m.safetensors", build_model("resnet14", 2, heads=["cva"]), info)
    s = summarize_checkpoint("mine", path)
    assert (s.name, s.arch, s.class_names, s.input_size, s.init, s.heads) == ("mine", "resnet14", ["a", "b"], 64,
                                                                               "start.safetensors", ["cva"])
    assert s.accuracy == 0.8  # the test set's, when recorded
    assert s.error == "" and s.to_dict()["metrics_text"] == "test: accuracy 0.800; val: accuracy 0.900"


def test_an_unreadable_checkpoint_gives_a_summary_with_the_reason(tmp_path):
    bad = tmp_path / "holiday.safetensors"
    bad.write_bytes(b"not a model")
    s = summarize_checkpoint("holiday", bad)
    assert s.error and "holiday.safetensors" in s.error and s.arch == "" and s.metrics_text == "-"
