"""Evaluation helpers against hand-computed values."""

import numpy as np
import pytest

from mmkeras.evaluation import accuracy, classification_report, confusion_matrix, macro_scores


def test_confusion_matrix_counts():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], num_classes=3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_macro_scores_by_hand():
    y_true, y_pred = [0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2]
    s = macro_scores(y_true, y_pred, 3)
    precision = [1 / 2, 1 / 2, 2 / 2]
    recall = [1 / 2, 1 / 1, 2 / 3]
    f1 = [2 * p * r / (p + r) for p, r in zip(precision, recall)]
    assert s["macro_precision"] == pytest.approx(np.mean(precision))
    assert s["macro_recall"] == pytest.approx(np.mean(recall))
    assert s["macro_f1"] == pytest.approx(np.mean(f1))
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)


def test_class_never_predicted_counts_zero():
    r = classification_report([0, 1, 2], [0, 0, 0], num_classes=3)
    assert r["accuracy"] == pytest.approx(1 / 3)
    assert r["macro_recall"] == pytest.approx(1 / 3)
    assert r["macro_precision"] == pytest.approx((1 / 3) / 3)


def test_length_mismatch():
    with pytest.raises(ValueError, match="3 vs 2"):
        confusion_matrix([0, 1, 2], [0, 1])
