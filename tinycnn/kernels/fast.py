"""Fast kernels, jitted with Numba. Same names, signatures and results as `reference.py`.

Why they are laid out so:
- im2col/col2im are one pass over memory, with padding handled by bounds checks instead of
  a padded copy of the input. They run `prange` over the batch: image n owns its slice
  of columns (forward) and its slice of dx (backward), so threads never write the same
  element and need no locks.
- The matrix products stay in NumPy (OpenBLAS): one large GEMM per convolution is
  what the machine does fastest. Numba and OpenBLAS each use their own thread pool, but
  they take turns (a kernel, then a GEMM), so they never compete for the two cores.
- The transposes between the GEMM's (F, N*P) layout and NCHW are fused with the bias add
  (forward) and the bias-gradient sum (backward), saving a pass over the data each.
- Pooling finds the maximum and remembers where it was in one pass (prange over N*C
  planes; overlapping windows only ever touch their own plane).
All functions are compiled on first use for the dtype they see (float32 in training,
float64 in gradient checks); `cache=True` keeps the machine code on disk between runs.
"""
import numpy as np
from numba import njit, prange

from .reference import conv_output_size

_jit = dict(cache=True, nogil=True)


@njit(parallel=True, **_jit)
def _im2col(x, kh, kw, sh, sw, ph, pw, OH, OW):
    N, C, H, W = x.shape
    P = OH * OW
    cols = np.empty((C * kh * kw, N * P), dtype=x.dtype)
    for n in prange(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    r = (c * kh + i) * kw + j
                    for oh in range(OH):
                        h = oh * sh + i - ph
                        base = n * P + oh * OW
                        if h < 0 or h >= H:
                            for ow in range(OW):
                                cols[r, base + ow] = 0
                            continue
                        for ow in range(OW):
                            w = ow * sw + j - pw
                            if 0 <= w < W:
                                cols[r, base + ow] = x[n, c, h, w]
                            else:
                                cols[r, base + ow] = 0
    return cols


@njit(parallel=True, **_jit)
def _col2im(cols, N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW):
    P = OH * OW
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    for n in prange(N):
        for c in range(C):
            for i in range(kh):
                for j in range(kw):
                    r = (c * kh + i) * kw + j
                    for oh in range(OH):
                        h = oh * sh + i - ph
                        if h < 0 or h >= H:
                            continue
                        base = n * P + oh * OW
                        for ow in range(OW):
                            w = ow * sw + j - pw
                            if 0 <= w < W:
                                dx[n, c, h, w] += cols[r, base + ow]
    return dx


@njit(parallel=True, **_jit)
def _fp_to_nchw_plus_bias(out, b, N):
    # out (F, N*P) from the GEMM -> y (N, F, P), adding b[f] on the way.
    F = out.shape[0]
    P = out.shape[1] // N
    y = np.empty((N, F, P), dtype=out.dtype)
    for n in prange(N):
        for f in range(F):
            bf = b[f]
            for p in range(P):
                y[n, f, p] = out[f, n * P + p] + bf
    return y


@njit(parallel=True, **_jit)
def _nchw_to_fp_and_sum(dy):
    # dy (N, F, P) -> (F, N*P) for the GEMMs, and db[f] = sum of dy[:, f, :] on the way.
    N, F, P = dy.shape
    out = np.empty((F, N * P), dtype=dy.dtype)
    db = np.empty(F, dtype=dy.dtype)
    for f in prange(F):
        acc = 0.0
        for n in range(N):
            for p in range(P):
                v = dy[n, f, p]
                out[f, n * P + p] = v
                acc += v
        db[f] = acc
    return out, db


def im2col(x, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    return _im2col(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, OH, OW)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    return _col2im(np.ascontiguousarray(cols), N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW)


def conv2d_forward(x, W, b, stride, padding):
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(Wd, kw, sw, pw)
    cols = _im2col(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, OH, OW)
    out = W.reshape(F, -1) @ cols                                  # (F, N*P)
    bias = b if b is not None else np.zeros(F, dtype=out.dtype)
    y = _fp_to_nchw_plus_bias(out, bias, N)                        # (N, F, P)
    return y.reshape(N, F, OH, OW), cols


def conv2d_backward(dy, cols, x_shape, W, stride, padding, need_dx=True):
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    N = dy.shape[0]
    dy_mat, db = _nchw_to_fp_and_sum(np.ascontiguousarray(dy).reshape(N, F, -1))
    dW = (dy_mat @ cols.T).reshape(W.shape)
    dx = None
    if need_dx:
        dcols = W.reshape(F, -1).T @ dy_mat                        # (C*kh*kw, N*P)
        dx = col2im(dcols, x_shape, kh, kw, sh, sw, ph, pw)
    return dx, dW, db


@njit(parallel=True, **_jit)
def _maxpool_forward(x, kh, kw, sh, sw, OH, OW):
    N, C, H, W = x.shape
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                h0, w0 = a * sh, b * sw
                best = x[n, c, h0, w0]
                tap = 0
                for i in range(kh):
                    for j in range(kw):
                        v = x[n, c, h0 + i, w0 + j]
                        if v > best:          # strict: the first maximum wins ties
                            best = v
                            tap = i * kw + j
                y[n, c, a, b] = best
                argmax[n, c, a, b] = tap
    return y, argmax


@njit(parallel=True, **_jit)
def _maxpool_backward(dy, argmax, H, W, kh, kw, sh, sw):
    N, C, OH, OW = dy.shape
    dx = np.zeros((N, C, H, W), dtype=dy.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                tap = argmax[n, c, a, b]
                dx[n, c, a * sh + tap // kw, b * sw + tap % kw] += dy[n, c, a, b]
    return dx


@njit(parallel=True, **_jit)
def _avgpool_forward(x, kh, kw, sh, sw, OH, OW):
    N, C, H, W = x.shape
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                acc = 0.0
                for i in range(kh):
                    for j in range(kw):
                        acc += x[n, c, a * sh + i, b * sw + j]
                y[n, c, a, b] = acc / (kh * kw)
    return y


@njit(parallel=True, **_jit)
def _avgpool_backward(dy, H, W, kh, kw, sh, sw):
    N, C, OH, OW = dy.shape
    dx = np.zeros((N, C, H, W), dtype=dy.dtype)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                share = dy[n, c, a, b] / (kh * kw)
                for i in range(kh):
                    for j in range(kw):
                        dx[n, c, a * sh + i, b * sw + j] += share
    return dx


def maxpool2d_forward(x, kh, kw, sh, sw):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    return _maxpool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, OH, OW)


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    return _maxpool_backward(np.ascontiguousarray(dy), argmax, x_shape[2], x_shape[3], kh, kw, sh, sw)


def avgpool2d_forward(x, kh, kw, sh, sw):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    return _avgpool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, OH, OW)


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    return _avgpool_backward(np.ascontiguousarray(dy), x_shape[2], x_shape[3], kh, kw, sh, sw)
