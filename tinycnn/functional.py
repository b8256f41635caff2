"""Stateless functions on arrays."""
import numpy as np


def log_softmax(logits):
    """log p = z - logsumexp(z) per row, computed after shifting each row by its maximum, so
    that exp never sees a positive number: no overflow even for logits of 1e4."""
    logits = np.asarray(logits)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits):
    """Class probabilities from logits (..., K); rows sum to 1."""
    logits = np.asarray(logits)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def one_hot(labels, num_classes, dtype=np.float32):
    """Integer labels (N,) -> (N, num_classes) with a single 1 per row."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], num_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels] = 1
    return out
