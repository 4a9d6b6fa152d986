"""Evaluation helpers: accuracy, macro precision / recall / F1, confusion matrix."""

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


def classification_report(y_true, y_pred, num_classes=None):
    """accuracy plus the macro scores, as one dict."""
    return {"accuracy": accuracy(y_true, y_pred), **macro_scores(y_true, y_pred, num_classes)}
