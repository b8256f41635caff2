"""Worked solution: the backward pass of average pooling (docs/06-pooling.md)."""
import numpy as np


def avgpool2d_backward(x, dy, kernel, stride):
    """x (N, C, H, W) (only its shape is needed), dy (N, C, OH, OW) -> dx (N, C, H, W):
    every element of a window receives dy / kernel^2 of that window."""
    N, C, OH, OW = dy.shape
    dx = np.zeros_like(x)
    for a in range(OH):
        for b in range(OW):
            i0, j0 = a * stride, b * stride
            share = dy[:, :, a, b] / kernel**2                                # (N, C)
            dx[:, :, i0:i0 + kernel, j0:j0 + kernel] += share[:, :, None, None]
    return dx
