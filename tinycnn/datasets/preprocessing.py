"""Small helpers that turn uint8 images into network input."""
import math

import numpy as np

from .. import functional
from ..checks import class_labels, whole_number
from ..layers.base import is_real
from ..optim import check_hyper


def to_float(images):
    """uint8 images 0-255 -> float32 in [0, 1]."""
    return np.asarray(images, dtype=np.float32) / np.float32(255)


def standardize(x, mean=None, std=None):
    """(x - mean) / std, with mean and std computed from x when not given.

    Returns (standardised x as float32, mean, std) so the same numbers can be applied to
    the test set and saved with the model: model.preprocessing = {"mean": mean, "std": std}
    (then model.preprocess(uint8_images) does the same to new images, after a reload too).
    MNIST's are 0.1307 and 0.3081 on the 0-1 scale.
    """
    x = np.asarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():               # (every value of the result would be NaN)
        raise ValueError(f"standardize: x has {int(finite.size - finite.sum())} NaN or infinite values "
                         f"(the first at index {tuple(map(int, np.unravel_index(np.argmin(finite), x.shape)))})")
    if mean is not None and not (is_real(mean) and math.isfinite(mean)):
        raise ValueError(f"standardize: mean must be a finite number, got {mean!r}")
    mean = float(x.mean()) if mean is None else float(mean)
    std = check_hyper("standardize", "std", float(x.std()) if std is None else std, 0, low_open=True)
    return (x - np.float32(mean)) / np.float32(std), mean, std


def one_hot(labels, num_classes, dtype=np.float32):
    """Integer labels (N,), each in [0, num_classes) -> (N, num_classes) with a single 1
    per row. (A label of -1 would otherwise index the last class.)"""
    whole_number(num_classes, 1, "one_hot", "num_classes")
    labels = class_labels(labels, num_classes, "one_hot")
    return functional.one_hot(labels.astype(np.intp), num_classes, dtype)


def add_channel_axis(x):
    """(N, H, W) -> (N, 1, H, W); 4-D input is returned unchanged."""
    x = np.asarray(x)
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise ValueError(f"add_channel_axis: expected (N, H, W) images, got shape {x.shape}")
    return x[:, None]


def train_val_split(x, y, val_fraction=0.1, seed=0):
    """Stratified, seeded split: ((x_train, y_train), (x_val, y_val)), each class kept in
    the same proportion in both parts."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    # Stratified: each part needs an image of every class. scikit-learn checks that too, but
    # its message ("The train_size = 1 should be greater...") names neither option nor data.
    n, classes = len(y), len(np.unique(y))
    n_val = int(np.ceil(val_fraction * n))              # as train_test_split rounds
    if min(n_val, n - n_val) < classes:
        raise ValueError(f"val_fraction={val_fraction} (--val-fraction) splits {n:,} images into "
                         f"{n - n_val:,} for training and {n_val:,} for validation; each part needs "
                         f"at least one image of each of the {classes} classes")
    x_tr, x_val, y_tr, y_val = train_test_split(x, y, test_size=val_fraction, random_state=seed,
                                                stratify=y)
    return (x_tr, y_tr), (x_val, y_val)


__all__ = ["to_float", "standardize", "add_channel_axis", "one_hot", "train_val_split"]
