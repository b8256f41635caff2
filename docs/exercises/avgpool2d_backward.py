"""Exercise (docs/06-pooling.md): the backward pass of average pooling (square windows).

y[n, c, a, b] = mean of x[n, c, a*s : a*s + k, b*s : b*s + k]
Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/avgpool2d_backward.py
"""
import numpy as np


def avgpool2d_backward(x, dy, kernel, stride):
    """x (N, C, H, W), dy (N, C, OH, OW), kernel and stride ints -> dx (N, C, H, W)."""
    raise NotImplementedError(
        "y is a sum of k*k elements divided by k*k: each element's local derivative is "
        "1 / (k*k); add each window's share, since windows may overlap when stride < kernel")
