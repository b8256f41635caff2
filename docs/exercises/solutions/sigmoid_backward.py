"""Worked solution: the backward pass of Sigmoid (docs/03-activations.md)."""
import numpy as np


def sigmoid_backward(x, dy):
    """x, dy of any (same) shape -> dx = dy * s * (1 - s) with s = sigmoid(x)."""
    s = 1 / (1 + np.exp(-x))    # fine for these inputs; the layer avoids exp of large |x|
    return dy * s * (1 - s)
