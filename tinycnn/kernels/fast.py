"""Fast kernels, jitted with Numba. Same names, signatures and results as `reference.py`.

How the convolution is laid out, and why:
- The batch is cut into blocks of a few images. For each block, im2col builds its columns
  (C*kh*kw, g*OH*OW) in a small buffer (about 1 MB, so it stays in the CPU cache), one
  BLAS matrix product turns them into the block's outputs, and the result is written out
  in NCHW with the bias added. The full-batch column matrix (17 MB for MNIST's second conv
  at batch 128, 39 MB for a 5x5 one at batch 256) is never built: on these machines a
  fresh large array costs ~3 us per 4 KB page just to touch, which is more than the
  arithmetic.
- Blocks are shared among the threads in contiguous runs of blocks (`_on_threads`, below,
  says why these threads are Python's and not prange's); each thread owns its images'
  outputs (and, backward, their dx) so no two threads write the same element. The weight gradient is summed per thread, then the per-thread sums are
  added, so results do not depend on timing.
- The backward pass rebuilds each block's columns instead of keeping them from the forward
  pass: rebuilding from cache-hot input is cheaper than storing and re-reading them.
- im2col copies whole runs of a row at a time: for each kernel column j it works out once
  which output columns read inside the image (lo..hi); the rest are padding zeros. No
  per-element bounds test in the inner loop, so it compiles to straight copies.
- For stride 1 and few channels (C*F small: the first layers) a direct method replaces
  im2col + GEMM; see "convolution, direct" below.
- conv2d_relu_maxpool2_* fuse a ReLU convolution with the 2x2 max pooling after it: each
  output plane is pooled as it is written (see tinycnn/layers/fused.py for why).
- Pooling finds the maximum and remembers its tap in one pass, prange over N*C planes.
Functions compile on first use for the dtype they see (float32 in training, float64 in
gradient checks); `cache=True` keeps the machine code on disk between runs.
"""
import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import njit, types, uintp
from numba.extending import overload

from ..runtime import single_threaded_scipy_blas
from .reference import conv_output_size

single_threaded_scipy_blas()      # np.dot below is called from several threads at once

_jit = dict(cache=True, nogil=True)
# Compile time. A cold start (empty Numba cache) compiles every kernel a model uses, and
# nearly all of that is LLVM's work (cProfile of one cold convolution kernel: 27 of 30 s of
# CPU). A parallel=True kernel is generated about three times over: its loop body becomes a
# "gufunc", a wrapper calls that, the kernel calls the wrapper, and each level is optimised
# and turned into machine code with the levels below linked in. Each convolution kernel
# cost 9-12 s of CPU that way. The convolutions, the largest kernels, are therefore ordinary
# jitted functions that do one thread's share of the batch (`_conv_*_blocks`,
# `_conv_*_images`), started on Python threads by `_on_threads`; `nogil=True` lets them run
# at the same time (and so does max pooling). The small kernels (ReLU, batch norm, average
# pooling) keep prange. Measured,
# CPU seconds to compile everything fastnet's first training step needs: 33.5 -> 9.4
# (python benchmarks/bench_startup.py --kernels prints the table per kernel); warm training
# steps were not slower (all four built-in models alternated with the prange version in one
# process, 8 rounds of 10 steps: CPU per step lower for each, wall medians lower too).
_pool = None
_pool_lock = threading.Lock()


def _on_threads(nchunks, share):
    """Run share(t) for t = 0 .. nchunks-1 at the same time: share(0) on the calling thread,
    the others on a pool of nchunks - 1 threads kept for the process. Returns when all are done."""
    global _pool
    if nchunks == 1:
        share(0)
        return
    with _pool_lock:
        if _pool is None or _pool._max_workers < nchunks - 1:
            _pool = ThreadPoolExecutor(nchunks - 1, thread_name_prefix="tinycnn-kernel")
        pool = _pool
    others = [pool.submit(share, t) for t in range(1, nchunks)]
    share(0)
    for job in others:
        job.result()


# Handing a share to a pool thread and waiting for it costs ~100 us on these machines (two
# thread wake-ups), against ~6 us for Numba's spinning OpenMP workers. So a pass over few
# values stays on the calling thread: measured, ReLU forward over 2^18 float32 values took
# 42 us on one thread, 127 us on two; over 2^20, 162 us on either; over 2^22, 1608 and 1035.
_MIN_THREAD_VALUES = 1 << 20


def _split_on_threads(jobs, share, values_per_job=1):
    """share(lo, hi) for contiguous runs lo..hi-1 of range(jobs), one run per thread, via
    _on_threads; each thread gets at least _MIN_THREAD_VALUES values' worth of work."""
    nchunks = _threads_for(min(jobs, jobs * values_per_job // _MIN_THREAD_VALUES))
    _on_threads(nchunks, lambda t: share(t * jobs // nchunks, (t + 1) * jobs // nchunks))


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


def _matmul(gemm, a, trans_a, b, trans_b, c, beta):
    """c = op(a) @ op(b) + beta * c, op(m) = m.T when trans_*; a, b, c C-contiguous.
    For jitted code only: the overload below picks _matmul_blas or, when gemm is None,
    _matmul_dot while the caller is typed, so only the one in use is compiled. (An
    `if gemm is None` inside one function compiled both branches: measured 4.3 s of CPU
    for the unused np.dot path, 0.3 s for the BLAS call alone.)"""
    raise TypeError("_matmul runs inside jitted kernels only")


def _matmul_blas(gemm, a, trans_a, b, trans_b, c, beta):
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    # CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
    gemm(101, 112 if trans_a else 111, 112 if trans_b else 111, M, N, K, 1.0,
         a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, N)


def _matmul_dot(gemm, a, trans_a, b, trans_b, c, beta):
    aa = np.ascontiguousarray(a.T) if trans_a else a
    bb = np.ascontiguousarray(b.T) if trans_b else b
    if beta == 0:
        c[:] = np.dot(aa, bb)
    else:
        c *= beta
        c += np.dot(aa, bb)


@overload(_matmul, jit_options=dict(nogil=True))
def _matmul_typed(gemm, a, trans_a, b, trans_b, c, beta):
    return _matmul_dot if isinstance(gemm, types.NoneType) else _matmul_blas


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


@njit(**_jit)
def _im2col_images(x, cols, kh, kw, sh, sw, ph, pw, OH, OW, n0, n1):
    """Images n0..n1-1's columns, into cols (C*kh*kw, N*OH*OW)."""
    for n in range(n0, n1):
        _im2col_image(x, n, cols, n * OH * OW, kh, kw, sh, sw, ph, pw, OH, OW)


@njit(**_jit)
def _col2im_images(cols, dx, kh, kw, sh, sw, ph, pw, OH, OW, n0, n1):
    """Images n0..n1-1 of dx (zeroed first) from their columns."""
    for n in range(n0, n1):
        dx[n] = 0
        _col2im_image(cols, n * OH * OW, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)


def im2col(x, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    x = np.ascontiguousarray(x)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    _split_on_threads(N, lambda n0, n1: _im2col_images(x, cols, kh, kw, sh, sw, ph, pw, OH, OW, n0, n1),
                      cols.shape[0] * OH * OW)
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    cols = np.ascontiguousarray(cols)
    dx = np.empty((N, C, H, W), dtype=cols.dtype)
    _split_on_threads(N, lambda n0, n1: _col2im_images(cols, dx, kh, kw, sh, sw, ph, pw, OH, OW, n0, n1),
                      cols.shape[0] * OH * OW)
    return dx


# -- convolution ------------------------------------------------------------------------

def _conv_forward(x, Wm, b, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, relu, pool, taps, gemm):
    N, F = x.shape[0], Wm.shape[0]
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    nblocks = -(-N // group)
    _on_threads(nchunks, lambda t: _conv_forward_blocks(
        x, Wm, b, y, argmax, kh, kw, sh, sw, ph, pw, OH, OW, group, t * nblocks // nchunks,
        (t + 1) * nblocks // nchunks, relu, pool, taps, gemm))
    return y, argmax


@njit(**_jit)
def _conv_forward_blocks(x, Wm, b, y, argmax, kh, kw, sh, sw, ph, pw, OH, OW, group, blk0, blk1, relu, pool,
                         taps, gemm):
    """One thread's share of _conv_forward: the image blocks blk0..blk1-1, into y and argmax."""
    N = x.shape[0]
    F, K = Wm.shape
    P = OH * OW
    PH, PW = (OH // 2, OW // 2) if pool else (OH, OW)
    for blk in range(blk0, blk1):
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
                if taps:
                    _relu_maxpool2(out[f, c0:c0 + P].reshape(OH, OW), bf, y[n, f].reshape(PH, PW),
                                   argmax[n, f].reshape(PH, PW))
                elif pool:
                    _relu_maxpool2_values(out[f, c0:c0 + P].reshape(OH, OW), bf, y[n, f].reshape(PH, PW))
                elif relu:
                    for p in range(P):
                        y[n, f, p] = max(out[f, c0 + p] + bf, 0)
                else:
                    for p in range(P):
                        y[n, f, p] = out[f, c0 + p] + bf


@njit(inline="always", **_jit)
def _relu_maxpool2(conv, bias, out, arg):
    """ReLU and 2x2 / stride 2 max pooling of one conv output plane as it is written out:
    conv (rows, cols) holds the plane without its bias (rows and cols may run past the
    output). out[a, b] = max(window + bias, 0) and arg[a, b] = the window's tap 0..3
    (row-major) of its first maximum, as maxpool2d_forward would find on the ReLU's output.
    (Where the maximum is positive the ReLU changes nothing; where it is not, the pooled
    value is 0 and no gradient flows back, whichever tap it names.) Rows are taken as
    views: measured 1.7x faster than indexing one flat array."""
    PH, PW = out.shape
    for a in range(PH):
        r0, r1, o, g = conv[2 * a], conv[2 * a + 1], out[a], arg[a]
        for b in range(PW):
            best, tap = r0[2 * b] + bias, np.int8(0)
            v = r0[2 * b + 1] + bias
            if v > best:
                best, tap = v, np.int8(1)
            v = r1[2 * b] + bias
            if v > best:
                best, tap = v, np.int8(2)
            v = r1[2 * b + 1] + bias
            if v > best:
                best, tap = v, np.int8(3)
            o[b] = max(best, 0)
            g[b] = tap


@njit(inline="always", **_jit)
def _relu_maxpool2_values(conv, bias, out):
    """_relu_maxpool2 without the taps, for inference. (max(a + bias) = max(a) + bias
    exactly: rounding after an addition keeps the order.)"""
    PH, PW = out.shape
    for a in range(PH):
        r0, r1, o = conv[2 * a], conv[2 * a + 1], out[a]
        for b in range(PW):
            o[b] = max(max(max(r0[2 * b], r0[2 * b + 1]), max(r1[2 * b], r1[2 * b + 1])) + bias, 0)


@njit(inline="always", **_jit)
def _unpool_relu_grad(dpooled, pooled, arg, dconv):
    """The adjoint of _relu_maxpool2: window (a, b)'s gradient goes to its maximum's place in
    dconv (laid out as conv was) where the pooled value is positive. The rest of dconv must
    already be zero."""
    PH, PW = dpooled.shape
    for a in range(PH):
        d, p, g = dpooled[a], pooled[a], arg[a]
        for b in range(PW):
            tap = g[b]
            dconv[2 * a + (tap >> 1), 2 * b + (tap & 1)] = d[b] if p[b] > 0 else d[b] * 0


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


@njit(**_jit)
def _add_thread_parts(dW_parts, db_parts):
    """The weight and bias gradients from each thread's partial sums, added in a fixed order
    (so results do not depend on timing). db is summed in float64, returned in dW's dtype."""
    dW = dW_parts[0].copy()
    for t in range(1, dW_parts.shape[0]):
        dW += dW_parts[t]
    db = np.empty(db_parts.shape[1], dtype=dW.dtype)
    for f in range(db.shape[0]):
        db[f] = db_parts[:, f].sum()
    return dW, db


def _conv_backward(x, dy, y, argmax, Wm, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, need_dx, relu,
                   pool, gemm):
    N, C, H, W = x.shape
    F, K = Wm.shape
    dx = np.empty((N, C, H, W) if need_dx else (0, C, H, W), dtype=x.dtype)  # zeroed per image
    dW_parts = np.zeros((nchunks, F, K), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    nblocks = -(-N // group)
    _on_threads(nchunks, lambda t: _conv_backward_blocks(
        x, dy, y, argmax, Wm, dx, dW_parts[t], db_parts[t], kh, kw, sh, sw, ph, pw, OH, OW, group,
        t * nblocks // nchunks, (t + 1) * nblocks // nchunks, need_dx, relu, pool, gemm))
    dW, db = _add_thread_parts(dW_parts, db_parts)
    return dx, dW, db


@njit(**_jit)
def _conv_backward_blocks(x, dy, y, argmax, Wm, dx, dW, db, kh, kw, sh, sw, ph, pw, OH, OW, group, blk0, blk1,
                          need_dx, relu, pool, gemm):
    """One thread's share of _conv_backward: blocks blk0..blk1-1; their dx, and their sums
    added into this thread's dW (F, K) and db (F,)."""
    N = x.shape[0]
    F, K = Wm.shape
    P = OH * OW
    PH, PW = OH // 2, OW // 2
    for blk in range(blk0, blk1):
        n0, n1 = blk * group, min(N, (blk + 1) * group)
        cols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)
        dy_blk = np.empty((F, (n1 - n0) * P), dtype=x.dtype)   # dy in the GEMM's layout
        for n in range(n0, n1):
            c0 = (n - n0) * P
            _im2col_image(x, n, cols, c0, kh, kw, sh, sw, ph, pw, OH, OW)
            for f in range(F):
                if pool:                            # dy is the pooled output's gradient
                    row = dy_blk[f, c0:c0 + P]
                    row[:] = 0
                    _unpool_relu_grad(dy[n, f].reshape(PH, PW), y[n, f].reshape(PH, PW),
                                      argmax[n, f].reshape(PH, PW), row.reshape(OH, OW))
                    db[f] += _sum(row)
                else:
                    db[f] += _relu_grad_row(dy[n, f], y[n, f], dy_blk[f, c0:c0 + P], relu)
        _matmul(gemm, dy_blk, False, cols, True, dW, 1.0)     # dW += dY cols^T
        if need_dx:
            dcols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)
            _matmul(gemm, Wm, True, dy_blk, False, dcols, 0.0)          # W^T dY, then col2im
            for n in range(n0, n1):
                dx[n] = 0
                _col2im_image(dcols, (n - n0) * P, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)


# -- convolution, direct, for few channels ------------------------------------------------
# When C*F is small (MNIST's first layers: 1->6, 1->32, 6->16) the product above is thin,
# BLAS runs it far below peak, and im2col's copying costs as much as the arithmetic. For
# stride 1 there is a layout that needs neither. Pad the image once, to Hp x Wp, and flatten
# each plane. Output (oh, ow) reads input (oh + i, ow + j), at flat position
# (oh*Wp + ow) + (i*Wp + j). So compute outputs at every flat position q = oh*Wp + ow for
# q < L = (OH-1)*Wp + OW ("wide" outputs: each row carries Wp - OW extra columns, dropped
# at the end); then tap (c, i, j) adds w * xp[c, i*Wp + j + q] for all q at once, one long
# contiguous multiply-add over the image. Eight taps share each pass, so acc is loaded and
# stored once per eight multiply-adds.
# Backward is the same shape. dW[f, tap] is a dot product of the wide dy (zeros in the extra
# columns, so they add nothing) with the same shifted input. dx is the adjoint: input
# position r gets w * dy[r - (i*Wp + j)], a shifted sum over dy with negative offsets, so
# dy sits in a buffer with M = (kh-1)*Wp + kw-1 zeros in front.
# Which is faster depends on C*F (`python benchmarks/bench_conv_methods.py` times both on
# this library's layers). Forward, direct wins while the product is thin: LeNet's 1->6 5x5
# at batch 1000 12.4 -> 4.7 ms, the convnet's 1->32 3x3 at batch 128 1.5 -> 1.1 ms,
# 8->16 3x3 3.5 -> 2.8 ms; from 16->32 (C*F = 512) on BLAS wins, and by 1.5x at 32->64.
# LeNet's 6->16 (96) is close: LeNet-5's inference measured 22.1 ms per 1000 images with it
# on BLAS, 22.7 direct (alternated in one process), so it stays on BLAS. Backward, the weight
# gradient's dot products run well below the forward's multiply-adds, so direct wins only
# for the thinnest layer (1->6: 14.5 -> 9.1 ms without dx; 1->32: 2.4 -> 3.2 ms, a loss).
# The two passes need not agree: the GEMM backward rebuilds its columns from x anyway.

_DIRECT_FORWARD_MAX_CF = 64     # direct forward when C*F <= this
_DIRECT_BACKWARD_MAX_CF = 16    # direct backward when C*F <= this


def _use_direct(C, F, stride, max_cf):
    return tuple(stride) == (1, 1) and C * F <= max_cf


@njit(inline="always", **_jit)
def _shifted_sum(acc, src, w, offsets, n):
    """acc[q] += sum_k w[k] * src[offsets[k] + q] for q < n."""
    T = w.shape[0]
    k = 0
    while k + 8 <= T:                          # eight taps per pass over acc
        w0, w1, w2, w3, w4, w5, w6, w7 = w[k], w[k + 1], w[k + 2], w[k + 3], w[k + 4], w[k + 5], w[k + 6], w[k + 7]
        s0, s1, s2, s3 = uintp(offsets[k]), uintp(offsets[k + 1]), uintp(offsets[k + 2]), uintp(offsets[k + 3])
        s4, s5, s6, s7 = uintp(offsets[k + 4]), uintp(offsets[k + 5]), uintp(offsets[k + 6]), uintp(offsets[k + 7])
        for q in range(uintp(n)):
            acc[q] += ((w0 * src[s0 + q] + w1 * src[s1 + q] + w2 * src[s2 + q] + w3 * src[s3 + q])
                       + (w4 * src[s4 + q] + w5 * src[s5 + q] + w6 * src[s6 + q] + w7 * src[s7 + q]))
        k += 8
    while k < T:                               # the rest, one at a time
        wk, sk = w[k], uintp(offsets[k])
        for q in range(uintp(n)):
            acc[q] += wk * src[sk + q]
        k += 1


@njit(fastmath={"reassoc"}, **_jit)
def _shifted_dots(g, src, offsets, n, out):
    """out[k] += sum_q g[q] * src[offsets[k] + q] for q < n: _shifted_sum's weight gradient.
    'reassoc' lets each dot product vectorise (see _relu_grad_row on why not inlined)."""
    T = offsets.shape[0]
    k = 0
    while k + 8 <= T:
        s0, s1, s2, s3 = uintp(offsets[k]), uintp(offsets[k + 1]), uintp(offsets[k + 2]), uintp(offsets[k + 3])
        s4, s5, s6, s7 = uintp(offsets[k + 4]), uintp(offsets[k + 5]), uintp(offsets[k + 6]), uintp(offsets[k + 7])
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = g[0] * 0
        for q in range(uintp(n)):
            gq = g[q]
            a0 += gq * src[s0 + q]
            a1 += gq * src[s1 + q]
            a2 += gq * src[s2 + q]
            a3 += gq * src[s3 + q]
            a4 += gq * src[s4 + q]
            a5 += gq * src[s5 + q]
            a6 += gq * src[s6 + q]
            a7 += gq * src[s7 + q]
        out[k] += a0
        out[k + 1] += a1
        out[k + 2] += a2
        out[k + 3] += a3
        out[k + 4] += a4
        out[k + 5] += a5
        out[k + 6] += a6
        out[k + 7] += a7
        k += 8
    while k < T:
        sk = uintp(offsets[k])
        a = g[0] * 0
        for q in range(uintp(n)):
            a += g[q] * src[sk + q]
        out[k] += a
        k += 1


@njit(fastmath={"reassoc"}, **_jit)
def _sum(a):
    """sum(a) in a's dtype, vectorised."""
    total = a[0] * 0
    for q in range(uintp(a.shape[0])):
        total += a[q]
    return total


@njit(**_jit)
def _tap_offsets(C, kh, kw, plane, Wp, sign, shift):
    """shift + sign * (c*plane + i*Wp + j) for every tap (c, i, j), in W.reshape(F, -1)'s order."""
    offsets = np.empty(C * kh * kw, dtype=np.intp)
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                offsets[(c * kh + i) * kw + j] = shift + sign * (c * plane + i * Wp + j)
    return offsets


@njit(inline="always", **_jit)
def _pad_into(x, n, xp, ph, pw, Hp, Wp):
    """Copy image n into the interior of the flat padded buffer xp (borders stay as they are)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for c in range(C):
        for h in range(H):
            src = x[n, c, h]
            base = uintp(c * Hp * Wp + (h + ph) * Wp + pw)
            for w in range(uintp(W)):
                xp[base + w] = src[w]


def _conv_forward_direct(x, Wm, b, kh, kw, ph, pw, OH, OW, nchunks, relu, pool, taps):
    N, C, H, W = x.shape
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    offsets = _tap_offsets(C, kh, kw, Hp * Wp, Wp, 1, 0)
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    _on_threads(nchunks, lambda t: _conv_forward_direct_images(
        x, Wm, b, y, argmax, offsets, ph, pw, OH, OW, t * N // nchunks, (t + 1) * N // nchunks, relu, pool, taps))
    return y, argmax


@njit(**_jit)
def _conv_forward_direct_images(x, Wm, b, y, argmax, offsets, ph, pw, OH, OW, n0, n1, relu, pool, taps):
    """One thread's share of _conv_forward_direct: images n0..n1-1, into y and argmax."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    L = (OH - 1) * Wp + OW                                  # wide outputs per plane
    PH, PW = (OH // 2, OW // 2) if pool else (OH, OW)
    xp = np.zeros(C * Hp * Wp, dtype=x.dtype)              # the padding stays zero
    acc = np.empty(OH * Wp, dtype=x.dtype)                  # (the last Wp - OW are not used)
    for n in range(n0, n1):
        _pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f in range(F):
            acc[:] = b[f]
            _shifted_sum(acc, xp, Wm[f], offsets, L)
            dst = y[n, f]
            if taps:
                _relu_maxpool2(acc.reshape(OH, Wp), acc[0] * 0, dst.reshape(PH, PW),
                               argmax[n, f].reshape(PH, PW))
                continue
            if pool:
                _relu_maxpool2_values(acc.reshape(OH, Wp), acc[0] * 0, dst.reshape(PH, PW))
                continue
            for oh in range(OH):                        # drop the extra columns
                src, out = uintp(oh * Wp), uintp(oh * OW)
                if relu:
                    for ow in range(uintp(OW)):
                        dst[out + ow] = max(acc[src + ow], 0)
                else:
                    for ow in range(uintp(OW)):
                        dst[out + ow] = acc[src + ow]


def _conv_backward_direct(x, dy, y, argmax, Wm, kh, kw, ph, pw, OH, OW, nchunks, need_dx, relu, pool):
    N, C, H, W = x.shape
    F, K = Wm.shape
    Hp, Wp = H + 2 * ph, W + 2 * pw
    S = Hp * Wp
    M = (kh - 1) * Wp + kw - 1                              # zeros in front of each dy row
    offsets = _tap_offsets(C, kh, kw, S, Wp, 1, 0)          # input position of tap, forward
    back = _tap_offsets(1, kh, kw, S, Wp, -1, M)            # dy position of tap, for dx
    dx = np.empty((N, C, H, W) if need_dx else (0, C, H, W), dtype=x.dtype)
    dW_parts = np.zeros((nchunks, F, K), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    _on_threads(nchunks, lambda t: _conv_backward_direct_images(
        x, dy, y, argmax, Wm, dx, dW_parts[t], db_parts[t], offsets, back, kh, kw, ph, pw, OH, OW,
        t * N // nchunks, (t + 1) * N // nchunks, need_dx, relu, pool))
    dW, db = _add_thread_parts(dW_parts, db_parts)
    return dx, dW, db


@njit(**_jit)
def _conv_backward_direct_images(x, dy, y, argmax, Wm, dx, dW, db, offsets, back, kh, kw, ph, pw, OH, OW, n0,
                                 n1, need_dx, relu, pool):
    """One thread's share of _conv_backward_direct: images n0..n1-1; their dx, and their
    sums added into this thread's dW (F, K) and db (F,)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    S, L = Hp * Wp, (OH - 1) * Wp + OW
    M = (kh - 1) * Wp + kw - 1
    PH, PW = OH // 2, OW // 2
    xp = np.zeros(C * S, dtype=x.dtype)
    dyw = np.zeros((F, M + S), dtype=x.dtype)          # wide dy; extra columns stay zero
    dxp = np.empty(C * S if need_dx else 0, dtype=x.dtype)
    for n in range(n0, n1):
        _pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f in range(F):
            row = dyw[f, M:M + L]
            src, out = dy[n, f], y[n, f]
            if pool:                                    # dy is the pooled output's gradient
                row[:] = 0
                _unpool_relu_grad(src.reshape(PH, PW), out.reshape(PH, PW), argmax[n, f].reshape(PH, PW),
                                  dyw[f, M:M + OH * Wp].reshape(OH, Wp))
            else:
                for oh in range(OH):                    # dy (ReLU's derivative applied)
                    i, o = uintp(oh * OW), uintp(oh * Wp)
                    for ow in range(uintp(OW)):
                        row[o + ow] = src[i + ow] if not relu or out[i + ow] > 0 else src[i + ow] * 0
            db[f] += _sum(row)
            _shifted_dots(row, xp, offsets, L, dW[f])
        if need_dx:
            dxp[:] = 0
            for c in range(C):
                plane = dxp[c * S:(c + 1) * S]
                for f in range(F):
                    _shifted_sum(plane, dyw[f], Wm[f, c * kh * kw:(c + 1) * kh * kw], back, S)
            for c in range(C):                          # crop the padding
                for h in range(H):
                    dst, base = dx[n, c, h], uintp(c * S + (h + ph) * Wp + pw)
                    for w in range(uintp(W)):
                        dst[w] = dxp[base + w]


# Numba's configured thread count (NUMBA_NUM_THREADS, by default the usable cores), read
# from its config: numba.get_num_threads() would start Numba's threading layer.
_NUM_THREADS = numba.config.NUMBA_NUM_THREADS


def _threads_for(jobs):
    """How many threads share `jobs` images (direct) or blocks (GEMM): one chunk each."""
    return max(1, min(_NUM_THREADS, jobs))


def _blocking(N, K, P, itemsize):
    """Images per block (so one block's columns fill about _BLOCK_BYTES) and thread chunks."""
    group = max(1, min(N, _BLOCK_BYTES // (K * P * itemsize)))
    nblocks = -(-N // group)
    return group, _threads_for(nblocks)


def _conv_shapes(x_shape, W, stride, padding):
    N, C, H, Wd = x_shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    return N, C, F, kh, kw, sh, sw, ph, pw, conv_output_size(H, kh, sh, ph), conv_output_size(Wd, kw, sw, pw)


def _forward(x, W, b, stride, padding, relu, pool, taps=False):
    """The convolution by the faster method for its shape: y (N, F, P) and, with pool and
    taps, each pooling window's tap of its maximum."""
    N, C, F, kh, kw, sh, sw, ph, pw, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    bias = b if b is not None else np.zeros(F, dtype=x.dtype)
    if _use_direct(C, F, stride, _DIRECT_FORWARD_MAX_CF):
        return _conv_forward_direct(x, Wm, bias, kh, kw, ph, pw, OH, OW, _threads_for(N), relu, pool,
                                    pool and taps)
    group, nchunks = _blocking(N, Wm.shape[1], OH * OW, x.itemsize)
    return _conv_forward(x, Wm, bias, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks, relu, pool,
                         pool and taps, _gemm_for(x.dtype))


def _backward(dy, x, y, argmax, W, stride, padding, need_dx, relu, pool):
    N, C, F, kh, kw, sh, sw, ph, pw, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    expected = (N, F, OH // 2, OW // 2) if pool else (N, F, OH, OW)
    if dy.shape != expected:
        raise ValueError(f"conv2d backward: dy has shape {dy.shape}, the forward pass gave {expected}")
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    dy = np.ascontiguousarray(dy).reshape(N, F, -1)
    y = y.reshape(N, F, -1) if y is not None else dy          # (read only with relu)
    if argmax is None:
        argmax = np.empty((0, 0, 0), dtype=np.int8)
    if _use_direct(C, F, stride, _DIRECT_BACKWARD_MAX_CF):
        dx, dW, db = _conv_backward_direct(x, dy, y, argmax, Wm, kh, kw, ph, pw, OH, OW, _threads_for(N),
                                           need_dx, relu, pool)
    else:
        group, nchunks = _blocking(N, Wm.shape[1], OH * OW, x.itemsize)
        dx, dW, db = _conv_backward(x, dy, y, argmax, Wm, kh, kw, sh, sw, ph, pw, OH, OW, group, nchunks,
                                    need_dx, relu, pool, _gemm_for(x.dtype))
    return (dx if need_dx else None), dW.reshape(W.shape), db


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """Returns y and, as the cache, x itself (the backward pass rebuilds what it needs from
    it) and, with relu, y. The ReLU is applied as the output is written and its derivative
    as dy is read: no separate passes over the activations, no mask array."""
    x = np.ascontiguousarray(x)
    y, _ = _forward(x, W, b, stride, padding, relu, False)
    y = y.reshape(x.shape[0], W.shape[0], *_conv_shapes(x.shape, W, stride, padding)[-2:])
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    x, y = cache
    return _backward(dy, x, y, None, W, stride, padding, need_dx, y is not None, False)


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """The pooled output and, as the cache, x, the pooled output and each window's tap (int8);
    need_argmax=False (inference) records no taps and returns no cache.
    The convolution's full output is never written: each plane is pooled from the block's
    GEMM result (or the direct method's accumulator) while it is still in cache."""
    x = np.ascontiguousarray(x)
    pooled, argmax = _forward(x, W, b, stride, padding, True, True, need_argmax)
    _, _, F, _, _, _, _, _, _, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    pooled = pooled.reshape(x.shape[0], F, OH // 2, OW // 2)
    return pooled, ((x, pooled, argmax) if need_argmax else None)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    x, pooled, argmax = cache
    return _backward(dpooled, x, pooled, argmax, W, stride, padding, need_dx, True, True)


# -- pooling ----------------------------------------------------------------------------

def _maxpool_forward(x, kh, kw, sh, sw, OH, OW, need_argmax):
    N, C = x.shape[0], x.shape[1]
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW) if need_argmax else (0, 0, 0, 0), dtype=np.int32)
    _split_on_threads(N * C, lambda nc0, nc1: _maxpool_forward_planes(
        x, y, argmax, kh, kw, sh, sw, nc0, nc1, need_argmax), x.shape[2] * x.shape[3])
    return y, argmax


@njit(**_jit)
def _maxpool_forward_planes(x, y, argmax, kh, kw, sh, sw, nc0, nc1, need_argmax):
    """Planes nc0..nc1-1 (plane nc = image nc // C, channel nc % C) of _maxpool_forward."""
    C = x.shape[1]
    OH, OW = y.shape[2], y.shape[3]
    # The common 2x2 window with stride 2 gets its own loop: the four taps are named, so
    # the compiler keeps everything in registers (measured 2-2.5x faster than the general
    # loop with argmax, and twice that again without it, as in eval mode).
    two_by_two = kh == 2 and kw == 2 and sh == 2 and sw == 2
    for nc in range(nc0, nc1):
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


def _maxpool_backward(dy, argmax, H, W, kh, kw, sh, sw):
    N, C = dy.shape[0], dy.shape[1]
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _split_on_threads(N * C, lambda nc0, nc1: _maxpool_backward_planes(dy, argmax, dx, kh, kw, sh, sw, nc0, nc1),
                      H * W)
    return dx


@njit(**_jit)
def _maxpool_backward_planes(dy, argmax, dx, kh, kw, sh, sw, nc0, nc1):
    """Planes nc0..nc1-1 of _maxpool_backward. Each thread zeroes the planes it then
    scatters into (one pass over memory, not a separate np.zeros of the whole batch first)."""
    C, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    for nc in range(nc0, nc1):
        n, c = uintp(nc // C), uintp(nc % C)
        grad, arg, plane = dy[n, c], argmax[n, c], dx[n, c]
        plane[:] = 0
        for a in range(uintp(OH)):
            for b in range(uintp(OW)):
                tap = uintp(arg[a, b])
                plane[a * uintp(sh) + tap // uintp(kw), b * uintp(sw) + tap % uintp(kw)] += grad[a, b]


def _avgpool_forward(x, kh, kw, sh, sw, OH, OW):
    N, C = x.shape[0], x.shape[1]
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    _split_on_threads(N * C, lambda nc0, nc1: _avgpool_forward_planes(x, y, kh, kw, sh, sw, nc0, nc1),
                      x.shape[2] * x.shape[3])
    return y


@njit(**_jit)
def _avgpool_forward_planes(x, y, kh, kw, sh, sw, nc0, nc1):
    """Planes nc0..nc1-1 of _avgpool_forward."""
    C, OH, OW = x.shape[1], y.shape[2], y.shape[3]
    for nc in range(nc0, nc1):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                acc = 0.0
                for i in range(kh):
                    for j in range(kw):
                        acc += x[n, c, a * sh + i, b * sw + j]
                y[n, c, a, b] = acc / (kh * kw)


def _avgpool_backward(dy, H, W, kh, kw, sh, sw):
    N, C = dy.shape[0], dy.shape[1]
    dx = np.empty((N, C, H, W), dtype=dy.dtype)
    _split_on_threads(N * C, lambda nc0, nc1: _avgpool_backward_planes(dy, dx, kh, kw, sh, sw, nc0, nc1), H * W)
    return dx


@njit(**_jit)
def _avgpool_backward_planes(dy, dx, kh, kw, sh, sw, nc0, nc1):
    """Planes nc0..nc1-1 of _avgpool_backward, each zeroed, then scattered into."""
    C, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    for nc in range(nc0, nc1):
        n, c = nc // C, nc % C
        dx[n, c] = 0
        for a in range(OH):
            for b in range(OW):
                share = dy[n, c, a, b] / (kh * kw)
                for i in range(kh):
                    for j in range(kw):
                        dx[n, c, a * sh + i, b * sw + j] += share


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
# One pass that writes y and the mask together (NumPy needs one pass for each, on one
# thread). Arrays are viewed flat and cut into one contiguous run per thread.

@njit(**_jit)
def _relu_forward_run(x, y, mask, k0, k1):
    # unsigned bounds: with signed ones Numba checks every index for wrap-around and the
    # loop does not vectorise (measured 8x slower)
    for k in range(uintp(k0), uintp(k1)):
        v = x[k]
        mask[k] = v > 0
        y[k] = max(v, 0)


@njit(**_jit)
def _relu_backward_run(dy, mask, dx, k0, k1):
    for k in range(uintp(k0), uintp(k1)):
        dx[k] = dy[k] * mask[k]


def relu_forward(x):
    flat = np.ascontiguousarray(x).reshape(-1)
    y = np.empty_like(flat)
    mask = np.empty(flat.shape, dtype=np.bool_)
    _split_on_threads(flat.size, lambda k0, k1: _relu_forward_run(flat, y, mask, k0, k1))
    return y.reshape(x.shape), mask.reshape(x.shape)


def relu_backward(dy, mask):
    flat = np.ascontiguousarray(dy).reshape(-1)
    flat_mask = mask.reshape(-1)
    dx = np.empty_like(flat)
    _split_on_threads(flat.size, lambda k0, k1: _relu_backward_run(flat, flat_mask, dx, k0, k1))
    return dx.reshape(dy.shape)


# -- Batch normalisation ------------------------------------------------------------------
# Channels are shared among the threads in contiguous runs: each thread owns whole channels, so the per-channel sums need no
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


@njit(**_jit)
def _batchnorm_stats_channels(x, mean, var, c0, c1):
    """mean and var of channels c0..c1-1 of x (N, C, M).
    One pass over values shifted by the channel's first value p: with d = x - p,
    mean = p + E[d] and var = E[d^2] - E[d]^2. Because p is a sample of the channel,
    E[d]^2 is of the order of var and the subtraction loses little (the textbook
    E[x^2] - E[x]^2 loses everything when |mean| >> std)."""
    N, M = x.shape[0], x.shape[2]
    m = N * M
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


@njit(**_jit)
def _batchnorm_forward_channels(x, gamma, beta, mean, inv_std, y, xhat, c0, c1):
    """y and xhat of channels c0..c1-1."""
    N, M = x.shape[0], x.shape[2]
    for c in range(c0, c1):
        mu, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
        for n in range(N):
            for k in range(uintp(M)):
                h = (x[n, c, k] - mu) * s
                xhat[n, c, k] = h
                y[n, c, k] = g * h + b


@njit(**_jit)
def _batchnorm_backward_channels(dy, xhat, gamma, inv_std, training, dx, dgamma, dbeta, c0, c1):
    """dx, dgamma and dbeta of channels c0..c1-1."""
    N, M = dy.shape[0], dy.shape[2]
    m = N * M
    means = np.zeros(2, dtype=dy.dtype)     # dbeta / m and dgamma / m, held in dy's dtype
    for c in range(c0, c1):                 # so the inner loop stays float32
        sb, sg = 0.0, 0.0
        for n in range(N):
            r1, r2 = _row_sums(dy[n, c], xhat[n, c], 0)
            sb += r1
            sg += r2
        dbeta[c], dgamma[c] = sb, sg
        if training:
            means[0], means[1] = sb / m, sg / m
        scale, mb, mg = gamma[c] * inv_std[c], means[0], means[1]
        for n in range(N):
            for k in range(uintp(M)):
                dx[n, c, k] = scale * (dy[n, c, k] - mb - xhat[n, c, k] * mg)


def batchnorm_stats(x):
    x = np.ascontiguousarray(x)
    C = x.shape[1]
    mean, var = np.empty(C, dtype=x.dtype), np.empty(C, dtype=x.dtype)
    _split_on_threads(C, lambda c0, c1: _batchnorm_stats_channels(x, mean, var, c0, c1), x.size // max(C, 1))
    return mean, var


def batchnorm_forward(x, gamma, beta, mean, inv_std):
    x = np.ascontiguousarray(x)
    dt = x.dtype
    gamma, beta = gamma.astype(dt, copy=False), beta.astype(dt, copy=False)
    mean, inv_std = mean.astype(dt, copy=False), inv_std.astype(dt, copy=False)
    y, xhat = np.empty_like(x), np.empty_like(x)
    _split_on_threads(x.shape[1], lambda c0, c1: _batchnorm_forward_channels(
        x, gamma, beta, mean, inv_std, y, xhat, c0, c1), x.size // max(x.shape[1], 1))
    return y, xhat


def batchnorm_backward(dy, xhat, gamma, inv_std, training):
    dy = np.ascontiguousarray(dy)
    dt = dy.dtype
    gamma, inv_std = gamma.astype(dt, copy=False), inv_std.astype(dt, copy=False)
    C = dy.shape[1]
    dx = np.empty_like(dy)
    dgamma, dbeta = np.empty(C, dtype=dt), np.empty(C, dtype=dt)
    _split_on_threads(C, lambda c0, c1: _batchnorm_backward_channels(
        dy, xhat, gamma, inv_std, bool(training), dx, dgamma, dbeta, c0, c1), dy.size // max(C, 1))
    return dx, dgamma, dbeta
