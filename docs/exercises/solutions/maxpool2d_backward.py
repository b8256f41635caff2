"""Worked solution: the backward pass of max pooling (docs/06-pooling.md)."""
import numpy as np


def maxpool2d_backward(x, dy, kernel, stride):
    """x (N, C, H, W), dy (N, C, OH, OW) -> dx (N, C, H, W): each window's dy goes to the
    position of its maximum (the first one on ties, as tinycnn does); the rest get 0."""
    N, C, OH, OW = dy.shape
    dx = np.zeros_like(x)
    for n in range(N):
        for c in range(C):
            for a in range(OH):
                for b in range(OW):
                    i0, j0 = a * stride, b * stride
                    window = x[n, c, i0:i0 + kernel, j0:j0 + kernel]
                    i, j = np.unravel_index(window.argmax(), window.shape)   # first maximum
                    dx[n, c, i0 + i, j0 + j] += dy[n, c, a, b]   # += : windows may overlap
    return dx
