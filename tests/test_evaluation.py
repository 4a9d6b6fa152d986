"""Evaluation helpers against hand-computed values."""

import numpy as np
import pytest

from mmkeras.evaluation import (accuracy, classification_report, confusion_matrix, macro_scores,
                                per_class_recall, worst_class_recall)


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


def test_per_class_recall_by_hand():
    # cat: 1 of 2 right, dog: 1 of 1, fish: 2 of 3, bird: no example (no recall, not 0).
    recalls = per_class_recall([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], ["cat", "dog", "fish", "bird"])
    assert list(recalls) == ["cat", "dog", "fish", "bird"]
    assert recalls == {"cat": pytest.approx(1 / 2), "dog": 1.0, "fish": pytest.approx(2 / 3), "bird": None}
    # Their mean over the classes with examples is the macro recall.
    measured = [r for r in recalls.values() if r is not None]
    assert np.mean(measured) == pytest.approx(macro_scores([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2], 3)["macro_recall"])
    assert worst_class_recall(recalls) == ("cat", pytest.approx(1 / 2))
    assert worst_class_recall({"a": None}) is None
