"""Fast kernels, jitted with Numba. Same names, signatures and results as `reference.py`.

How the convolution is laid out, and why:
- The batch is cut into blocks of a few images. For each block, im2col builds its columns
  (C*kh*kw, g*OH*OW) in a small buffer (about 1 MB, so it stays in the CPU cache), one
  BLAS matrix product turns them into the block's outputs, and the result is written out
  in NCHW with the bias added. The full-batch column matrix (17 MB for MNIST's second conv
  at batch 128, 39 MB for a 5x5 one at batch 256) is never built: on these machines a
  fresh large array costs ~3 us per 4 KB page just to touch, which is more than the
  arithmetic.
- Blocks are shared among the threads with `prange` over contiguous runs of blocks; each
  thread owns its images' outputs (and, backward, their dx) so no two threads write the
  same element. The weight gradient is summed per thread, then the per-thread sums are
  added, so results do not depend on timing.
- The backward pass rebuilds each block's columns instead of keeping them from the forward
  pass: rebuilding from cache-hot input is cheaper than storing and re-reading them.
- im2col copies whole runs of a row at a time: for each kernel column j it works out once
  which output columns read inside the image (lo..hi); the rest are padding zeros. No
  per-element bounds test in the inner loop, so it compiles to straight copies.
- Pooling finds the maximum and remembers its tap in one pass, prange over N*C planes.
Functions compile on first use for the dtype they see (float32 in training, float64 in
gradient checks); `cache=True` keeps the machine code on disk between runs.
"""
import ctypes

import numba
import numpy as np
from numba import njit, prange, uintp

from ..runtime import single_threaded_scipy_blas
from .reference import conv_output_size

single_threaded_scipy_blas()      # np.dot below is called from several threads at once

_jit = dict(cache=True, nogil=True)
_BLOCK_BYTES = 1 << 19          # target size of one block's column buffer (measured: 256 KB-1 MB best)


# -- the matrix product ------------------------------------------------------------------
# Numba's np.dot calls SciPy's BLAS. For this library's thin products NumPy's own OpenBLAS
# is up to 2x faster (measured single-threaded: LeNet's 6x25 @ 25x4704 at 13 GFLOP/s via
# np.dot in Numba, 34 via NumPy's BLAS; 16x150 @ 150x3400 at 33 and 65; convnet's
# 64x288 @ 288x363 at 60 and 80), so float32 products call NumPy's cblas_sgemm directly,
# through ctypes (runtime.one_thread_pool holds that BLAS to one thread while a model runs,
# so each of Numba's threads runs its own product). The function is passed to the kernels as an argument (a ctypes function
# is a first-class value in Numba, and its address is not baked into the cached code).
# Where it cannot be found (a NumPy built on another BLAS) and for float64, gemm is None
# and the kernels use np.dot.

def _find_numpy_sgemm():
    """NumPy's cblas_sgemm as a ctypes function, or None."""
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            if info["user_api"] == "blas" and "numpy" in info["filepath"].lower():
                lib = ctypes.CDLL(info["filepath"])
                for name, index in (("scipy_cblas_sgemm64_", ctypes.c_int64), ("cblas_sgemm64_", ctypes.c_int64),
                                    ("cblas_sgemm", ctypes.c_int)):
                    fn = getattr(lib, name, None)
                    if fn is not None:
                        i, f, p = index, ctypes.c_float, ctypes.c_void_p
                        # (order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
                        fn.argtypes = [ctypes.c_int] * 3 + [i, i, i, f, p, i, p, i, f, p, i]
                        fn.restype = None
                        return fn
    except Exception:          # any surprise here just means the np.dot path
        return None
    return None


_SGEMM = _find_numpy_sgemm()


def _gemm_for(dtype):
    return _SGEMM if dtype == np.float32 else None


@njit(**_jit)
def _matmul(gemm, a, trans_a, b, trans_b, c, beta):
    """c = op(a) @ op(b) + beta * c, op(m) = m.T when trans_*; a, b, c C-contiguous."""
    if gemm is None:                                       # (Numba compiles only one branch)
        aa = np.ascontiguousarray(a.T) if trans_a else a
        bb = np.ascontiguousarray(b.T) if trans_b else b
        if beta == 0:
            c[:] = np.dot(aa, bb)
        else:
            c *= beta
            c += np.dot(aa, bb)
    else:
        M, N = c.shape
        K = a.shape[0] if trans_a else a.shape[1]
        # CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
        gemm(101, 112 if trans_a else 111, 112 if trans_b else 111, M, N, K, 1.0,
             a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, N)


@njit(inline="always", **_jit)
def _valid_columns(j, sw, pw, OW, W):
    """The output columns ow for which input column ow*sw + j - pw lies inside [0, W)."""
    lo = 0
    while lo < OW and lo * sw + j - pw < 0:
        lo += 1
    hi = OW
    while hi > lo and (hi - 1) * sw + j - pw >= W:
        hi -= 1
    return lo, hi


@njit(inline="always", **_jit)
def _im2col_image(x, n, cols, col0, kh, kw, sh, sw, ph, pw, OH, OW):
    """Write image n's columns into cols[:, col0 : col0 + OH*OW]."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for j in range(kw):
        lo, hi = _valid_columns(j, sw, pw, OW, W)
        for c in range(C):
            plane = x[n, c]
            for i in range(kh):
                row = cols[(c * kh + i) * kw + j]
                for oh in range(OH):
                    h = oh * sh + i - ph
                    base = uintp(col0 + oh * OW)       # unsigned: no negative-index checks
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            row[base + uintp(ow)] = 0
                        continue
                    src = plane[h]
                    for ow in range(lo):
                        row[base + uintp(ow)] = 0
                    for ow in range(lo, hi):
                        row[base + uintp(ow)] = src[uintp(ow * sw + j - pw)]
                    for ow in range(hi, OW):
                        row[base + uintp(ow)] = 0


@njit(inline="always", **_jit)
def _col2im_image(cols, col0, dx, n, kh, kw, sh, sw, ph, pw, OH, OW):
    """Add cols[:, col0 : col0 + OH*OW] back into image n of dx (the adjoint of the above)."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    for j in range(kw):
        lo, hi = _valid_columns(j, sw, pw, OW, W)
        for c in range(C):
            plane = dx[n, c]
            for i in range(kh):
                row = cols[(c * kh + i) * kw + j]
                for oh in range(OH):
                    h = oh * sh + i - ph
                    if h < 0 or h >= H:
                        continue
                    base = uintp(col0 + oh * OW)
                    dst = plane[h]
                    for ow in range(lo, hi):
                        dst[uintp(ow * sw + j - pw)] += row[base + uintp(ow)]


@njit(parallel=True, **_jit)
def _im2col(x, kh, kw, sh, sw, ph, pw, OH, OW):
    N, C = x.shape[0], x.shape[1]
    P = OH * OW
    cols = np.empty((C * kh * kw, N * P), dtype=x.dtype)
    for n in prange(N):
        _im2col_image(x, n, cols, n * P, kh, kw, sh, sw, ph, pw, OH, OW)
    return cols


@njit(parallel=True, **_jit)
def _col2im(cols, N, C, H, W, kh, kw, sh, sw, ph, pw, OH, OW):
    P = OH * OW
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    for n in prange(N):
        _col2im_image(cols, n * P, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)
    return dx


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


# -- convolution ------------------------------------------------------------------------

@njit(parallel=True, **_jit)
def _conv_forward(x, Wm, b, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, relu, gemm):
    N = x.shape[0]
    F, K = Wm.shape
    P = OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    nblocks = (N + group - 1) // group
    for t in prange(nchunks):
        for blk in range(t * nblocks // nchunks, (t + 1) * nblocks // nchunks):
            n0, n1 = blk * group, min(N, (blk + 1) * group)
            cols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)     # (C*kh*kw, g*P)
            for n in range(n0, n1):
                _im2col_image(x, n, cols, (n - n0) * P, kh, kw, sh, sw, ph, pw, OH, OW)
            out = np.empty((F, (n1 - n0) * P), dtype=x.dtype)
            _matmul(gemm, Wm, False, cols, False, out, 0.0)        # (F, g*P), BLAS
            for n in range(n0, n1):                                 # -> NCHW, plus bias
                c0 = (n - n0) * P                                   # (and ReLU: no extra pass)
                for f in range(F):
                    bf = b[f]
                    if relu:
                        for p in range(P):
                            y[n, f, p] = max(out[f, c0 + p] + bf, 0)
                    else:
                        for p in range(P):
                            y[n, f, p] = out[f, c0 + p] + bf
    return y


@njit(fastmath={"reassoc"}, **_jit)
def _relu_grad_row(dy_row, y_row, dst, relu):
    """dst = dy_row where y_row > 0, else 0 (the ReLU's derivative; without relu, a copy).
    Returns sum(dst), the row's share of the bias gradient, from the same pass. The select
    compiles to a blend, not a branch (signs are random: a branch would be mispredicted
    half the time); 'reassoc' lets the sum vectorise. Not inline="always": Numba would
    inline it at its IR level, where the caller's flags replace 'reassoc' (measured 4x slower)."""
    zero = dy_row[0] * 0
    total = zero
    for p in range(uintp(dy_row.shape[0])):
        v = dy_row[p] if not relu or y_row[p] > 0 else zero
        dst[p] = v
        total += v
    return total


@njit(parallel=True, **_jit)
def _conv_backward(x, dy, y, Wm, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, need_dx, relu, gemm):
    N, C, H, W = x.shape
    F, K = Wm.shape
    P = OH * OW
    dx = np.empty((N, C, H, W) if need_dx else (0, C, H, W), dtype=x.dtype)  # zeroed per image
    dW_parts = np.zeros((nchunks, F, K), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    nblocks = (N + group - 1) // group
    for t in prange(nchunks):
        for blk in range(t * nblocks // nchunks, (t + 1) * nblocks // nchunks):
            n0, n1 = blk * group, min(N, (blk + 1) * group)
            cols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)
            dy_blk = np.empty((F, (n1 - n0) * P), dtype=x.dtype)   # dy in the GEMM's layout
            for n in range(n0, n1):
                c0 = (n - n0) * P
                _im2col_image(x, n, cols, c0, kh, kw, sh, sw, ph, pw, OH, OW)
                for f in range(F):
                    db_parts[t, f] += _relu_grad_row(dy[n, f], y[n, f], dy_blk[f, c0:c0 + P], relu)
            _matmul(gemm, dy_blk, False, cols, True, dW_parts[t], 1.0)     # dW += dY cols^T
            if need_dx:
                dcols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)
                _matmul(gemm, Wm, True, dy_blk, False, dcols, 0.0)          # W^T dY, then col2im
                for n in range(n0, n1):
                    dx[n] = 0
                    _col2im_image(dcols, (n - n0) * P, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)
    dW = dW_parts[0].copy()
    for t in range(1, nchunks):
        dW += dW_parts[t]
    db = np.empty(F, dtype=x.dtype)
    for f in range(F):
        db[f] = db_parts[:, f].sum()
    return dx, dW, db


def _blocking(N, K, P, itemsize):
    """Images per block (so one block's columns fill about _BLOCK_BYTES) and thread chunks."""
    group = max(1, min(N, _BLOCK_BYTES // (K * P * itemsize)))
    nblocks = -(-N // group)
    return group, max(1, min(numba.get_num_threads(), nblocks))


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """Returns y and, as the cache, x itself (the backward pass rebuilds columns from it) and,
    with relu, y. The ReLU is applied as the output is written and its derivative as dy is
    copied into the GEMM's layout: no separate passes over the activations, no mask array."""
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(Wd, kw, sw, pw)
    x = np.ascontiguousarray(x)
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    bias = b if b is not None else np.zeros(F, dtype=x.dtype)
    group, nchunks = _blocking(N, Wm.shape[1], OH * OW, x.itemsize)
    y = _conv_forward(x, Wm, bias, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, relu,
                      _gemm_for(x.dtype))
    y = y.reshape(N, F, OH, OW)
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    x, y = cache
    N = x.shape[0]
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    OH, OW = dy.shape[2], dy.shape[3]
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    group, nchunks = _blocking(N, Wm.shape[1], OH * OW, x.itemsize)
    dy = np.ascontiguousarray(dy).reshape(N, F, -1)
    relu = y is not None
    dx, dW, db = _conv_backward(x, dy, y.reshape(N, F, -1) if relu else dy, Wm, kh, kw, sh, sw,
                                ph, pw, OH, OW, group, nchunks, need_dx, relu, _gemm_for(x.dtype))
    return (dx if need_dx else None), dW.reshape(W.shape), db


# -- pooling ----------------------------------------------------------------------------

@njit(parallel=True, **_jit)
def _maxpool_forward(x, kh, kw, sh, sw, OH, OW, need_argmax):
    N, C = x.shape[0], x.shape[1]
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW) if need_argmax else (0, 0, 0, 0), dtype=np.int32)
    # The common 2x2 window with stride 2 gets its own loop: the four taps are named, so
    # the compiler keeps everything in registers (measured 2-2.5x faster than the general
    # loop with argmax, and twice that again without it, as in eval mode).
    two_by_two = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for nc in prange(N * C):
        n, c = uintp(nc // C), uintp(nc % C)     # unsigned indices: no wrap-around checks
        plane, out = x[n, c], y[n, c]
        for a in range(uintp(OH)):
            if two_by_two:
                r0, r1, o = plane[2 * a], plane[2 * a + 1], out[a]
                if need_argmax:
                    arg = argmax[n, c, a]
                    for b in range(uintp(OW)):
                        best, tap = r0[2 * b], np.int32(0)
                        if r0[2 * b + 1] > best:          # strict: the first maximum wins ties
                            best, tap = r0[2 * b + 1], np.int32(1)
                        if r1[2 * b] > best:
                            best, tap = r1[2 * b], np.int32(2)
                        if r1[2 * b + 1] > best:
                            best, tap = r1[2 * b + 1], np.int32(3)
                        o[b], arg[b] = best, tap
                else:
                    for b in range(uintp(OW)):
                        o[b] = max(max(r0[2 * b], r0[2 * b + 1]), max(r1[2 * b], r1[2 * b + 1]))
                continue
            for b in range(uintp(OW)):
                h0, w0 = a * uintp(sh), b * uintp(sw)
                best, tap = plane[h0, w0], 0
                for i in range(uintp(kh)):
                    for j in range(uintp(kw)):
                        v = plane[h0 + i, w0 + j]
                        if v > best:          # strict: the first maximum wins ties
                            best, tap = v, i * kw + j
                out[a, b] = best
                if need_argmax:
                    argmax[n, c, a, b] = tap
    return y, argmax


@njit(parallel=True, **_jit)
def _maxpool_backward(dy, argmax, H, W, kh, kw, sh, sw):
    N, C, OH, OW = dy.shape
    # Each thread zeroes the planes it then scatters into (one pass over memory, not a
    # separate np.zeros of the whole batch first).
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    for nc in prange(N * C):
        n, c = uintp(nc // C), uintp(nc % C)
        grad, arg, plane = dy[n, c], argmax[n, c], dx[n, c]
        plane[:] = 0
        for a in range(uintp(OH)):
            for b in range(uintp(OW)):
                tap = uintp(arg[a, b])
                plane[a * uintp(sh) + tap // uintp(kw), b * uintp(sw) + tap % uintp(kw)] += grad[a, b]
    return dx


@njit(parallel=True, **_jit)
def _avgpool_forward(x, kh, kw, sh, sw, OH, OW):
    N, C = x.shape[0], x.shape[1]
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


def maxpool2d_forward(x, kh, kw, sh, sw, need_argmax=True):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    y, argmax = _maxpool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, OH, OW, need_argmax)
    return y, (argmax if need_argmax else None)


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    return _maxpool_backward(np.ascontiguousarray(dy), argmax, x_shape[2], x_shape[3], kh, kw, sh, sw)


def avgpool2d_forward(x, kh, kw, sh, sw):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    return _avgpool_forward(np.ascontiguousarray(x), kh, kw, sh, sw, OH, OW)


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    return _avgpool_backward(np.ascontiguousarray(dy), x_shape[2], x_shape[3], kh, kw, sh, sw)


# -- ReLU ---------------------------------------------------------------------------------
# One parallel pass that writes y and the mask together (NumPy needs one pass for each, on
# one thread). Arrays are viewed flat and cut into one contiguous run per thread.

@njit(parallel=True, **_jit)
def _relu_forward(x, nchunks):
    y = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    n = x.size
    for t in prange(nchunks):
        # unsigned bounds: with signed ones Numba checks every index for wrap-around and the
        # loop does not vectorise (measured 8x slower)
        for k in range(uintp(t * n // nchunks), uintp((t + 1) * n // nchunks)):
            v = x[k]
            mask[k] = v > 0
            y[k] = max(v, 0)
    return y, mask


@njit(parallel=True, **_jit)
def _relu_backward(dy, mask, nchunks):
    dx = np.empty_like(dy)
    n = dy.size
    for t in prange(nchunks):
        for k in range(uintp(t * n // nchunks), uintp((t + 1) * n // nchunks)):
            dx[k] = dy[k] * mask[k]
    return dx


def relu_forward(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    y, mask = _relu_forward(flat, numba.get_num_threads())
    return y.reshape(x.shape), mask.reshape(x.shape)


def relu_backward(dy, mask):
    flat = np.ascontiguousarray(dy).reshape(-1)
    return _relu_backward(flat, mask.reshape(-1), numba.get_num_threads()).reshape(dy.shape)


# -- Batch normalisation ------------------------------------------------------------------
# prange over channels: each thread owns whole channels, so the per-channel sums need no
# merging, and each channel's values are N contiguous runs of M. Each run is summed in the
# input's dtype (vectorised), the run sums are added in float64 (m is 10^5-10^6 values per
# channel; one float32 running sum would lose digits). Statistics take one pass, forward
# one (writing y and xhat together), backward two: the sums, then dx.

@njit(fastmath={"reassoc"}, **_jit)
def _row_sums(a, b, shift):
    """sum(a - shift) and sum((a - shift) * (b - shift)) over one contiguous row, in a's dtype.
    'reassoc' lets LLVM reorder the additions so the loop vectorises (4-8 partial sums);
    rows are short (M values), the float64 totals are kept by the caller. (A plain call, not
    inlined, for the reason given at _relu_grad_row.)"""
    s1 = a[0] * 0
    s2 = a[0] * 0
    for k in range(uintp(a.shape[0])):
        d = a[k] - shift
        s1 += d
        s2 += d * (b[k] - shift)
    return s1, s2


@njit(parallel=True, **_jit)
def _batchnorm_stats(x):
    # One pass over values shifted by the channel's first value p: with d = x - p,
    # mean = p + E[d] and var = E[d^2] - E[d]^2. Because p is a sample of the channel,
    # E[d]^2 is of the order of var and the subtraction loses little (the textbook
    # E[x^2] - E[x]^2 loses everything when |mean| >> std).
    N, C, M = x.shape
    mean = np.empty(C, dtype=x.dtype)
    var = np.empty(C, dtype=x.dtype)
    m = N * M
    for c in prange(C):
        p = x[0, c, 0]
        s1, s2 = 0.0, 0.0
        for n in range(N):
            row = x[n, c]
            r1, r2 = _row_sums(row, row, p)
            s1 += r1
            s2 += r2
        e1 = s1 / m
        mean[c], var[c] = p + e1, max(s2 / m - e1 * e1, 0.0)
    return mean, var


@njit(parallel=True, **_jit)
def _batchnorm_forward(x, gamma, beta, mean, inv_std):
    N, C, M = x.shape
    y = np.empty_like(x)
    xhat = np.empty_like(x)
    for c in prange(C):
        mu, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        for n in range(N):
            for k in range(uintp(M)):
                h = (x[n, c, k] - mu) * s
                xhat[n, c, k] = h
                y[n, c, k] = g * h + b
    return y, xhat


@njit(parallel=True, **_jit)
def _batchnorm_backward(dy, xhat, gamma, inv_std, training):
    N, C, M = dy.shape
    dx = np.empty_like(dy)
    dgamma = np.empty(C, dtype=dy.dtype)
    dbeta = np.empty(C, dtype=dy.dtype)
    mean_b = np.zeros(C, dtype=dy.dtype)     # dbeta / m and dgamma / m, held in dy's dtype
    mean_g = np.zeros(C, dtype=dy.dtype)     # so the inner loop stays float32
    m = N * M
    for c in prange(C):
        sb, sg = 0.0, 0.0
        for n in range(N):
            r1, r2 = _row_sums(dy[n, c], xhat[n, c], 0)
            sb += r1
            sg += r2
        dbeta[c], dgamma[c] = sb, sg
        if training:
            mean_b[c], mean_g[c] = sb / m, sg / m
        scale, mb, mg = gamma[c] * inv_std[c], mean_b[c], mean_g[c]
        for n in range(N):
            for k in range(uintp(M)):
                dx[n, c, k] = scale * (dy[n, c, k] - mb - xhat[n, c, k] * mg)
    return dx, dgamma, dbeta


def batchnorm_stats(x):
    return _batchnorm_stats(np.ascontiguousarray(x))


def batchnorm_forward(x, gamma, beta, mean, inv_std):
    dt = x.dtype
    return _batchnorm_forward(np.ascontiguousarray(x), gamma.astype(dt, copy=False), beta.astype(dt, copy=False),
                              mean.astype(dt, copy=False), inv_std.astype(dt, copy=False))


def batchnorm_backward(dy, xhat, gamma, inv_std, training):
    dt = dy.dtype
    return _batchnorm_backward(np.ascontiguousarray(dy), xhat, gamma.astype(dt, copy=False),
                               inv_std.astype(dt, copy=False), bool(training))
