"""Batch normalisation over (N, C, M) arrays (M = H*W for BatchNorm2D, 1 for BatchNorm1D).

Each thread's share is a run of channels: it owns whole channels, so the per-channel sums
need no merging, and each channel's values are N contiguous runs of M. Each run is summed in the
input's dtype (vectorised), the run sums are added in float64 (m is 10^5-10^6 values per
channel; one float32 running sum would lose digits). Statistics take one pass, forward
one (writing y and xhat together), backward two: the sums, then dx.
"""
import numpy as np
from numba import njit, uintp

from .parallel import JIT, in_parallel, share_range, threads_for


@njit(fastmath={"reassoc"}, **JIT)
def _row_sums(a, b, shift):
    """sum(a - shift) and sum((a - shift) * (b - shift)) over one contiguous row, in a's dtype.
    'reassoc' lets LLVM reorder the additions so the loop vectorises (4-8 partial sums);
    rows are short (M values), the float64 totals are kept by the caller. (A plain call, not
    inlined, for the reason given at epilogue.relu_grad_row.)"""
    s1 = a[0] * 0
    s2 = a[0] * 0
    for k in range(uintp(a.shape[0])):
        d = a[k] - shift
        s1 += d
        s2 += d * (b[k] - shift)
    return s1, s2


def batchnorm_stats(x):
    """Per-channel mean and (biased) variance of x (N, C, M), in x's dtype."""
    x = np.ascontiguousarray(x)
    C = x.shape[1]
    mean, var = np.empty(C, dtype=x.dtype), np.empty(C, dtype=x.dtype)
    in_parallel(_stats_share, threads_for(C), x, mean, var)
    return mean, var


@njit(**JIT)
def _stats_share(t, nchunks, x, mean, var):
    # One pass over values shifted by the channel's first value p: with d = x - p,
    # mean = p + E[d] and var = E[d^2] - E[d]^2. Because p is a sample of the channel,
    # E[d]^2 is of the order of var and the subtraction loses little (the textbook
    # E[x^2] - E[x]^2 loses everything when |mean| >> std).
    N, C, M = x.shape
    m = N * M
    c0, c1 = share_range(t, nchunks, C)
    for c in range(c0, c1):
        p = x[0, c, 0]
        s1, s2 = 0.0, 0.0
        for n in range(N):
            row = x[n, c]
            r1, r2 = _row_sums(row, row, p)
            s1 += r1
            s2 += r2
        e1 = s1 / m
        mean[c], var[c] = p + e1, max(s2 / m - e1 * e1, 0.0)


def batchnorm_forward(x, gamma, beta, mean, inv_std):
    """y = gamma * xhat + beta and xhat = (x - mean) * inv_std, written in one pass."""
    x, dt = np.ascontiguousarray(x), x.dtype
    y, xhat = np.empty_like(x), np.empty_like(x)
    in_parallel(_forward_share, threads_for(x.shape[1]), x, gamma.astype(dt, copy=False), beta.astype(dt, copy=False),
                mean.astype(dt, copy=False), inv_std.astype(dt, copy=False), y, xhat)
    return y, xhat


@njit(**JIT)
def _forward_share(t, nchunks, x, gamma, beta, mean, inv_std, y, xhat):
    N, C, M = x.shape
    c0, c1 = share_range(t, nchunks, C)
    for c in range(c0, c1):
        mu, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        for n in range(N):
            for k in range(uintp(M)):
                h = (x[n, c, k] - mu) * s
                xhat[n, c, k] = h
                y[n, c, k] = g * h + b


def batchnorm_backward(dy, xhat, gamma, inv_std, training):
    """dx, dgamma, dbeta; in training the batch statistics' own gradients are included."""
    dy, dt = np.ascontiguousarray(dy), dy.dtype
    C = dy.shape[1]
    dx = np.empty_like(dy)
    dgamma, dbeta = np.empty(C, dtype=dt), np.empty(C, dtype=dt)
    in_parallel(_backward_share, threads_for(C), dy, xhat, gamma.astype(dt, copy=False), inv_std.astype(dt, copy=False),
                bool(training), dx, dgamma, dbeta)
    return dx, dgamma, dbeta


@njit(**JIT)
def _backward_share(t, nchunks, dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta):
    N, C, M = dy.shape
    m = N * M
    held = np.zeros(2, dtype=dy.dtype)       # dbeta / m and dgamma / m (training only), held in
    zero = held[0]                           # dy's dtype so the inner loop stays float32
    c0, c1 = share_range(t, nchunks, C)
    for c in range(c0, c1):
        sb, sg = 0.0, 0.0
        for n in range(N):
            # (shift 0 in dy's dtype: an int 0 made Numba compile a second, float64 _row_sums)
            r1, r2 = _row_sums(dy[n, c], xhat[n, c], zero)
            sb += r1
            sg += r2
        dbeta[c], dgamma[c] = sb, sg
        if training:
            held[0], held[1] = sb / m, sg / m
        scale, mb, mg = gamma[c] * inv_std[c], held[0], held[1]
        for n in range(N):
            for k in range(uintp(M)):
                dx[n, c, k] = scale * (dy[n, c, k] - mb - xhat[n, c, k] * mg)
