"""Evaluation helpers: accuracy, macro precision / recall / F1, per-class recall, confusion matrix."""

import numpy as np


def confusion_matrix(y_true, y_pred, num_classes=None):
    """Counts C[i, j] of examples of true class i predicted as j."""
    y_true, y_pred = np.asarray(y_true, np.int64).ravel(), np.asarray(y_pred, np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {len(y_true)} vs {len(y_pred)}.")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    return np.bincount(y_true * num_classes + y_pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def accuracy(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    return float(np.mean(y_true == y_pred)) if len(y_true) else float("nan")


def macro_scores(y_true, y_pred, num_classes=None):
    """Macro-averaged precision, recall and F1 (classes with no support or prediction count 0)."""
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    tp = np.diag(cm)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(tp / cm.sum(axis=0))
        recall = np.nan_to_num(tp / cm.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {"macro_precision": float(precision.mean()), "macro_recall": float(recall.mean()),
            "macro_f1": float(f1.mean())}


def per_class_recall(y_true, y_pred, class_names):
    """{class name: recall} in class order: the share of each class's examples predicted as
    that class. A class with no example gets None (no recall to measure), not 0, so a
    minority class that is missing from a split is not reported as failed."""
    class_names = [str(n) for n in class_names]
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    support = cm.sum(axis=1)
    return {name: (float(cm[i, i] / support[i]) if support[i] else None) for i, name in enumerate(class_names)}


def worst_class_recall(recalls):
    """(class name, recall) of the lowest recall in a per_class_recall dict, or None when
    no class has one."""
    measured = [(name, r) for name, r in recalls.items() if r is not None]
    return min(measured, key=lambda item: item[1]) if measured else None


def classification_report(y_true, y_pred, num_classes=None):
    """accuracy plus the macro scores, as one dict."""
    return {"accuracy": accuracy(y_true, y_pred), **macro_scores(y_true, y_pred, num_classes)}
