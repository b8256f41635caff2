"""Worked solution: the gradients of a strided, padded convolution, written as loops straight
from the forward definition (docs/05-conv2d.md).

Forward:  y[n, f, a, b] = bias[f] + sum_{c,i,j} W[f, c, i, j] * xpad[n, c, a*s + i, b*s + j]
Each term W * xpad sends dy[n, f, a, b] * xpad to dW and dy[n, f, a, b] * W to dxpad.
"""
import numpy as np


def conv2d_backward(x, W, dy, stride, padding):
    """x (N, C, H, W), W (F, C, k, k), dy (N, F, OH, OW) -> dx, dW, db (shapes of x, W, (F,))."""
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    _, _, OH, OW = dy.shape
    s, p = stride, padding
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxpad = np.zeros_like(xpad)
    dW = np.zeros_like(W)
    db = dy.sum(axis=(0, 2, 3))              # bias[f] is added to every output pixel of map f
    for n in range(N):
        for f in range(F):
            for a in range(OH):
                for b in range(OW):
                    window = xpad[n, :, a * s:a * s + kh, b * s:b * s + kw]    # (C, kh, kw)
                    dW[f] += dy[n, f, a, b] * window
                    dxpad[n, :, a * s:a * s + kh, b * s:b * s + kw] += dy[n, f, a, b] * W[f]
    dx = dxpad[:, :, p:p + H, p:p + Wd]      # the padding is not an input: drop its gradient
    return dx, dW, db
