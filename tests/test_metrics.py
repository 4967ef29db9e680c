"""Metrics against values worked out by hand on a 6-sample, 3-class example."""

import numpy as np
import pytest

from jaxdl import metrics

LABELS = np.array([0, 0, 1, 1, 2, 2])
PREDS = np.array([0, 1, 1, 1, 2, 0])
# class 0: precision 1/2, recall 1/2, F1 1/2; class 1: 2/3, 1, 4/5; class 2: 1, 1/2, 2/3


def test_summary_matches_hand_computation():
    got = metrics.summary(LABELS, PREDS)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert got["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert got["f1"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)


def test_never_predicted_class_has_zero_precision():
    got = metrics.summary(np.array([0, 1]), np.array([0, 0]))
    assert got["precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert got["recall"] == pytest.approx((1 + 0) / 2)


def test_confusion_matrix_and_per_class_keep_every_class():
    cm = metrics.confusion(LABELS, PREDS, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    report = metrics.per_class(LABELS, PREDS, num_classes=4)
    assert report["1"]["f1-score"] == pytest.approx(4 / 5)
    assert report["2"]["support"] == 2 and report["3"]["support"] == 0


def test_class_names_and_counts_come_from_the_data():
    report = metrics.per_class(LABELS, PREDS, classes=("cat", "dog", "fish", "bird"))
    assert report["dog"]["f1-score"] == pytest.approx(4 / 5) and report["bird"]["support"] == 0
    assert metrics.confusion(LABELS, PREDS, classes=("cat", "dog", "fish", "bird")).shape == (4, 4)
    assert metrics.confusion(LABELS, PREDS).shape == (3, 3)  # neither given: 0..the largest class seen
    assert sorted(k for k in metrics.per_class(LABELS, PREDS) if k.isdigit()) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="num_classes=3 but 4 class names"):
        metrics.per_class(LABELS, PREDS, 3, classes=("a", "b", "c", "d"))
