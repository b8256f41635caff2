"""ReLU: one parallel pass that writes y and the mask together (NumPy needs one pass for
each, on one thread). Arrays are viewed flat and cut into one contiguous run per thread."""
import numpy as np
from numba import njit, uintp

from .parallel import JIT, in_parallel, share_range, threads_for


def relu_forward(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    y, mask = np.empty_like(flat), np.empty(flat.shape, dtype=np.bool_)
    in_parallel(_relu_forward_share, threads_for(flat.size), flat, y, mask)
    return y.reshape(x.shape), mask.reshape(x.shape)


@njit(**JIT)
def _relu_forward_share(t, nchunks, x, y, mask):
    k0, k1 = share_range(t, nchunks, x.size)
    # unsigned bounds: with signed ones Numba checks every index for wrap-around and the
    # loop does not vectorise (measured 8x slower)
    for k in range(uintp(k0), uintp(k1)):
        v = x[k]
        mask[k] = v > 0
        y[k] = max(v, 0)


def relu_backward(dy, mask):
    flat = np.ascontiguousarray(dy).reshape(-1)
    dx = np.empty_like(flat)
    in_parallel(_relu_backward_share, threads_for(flat.size), flat, mask.reshape(-1), dx)
    return dx.reshape(dy.shape)


@njit(**JIT)
def _relu_backward_share(t, nchunks, dy, mask, dx):
    k0, k1 = share_range(t, nchunks, dy.size)
    for k in range(uintp(k0), uintp(k1)):
        dx[k] = dy[k] * mask[k]
