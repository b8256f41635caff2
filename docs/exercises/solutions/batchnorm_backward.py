"""Worked solution: batch normalisation's backward pass in training mode, (N, D) input,
stage by stage through the forward graph of docs/07-batchnorm.md."""
import numpy as np


def batchnorm_backward(x, gamma, dy, eps):
    """x (N, D), gamma (D,), dy (N, D) -> dx (N, D), dgamma (D,), dbeta (D,)."""
    N = x.shape[0]
    # forward again, staged
    mu = x.mean(axis=0)                           # (D,)
    xc = x - mu                                   # (N, D) centred
    var = (xc ** 2).mean(axis=0)                  # (D,) biased variance
    inv_std = 1 / np.sqrt(var + eps)              # (D,)
    xhat = xc * inv_std                           # (N, D) normalised
    # backward, stage by stage in reverse
    dbeta = dy.sum(axis=0)                        # beta broadcast over the batch: sum
    dgamma = (dy * xhat).sum(axis=0)
    dxhat = dy * gamma
    dinv_std = (dxhat * xc).sum(axis=0)           # inv_std broadcast over the batch: sum
    dxc = dxhat * inv_std                         # path 1 into xc
    dvar = dinv_std * -0.5 * (var + eps) ** -1.5
    dxc += dvar * 2 * xc / N                      # path 2 into xc, through var
    dmu = -dxc.sum(axis=0)
    dx = dxc + dmu / N                            # x -> xc directly, and x -> mu -> xc
    # Collapsed into one line, this is the compact formula of tinycnn/kernels/reference.py:
    # dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std   (means over axis 0)
    return dx, dgamma, dbeta
