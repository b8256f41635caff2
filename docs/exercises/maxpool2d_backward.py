"""Exercise (docs/06-pooling.md): the backward pass of max pooling (square windows).

y[n, c, a, b] = max of x[n, c, a*s : a*s + k, b*s : b*s + k]
Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/maxpool2d_backward.py
"""
import numpy as np


def maxpool2d_backward(x, dy, kernel, stride):
    """x (N, C, H, W), dy (N, C, OH, OW), kernel and stride ints -> dx (N, C, H, W)."""
    raise NotImplementedError(
        "find each window's maximum again (window.argmax() gives a flat index t: row t // k, "
        "column t % k of the window); only that element moved y, so it receives the window's "
        "dy, added (+=) because overlapping windows can share it")
