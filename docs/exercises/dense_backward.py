"""Exercise (docs/02-dense.md): write the backward pass of Dense, y = x @ W + b.

Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/dense_backward.py
"""
import numpy as np


def dense_backward(x, W, b, dy):
    """x (N, D), W (D, M), b (M,), dy = dL/dy (N, M) -> dx (N, D), dW (D, M), db (M,)."""
    raise NotImplementedError(
        "write y[n, m] = sum_d x[n, d] W[d, m] + b[m] as a sum, differentiate it by one "
        "x[n, d], one W[d, m] and one b[m], then write each result as a matrix product or a sum")
