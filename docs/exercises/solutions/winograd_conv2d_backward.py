"""Worked solution: the backward pass of a 3x3, stride-1, unpadded convolution by Winograd
F(2x2, 3x3), tile by tile, each forward step transposed (docs/11-winograd.md).

Forward, per output tile t of image n:  V = B^T D B,  U = G W G^T,
M[n, f] = sum_c U[f, c] * V[n, c],  Y = A^T M A (+ bias).
"""
import numpy as np
from tinycnn.kernels.winograd import AT, BT, G


def winograd_conv2d_backward(x, W, dy):
    """x (N, C, H, H), W (F, C, 3, 3), dy (N, F, H - 2, H - 2) -> dx, dW, db (shapes of x, W, (F,))."""
    N, C, H, _ = x.shape
    F = W.shape[0]
    tiles = (H - 2) // 2                       # output tiles down and across
    U = G @ W @ G.T                            # (F, C, 4, 4): G W[f, c] G^T for every f, c
    dU = np.zeros_like(U)
    dx = np.zeros_like(x)
    for n in range(N):
        for ta in range(tiles):
            for tb in range(tiles):
                rows, cols = slice(2 * ta, 2 * ta + 4), slice(2 * tb, 2 * tb + 4)
                V = BT @ x[n, :, rows, cols] @ BT.T                          # (C, 4, 4)
                dY = dy[n, :, 2 * ta:2 * ta + 2, 2 * tb:2 * tb + 2]          # (F, 2, 2)
                dM = AT.T @ dY @ AT                    # Y = A^T M A  ->  dM = A dY A^T  (F, 4, 4)
                dU += dM[:, None] * V[None]            # M = sum_c U * V  ->  dU = dM * V, per c
                dV = np.sum(dM[:, None] * U, axis=0)   # ... and dV = sum_f dM * U       (C, 4, 4)
                dx[n, :, rows, cols] += BT.T @ dV @ BT     # V = B^T D B  ->  dD = B dV B^T, added
    dW = G.T @ dU @ G                          # U = G W G^T  ->  dW = G^T dU G   (F, C, 3, 3)
    db = dy.sum(axis=(0, 2, 3))                # the bias is added to every output pixel
    return dx, dW, db
