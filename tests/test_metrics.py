"""Metrics on hand-made predictions whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from posture.metrics import cam_box_scores, classification_metrics, expected_calibration_error


def test_metrics_on_a_hand_made_set():
    # 6 images: true [0,0,0,1,1,1]; predicted [0,0,1,1,1,0]
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    m = classification_metrics(probs, labels, ["normal", "turtle_neck"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion"] == [[2, 1], [1, 2]]
    assert m["per_class"]["normal"] == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                                        "f1": pytest.approx(2 / 3), "support": 3}
    # AUC by hand: of the 9 (positive, negative) pairs, the positive scores higher in 8.
    assert m["roc_auc"] == pytest.approx(8 / 9)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    probs = np.array([[0.75, 0.25]] * 4)
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([[0.99, 0.01]] * 2), np.array([1, 1])) == pytest.approx(0.99)


def test_single_class_labels_have_no_auc_and_bad_shapes_are_refused():
    m = classification_metrics(np.array([[0.9, 0.1]]), np.array([0]), ["a", "b"])
    assert m["roc_auc"] is None
    with pytest.raises(ValueError):
        classification_metrics(np.ones((2, 3)), np.array([0, 1]), ["a", "b"])


def test_cam_box_scores():
    heat = np.zeros((10, 10))
    heat[2:4, 2:4] = 1.0
    heat[8, 8] = 4.0
    mass, hit = cam_box_scores(heat, (2, 2, 4, 4))
    assert mass == pytest.approx(0.5) and not hit
    assert cam_box_scores(heat, (7, 7, 10, 10)) == (pytest.approx(0.5), True)
