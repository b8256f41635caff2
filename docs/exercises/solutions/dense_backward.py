"""Worked solution: the backward pass of Dense, y = x @ W + b (docs/02-dense.md)."""
import numpy as np


def dense_backward(x, W, b, dy):
    """x (N, D), W (D, M), b (M,), dy (N, M) -> dx (N, D), dW (D, M), db (M,)."""
    # y[n, m] = sum_d x[n, d] W[d, m] + b[m], so dL/dx[n, d] = sum_m dy[n, m] W[d, m]
    dx = dy @ W.T
    dW = x.T @ dy               # dL/dW[d, m] = sum_n x[n, d] dy[n, m]: every example adds its share
    db = dy.sum(axis=0)         # b was broadcast over the batch, so its gradient sums over it
    return dx, dW, db
