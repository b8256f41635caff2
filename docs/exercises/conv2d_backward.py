"""Exercise (docs/05-conv2d.md): the gradients of a convolution with stride and padding.

y[n, f, a, b] = bias[f] + sum_{c,i,j} W[f, c, i, j] * xpad[n, c, a*s + i, b*s + j]
(xpad: x with `padding` zeros on every side; s: the stride).
Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/conv2d_backward.py
"""
import numpy as np


def conv2d_backward(x, W, dy, stride, padding):
    """x (N, C, H, W), W (F, C, k, k), dy (N, F, OH, OW), stride and padding ints
    -> dx (N, C, H, W), dW (F, C, k, k), db (F,)."""
    raise NotImplementedError(
        "loop over n, f, a, b like the forward pass; the window at (a*s, b*s) adds "
        "dy[n, f, a, b] * window to dW[f] and dy[n, f, a, b] * W[f] to the same window of a "
        "padded dx; cut the padding off at the end. db sums dy over n, a and b")
