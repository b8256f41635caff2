"""Evaluation metrics, on top of scikit-learn where it already does the job.

The arguments are checked, because NumPy answers most mistakes with a number: labels of
shape (N, 1) broadcast against (N, k) to a score of 1.0, a slice of [:k] with k = -1 keeps
all but one class, a label past the classes is left out of a confusion matrix, and the
mean of nothing is NaN.
"""
import numpy as np
from sklearn import metrics as skm

from .checks import class_labels, whole_number
from .layers.base import is_whole


def _labels(who, y, name="labels", num_classes=None):
    """y as an array of integer class labels (N,), N > 0, each in [0, num_classes) (or >= 0
    when num_classes is None), or a ValueError naming `who` and what was wrong."""
    y = class_labels(y, num_classes, who, name)
    if not len(y):
        raise ValueError(f"{who}: {name} are empty: there is nothing to score")
    return y


def _labels_and_proba(who, y_true, proba):
    """(y_true (N,), proba (N, K)), checked: one row of K finite probabilities per label,
    every label one of the K classes."""
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.dtype.kind not in "fiu":
        raise ValueError(f"{who}: proba must be numbers of shape (N, K), one row of class "
                         f"probabilities per example, got {proba.dtype} of shape {proba.shape}")
    y_true = _labels(who, y_true, "y_true", proba.shape[1])
    if len(y_true) != len(proba):
        raise ValueError(f"{who}: {len(y_true)} labels but {len(proba)} rows of probabilities")
    if not np.isfinite(proba).all():
        raise ValueError(f"{who}: proba has NaN or infinite values (the first in row "
                         f"{int(np.argmax(~np.isfinite(proba).all(axis=1)))})")
    return y_true, proba


def accuracy(y_true, y_pred):
    """Fraction of predictions equal to the labels."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"accuracy: labels {y_true.shape} and predictions {y_pred.shape} differ")
    if not y_true.size:
        raise ValueError("accuracy: no labels: there is nothing to score")
    return float((y_true == y_pred).mean())


def top_k_accuracy(y_true, proba, k=3):
    """Fraction of examples whose label is among the k most probable classes (1 <= k <= K)."""
    y_true, proba = _labels_and_proba("top_k_accuracy", y_true, proba)
    if not (is_whole(k) and 1 <= k <= proba.shape[1]):
        raise ValueError(f"top_k_accuracy: k must be a whole number from 1 to the number of classes "
                         f"({proba.shape[1]}), got {k!r}")
    top = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def confusion_matrix(y_true, y_pred, num_classes=None):
    """(K, K) counts: row = true class, column = predicted class. Every label and prediction
    must be one of the K classes (0..K-1; K defaults to the largest one + 1)."""
    if num_classes is not None:
        whole_number(num_classes, 1, "confusion_matrix", "num_classes")
    y_true = _labels("confusion_matrix", y_true, "y_true", num_classes)
    y_pred = _labels("confusion_matrix", y_pred, "y_pred", num_classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"confusion_matrix: {len(y_true)} labels but {len(y_pred)} predictions")
    if num_classes is None:
        num_classes = int(max(y_true.max(), y_pred.max())) + 1
    return skm.confusion_matrix(y_true, y_pred, labels=np.arange(num_classes))


def classification_report(y_true, y_pred, class_names=None, as_dict=False):
    """Per-class precision, recall, F1 and support (scikit-learn's report)."""
    labels = np.arange(len(class_names)) if class_names is not None else None
    names = [str(c) for c in class_names] if class_names is not None else None
    return skm.classification_report(y_true, y_pred, labels=labels, target_names=names, digits=4,
                                     output_dict=as_dict, zero_division=0)


def misclassified(y_true, proba):
    """Wrong predictions, most confident first: a list of dicts with index, predicted,
    true and confidence (the probability given to the wrong answer)."""
    y_true, proba = _labels_and_proba("misclassified", y_true, proba)
    pred = proba.argmax(axis=1)
    wrong = np.flatnonzero(pred != y_true)
    conf = proba[wrong, pred[wrong]]
    order = np.argsort(-conf, kind="stable")
    return [{"index": int(wrong[i]), "predicted": int(pred[wrong[i]]), "true": int(y_true[wrong[i]]),
             "confidence": float(conf[i])} for i in order]
