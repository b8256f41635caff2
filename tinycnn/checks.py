"""Checks of arguments that several parts of tinycnn take: here once, so each rule reads the
same everywhere (fit and evaluate, predict_proba, the schedules, the metrics, one_hot, the
downloader)."""
import numpy as np

from .layers.base import is_whole


def whole_number(value, low, who, name, unit=""):
    """value as an int if it is a whole number >= low (not a bool, not 2.5), else a
    ValueError naming `who` and `name`, e.g. "StepDecay: every must be a whole number of
    steps >= 1, got 0" (unit=" of steps")."""
    if not (is_whole(value) and value >= low):
        raise ValueError(f"{who}: {name} must be a whole number{unit} >= {low}, got {value!r}")
    return int(value)


def class_labels(y, num_classes, who, name="labels", of=""):
    """y as integer class labels (N,), each in [0, num_classes) (>= 0 when num_classes is
    None), or a ValueError naming `who`, `name` and the first bad label. (NumPy would take
    others without a word: -1 indexes the last class, (N, 1) labels broadcast against (N, K)
    rows, a label past the classes falls out of a confusion matrix.) `of` says whose classes
    they are, e.g. " (the model's 10 outputs)"."""
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"{who}: {name} must be integer class labels of shape (N,), one per example, "
                         f"got {y.dtype} of shape {y.shape}")
    bad = (y < 0) | (y >= num_classes) if num_classes is not None else y < 0
    if bad.any():
        i = int(np.argmax(bad))
        allowed = f"one of the classes 0..{num_classes - 1}" if num_classes is not None else "a class (0 or more)"
        raise ValueError(f"{who}: {name}: label {int(y[i])} at index {i} is not {allowed}{of}")
    return y
