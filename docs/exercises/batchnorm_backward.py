"""Exercise (docs/07-batchnorm.md): batch normalisation's backward pass, training mode.

mu = mean(x, axis 0); xc = x - mu; var = mean(xc^2, axis 0); inv_std = 1 / sqrt(var + eps)
xhat = xc * inv_std; y = gamma * xhat + beta     (x: (N, D); beta does not affect dx)
Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/batchnorm_backward.py
"""
import numpy as np


def batchnorm_backward(x, gamma, dy, eps):
    """x (N, D), gamma (D,), dy (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    raise NotImplementedError(
        "recompute the forward stages, then go back through them one at a time: dxhat, "
        "dinv_std, dvar, dxc, dmu, dx. Remember xc reaches y twice (through xhat and through "
        "var), so dxc has two terms; x too (through xc and through mu), "
        "and a vector broadcast over the batch gets a gradient summed over the batch")
