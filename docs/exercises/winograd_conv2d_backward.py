"""Exercise (docs/11-winograd.md): the backward pass of a 3x3 convolution (stride 1, no
padding) computed by Winograd F(2x2, 3x3): every step of the forward pass, transposed.

Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/winograd_conv2d_backward.py

The forward pass, for output tile (ta, tb) of image n (a 2x2 block of y), reads the 4x4
input tile D[n, c] = x[n, c, 2ta : 2ta + 4, 2tb : 2tb + 4] of every channel c:

    U[f, c] = G W[f, c] G^T                          (4, 4) per filter and channel
    V[n, c] = B^T D[n, c] B                          (4, 4) per tile and channel
    M[n, f] = sum over c of U[f, c] * V[n, c]        element-wise products, summed over c
    y[n, f, 2ta : 2ta + 2, 2tb : 2tb + 2] = A^T M[n, f] A + b[f]

G, BT (= B^T) and AT (= A^T) are in tinycnn.kernels.winograd. The inputs here are square,
H = W = 2 * tiles + 2, so the output (H - 2 = 2 * tiles) is made of whole tiles.
"""
import numpy as np
from tinycnn.kernels.winograd import AT, BT, G


def winograd_conv2d_backward(x, W, dy):
    """x (N, C, H, H), W (F, C, 3, 3), dy (N, F, H - 2, H - 2) -> dx, dW, db (shapes of x, W, (F,))."""
    raise NotImplementedError(
        "go through the forward steps in reverse: dM = A dY A^T per output tile; "
        "dU[f, c] = sum over tiles of dM * V, dV = sum over f of dM * U[f, c]; "
        "dW = G^T dU G; dD = B dV B^T, added into dx where the input tiles overlap; db = sum of dy")
