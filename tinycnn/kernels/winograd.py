"""Winograd F(2x2, 3x3): a 3x3, stride-1 convolution with 2.25x fewer multiplications.

The idea, in one dimension first. Two outputs of a 3-tap correlation,
    y0 = d0 g0 + d1 g1 + d2 g2,    y1 = d1 g0 + d2 g1 + d3 g2     (6 multiplications)
can be had from 4 products of sums:
    m0 = (d0 - d2) g0                m1 = (d1 + d2) (g0 + g1 + g2) / 2
    m3 = (d1 - d3) g2                m2 = (d2 - d1) (g0 - g1 + g2) / 2
    y0 = m0 + m1 + m2,               y1 = m1 - m2 - m3
(expand m1 + m2 = d1 g1 + d2 (g0 + g2) to check). In matrices, y = A^T [(G g) * (B^T d)]
with * element-wise, and nesting the 1-D rule in both directions gives the 2-D one: a
2x2 output tile Y from a 4x4 input tile d (4x4 because 2 outputs + 3 taps - 1 overlap)
and a 3x3 kernel g,

    Y = A^T [ (G g G^T) * (B^T d B) ] A        16 multiplications instead of 2*2*9 = 36

    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]       (4, 3)
    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]     (4, 4)
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]                                  (2, 4)

A layer sums over input channels c, and the sum commutes with A^T (.) A, so

    U[xi, f, c] = (G W[f, c] G^T)[xi]            weights, once per call       (16, F, C)
    V[xi, c, t] = (B^T d[c, t] B)[xi]            input tiles t = (n, th, tw)  (16, C, T)
    M[xi]       = U[xi] @ V[xi]                  16 matrix products over c    (16, F, T)
    Y[f, t]     = A^T M[:, f, t] A               output tiles, 2x2 each

xi = 4*row + col indexes the 4x4 transformed tile. Input tiles start every 2 pixels (they
overlap by 2); the padded input is extended with zeros at the bottom and right so odd
output sizes get whole tiles, whose extra outputs are dropped.

The backward pass runs the same steps in reverse, each replaced by its adjoint:
    dM[:, f, t] = A dY[f, t] A^T                 (16, F, T)   dY tile zero-padded to 2x2
    dU[xi]      = dM[xi] @ V[xi]^T               (F, C)       -> dW = G^T dU G
    dV[xi]      = U[xi]^T @ dM[xi]               (C, T)       -> dd = B dV B^T, added back
                                                               into dx where tiles overlap
The dx half is itself a Winograd convolution of dy with the flipped kernel (the "transposed"
form of the algorithm: what the full correlation of padded dy with the flipped kernel would
compute, sharing dM with dW), and dW is the F(3x3, 2x2) algorithm in the same transposed
form: both have the forward's 2.25x saving on their matrix products.

Rounding: the transforms add and subtract up to 9 inputs (B^T d B) and 9 products
(A^T M A) around the sum over channels, so float32 results round differently from a
direct convolution's, but for this small tile not by more: on the 3x3 layers of the models
here the largest float32 error of y, dx and dW was 2-6e-7 of the largest value, against
1-5e-7 for im2col + GEMM (tests/test_winograd.py measures it and bounds it; larger
tiles such as F(4x4, 3x3) have transform entries up to 8 and are known to lose more: not
measured here).

Two versions of the same steps: conv2d_forward_numpy / conv2d_backward_numpy, NumPy,
written to be read next to the formulas above; conv2d_forward / conv2d_backward, Numba,
per block of images with BLAS products, laid out like kernels/fast.py's convolution.
Both take and return what kernels.reference.conv2d_forward / conv2d_backward do, for
3x3 kernels and stride 1 only (`applies` says whether a layer qualifies). Likewise
conv2d_relu_maxpool2_forward / _backward (and their _numpy twins) for a ReLU convolution
followed by 2x2 max pooling: a 2x2 output tile is exactly one pooling window, so the Numba
version pools each tile as it leaves the output transform.
"""
import concurrent.futures
import os

import numpy as np
from numba import njit, prange, uintp

from . import reference
from .fast import _BLOCK_BYTES, _add_thread_parts, _gemm_for, _matmul, _threads_for

_jit = dict(cache=True, nogil=True)

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)


def applies(W_shape, stride):
    """True if a convolution with filters of W_shape (F, C, kh, kw) and this stride is one
    these kernels compute: 3x3, stride 1 (any padding)."""
    return tuple(W_shape[2:]) == (3, 3) and tuple(stride) == (1, 1)


def tiling(x_shape, W_shape, stride, padding):
    """(OH, OW, TH, TW): the output size and the number of 2x2 output tiles down and across.
    Raises ValueError for a convolution these kernels do not compute."""
    N, C, H, Wd = x_shape
    if not applies(W_shape, stride):
        raise ValueError(f"winograd conv2d: needs 3x3 filters and stride 1, got filters {tuple(W_shape)} "
                         f"and stride {tuple(stride)}")
    if W_shape[1] != C:
        raise ValueError(f"winograd conv2d: x has {C} channels, filters {tuple(W_shape)} expect {W_shape[1]}")
    ph, pw = padding
    OH, OW = H + 2 * ph - 2, Wd + 2 * pw - 2
    if OH < 1 or OW < 1:
        raise ValueError(f"winograd conv2d: input {H}x{Wd} with padding {tuple(padding)} is smaller than the 3x3 "
                         "kernel")
    return OH, OW, (OH + 1) // 2, (OW + 1) // 2


def _sandwich(L, X, R):
    """L @ X @ R over the first two axes of X (the rest ride along): (a, i) (i, j, ...) (j, b)."""
    return np.einsum("ai,ij...,jb->ab...", L.astype(X.dtype), X, R.astype(X.dtype), optimize=True)


def transform_weights(W):
    """U = G W G^T for every filter and channel: W (F, C, 3, 3) -> U (16, F, C), W's dtype."""
    F, C = W.shape[:2]
    U = _sandwich(G, W.transpose(2, 3, 0, 1), G.T)            # (4, 4, F, C)
    return np.ascontiguousarray(U.reshape(16, F, C))


def weight_gradient(dU):
    """The adjoint of transform_weights: dW = G^T dU G, dU (16, F, C) -> dW (F, C, 3, 3)."""
    F, C = dU.shape[1:]
    dW = _sandwich(G.T, dU.reshape(4, 4, F, C), G)            # (3, 3, F, C)
    return np.ascontiguousarray(dW.transpose(2, 3, 0, 1))


# -- the NumPy twin: each step of the docstring as one array expression -------------------

def _tile_views(xp, TH, TW):
    """(i, j, view) for the 16 positions of a 4x4 tile: view (N, C, TH, TW) holds position
    (i, j) of every tile, tiles starting every 2 pixels."""
    for i in range(4):
        for j in range(4):
            yield i, j, xp[:, :, i:i + 2 * TH:2, j:j + 2 * TW:2]


def _input_tiles(x, padding, TH, TW):
    """V = B^T d B for every 4x4 tile d: x (N, C, H, W) -> V (16, C, N*TH*TW)."""
    N, C, H, W = x.shape
    ph, pw = padding
    xp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dtype=x.dtype)   # zero padding, and zeros
    xp[:, :, ph:ph + H, pw:pw + W] = x                                # to fill the last tiles
    d = np.empty((4, 4, C, N, TH, TW), dtype=x.dtype)
    for i, j, view in _tile_views(xp, TH, TW):
        d[i, j] = view.transpose(1, 0, 2, 3)                          # (C, N, TH, TW)
    return _sandwich(BT, d, BT.T).reshape(16, C, N * TH * TW)


def _input_tiles_adjoint(dV, x_shape, padding, TH, TW):
    """dx from dV (16, C, N*TH*TW): dd = B dV B^T per tile, added where the tiles overlap."""
    N, C, H, W = x_shape
    ph, pw = padding
    dd = _sandwich(BT.T, dV.reshape(4, 4, C, N, TH, TW), BT)         # (4, 4, C, N, TH, TW)
    dxp = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2), dtype=dV.dtype)
    for i, j, view in _tile_views(dxp, TH, TW):
        view += dd[i, j].transpose(1, 0, 2, 3)                        # view is a slice of dxp
    return dxp[:, :, ph:ph + H, pw:pw + W]


def _output_tiles(M, N, OH, OW, TH, TW):
    """Y = A^T M A per tile, laid out as an image: M (16, F, N*TH*TW) -> y (N, F, OH, OW)."""
    F = M.shape[1]
    Y = _sandwich(AT, M.reshape(4, 4, F, N, TH, TW), AT.T)          # (2, 2, F, N, TH, TW)
    y = Y.transpose(3, 2, 4, 0, 5, 1).reshape(N, F, 2 * TH, 2 * TW)  # pixel (2*th + a, 2*tw + b)
    return y[:, :, :OH, :OW]


def _output_tiles_adjoint(dy, TH, TW):
    """dM = A dY A^T per tile: dy (N, F, OH, OW) -> dM (16, F, N*TH*TW); each tile's dY is
    2x2, with zeros where it runs past the output."""
    N, F, OH, OW = dy.shape
    dY = np.zeros((N, F, 2 * TH, 2 * TW), dtype=dy.dtype)
    dY[:, :, :OH, :OW] = dy
    dY = dY.reshape(N, F, TH, 2, TW, 2).transpose(3, 5, 1, 0, 2, 4)  # (2, 2, F, N, TH, TW)
    return _sandwich(AT.T, dY, AT).reshape(16, F, N * TH * TW)


def conv2d_forward_numpy(x, W, b, stride, padding, relu=False):
    """y = W * x + b (as kernels.reference.conv2d_forward), by Winograd F(2x2, 3x3).
    Returns y (N, F, OH, OW) and the cache: the transformed input tiles V, and y with relu."""
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    V = _input_tiles(x, padding, TH, TW)                   # (16, C, T), T = N*TH*TW
    M = np.matmul(transform_weights(W), V)                  # (16, F, C) @ (16, C, T) -> (16, F, T)
    y = _output_tiles(M, x.shape[0], OH, OW, TH, TW)        # (N, F, OH, OW)
    if b is not None:
        y = y + b[:, None, None]
    y = np.ascontiguousarray(np.maximum(y, 0) if relu else y)
    return y, (V, y if relu else None)


def conv2d_backward_numpy(dy, cache, x_shape, W, stride, padding, need_dx=True):
    """The forward's steps in reverse, each by its adjoint. Returns (dx or None, dW, db)."""
    V, y = cache
    if y is not None:
        dy = dy * (y > 0)                                   # the ReLU's derivative
    _, _, TH, TW = tiling(x_shape, W.shape, stride, padding)
    db = dy.sum(axis=(0, 2, 3))
    dM = _output_tiles_adjoint(dy, TH, TW)                  # (16, F, T)
    dW = weight_gradient(np.matmul(dM, V.transpose(0, 2, 1)))   # dU = dM V^T: (16, F, C)
    dx = None
    if need_dx:
        dV = np.matmul(transform_weights(W).transpose(0, 2, 1), dM)   # U^T dM: (16, C, T)
        dx = _input_tiles_adjoint(dV, x_shape, padding, TH, TW)
    return dx, dW, db


def conv2d_relu_maxpool2_forward_numpy(x, W, b, stride, padding, need_argmax=True):
    """The ReLU convolution above, then reference.maxpool2d_forward's 2x2 pooling."""
    return reference.conv_then_pool_forward(conv2d_forward_numpy, reference.maxpool2d_forward, x, W, b, stride,
                                            padding, need_argmax)


def conv2d_relu_maxpool2_backward_numpy(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    return reference.conv_then_pool_backward(conv2d_backward_numpy, reference.maxpool2d_backward, dpooled, cache,
                                             x_shape, W, stride, padding, need_dx)


# -- the Numba version -------------------------------------------------------------------
# Laid out like fast.py's im2col + GEMM convolution: the batch is cut into blocks of a few
# images, whose V (16, C, g*T) and M (16, F, g*T) together fill about _BLOCK_BYTES (so they
# stay in cache); each block runs its 16 products through fast._matmul (NumPy's sgemm for
# float32); blocks are shared among the threads in contiguous runs, each thread owning its
# images' outputs and dx, and summing its own dU and db (added in a fixed order after).
# The tile transforms go through small scratch arrays so their loops need no bounds tests
# and run along contiguous memory: the input through a zero-bordered padded plane
# (2*TH + 2, 2*TW + 2); the outputs (and dy, backward) through 4 rows of T tiles, row
# 2a + b holding pixel (a, b) of every 2x2 tile, so the output transform is one loop over
# tiles reading 16 and writing 4 contiguous streams (it vectorises; the gradient's is cut
# into 4 such loops, see _times_AT). Measured on convnet's conv2, batch 128, one thread,
# the transforms take 0.8-1.7 ms each, the 16 products per block the rest (~4 ms forward).
# The blocks' thread chunks run on Python threads (_on_python_threads) or from one parallel
# kernel (_on_numba_threads) whose loop body is a single call; see PYTHON_THREADS.

_BLOCK = _BLOCK_BYTES            # target bytes of one block's V and M (or V, dM and dV)


@njit(**_jit)
def _tiles_of_image(x, n, xp, rows, V, q0, ph, pw, TH, TW):
    """V[:, c, q0 + th*TW + tw] = B^T d B for every 4x4 tile d of image n, every channel.
    xp (2*TH + 2, 2*TW + 2) must have a zero border (only the interior is written);
    rows (4, 2*TW + 2) is scratch. (Arrays are indexed, not sliced into views, in the
    loops: each view costs a reference count.)"""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    Wp = uintp(xp.shape[1])
    for c in range(C):
        for h in range(H):                                  # the image into the padded plane
            for w in range(uintp(W)):
                xp[h + ph, w + uintp(pw)] = x[n, c, h, w]
        for th in range(TH):
            r = 2 * th
            for w in range(Wp):                             # B^T d: the 4 rows, whole width
                d0, d1, d2, d3 = xp[r, w], xp[r + 1, w], xp[r + 2, w], xp[r + 3, w]
                rows[0, w], rows[1, w], rows[2, w], rows[3, w] = d0 - d2, d1 + d2, d2 - d1, d1 - d3
            q = uintp(q0 + th * TW)
            for k in range(4):                              # (B^T d) B: the columns, per tile
                for tw in range(uintp(TW)):
                    s = tw + tw
                    t0, t1, t2, t3 = rows[k, s], rows[k, s + 1], rows[k, s + 2], rows[k, s + 3]
                    V[4 * k, c, q + tw] = t0 - t2
                    V[4 * k + 1, c, q + tw] = t1 + t2
                    V[4 * k + 2, c, q + tw] = t2 - t1
                    V[4 * k + 3, c, q + tw] = t1 - t3


@njit(**_jit)
def _image_of_tiles(dV, q0, dxp, rows, dx, n, ph, pw, TH, TW):
    """The adjoint of _tiles_of_image: dx[n] from dV[:, :, q0 : q0 + TH*TW], each tile's
    B dV B^T added where tiles overlap. dxp and rows are scratch, as there."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    Wp = uintp(dxp.shape[1])
    for c in range(C):
        dxp[:] = 0
        for th in range(TH):
            rows[:] = 0
            q = uintp(q0 + th * TW)
            for k in range(4):                              # adjoint of the column step
                for tw in range(uintp(TW)):
                    s = tw + tw
                    a0, a1, a2, a3 = dV[4 * k, c, q + tw], dV[4 * k + 1, c, q + tw], \
                        dV[4 * k + 2, c, q + tw], dV[4 * k + 3, c, q + tw]
                    rows[k, s] += a0
                    rows[k, s + 1] += a1 - a2 + a3
                    rows[k, s + 2] += a1 + a2 - a0
                    rows[k, s + 3] -= a3
            r = 2 * th
            for w in range(Wp):                             # adjoint of the row step
                t0, t1, t2, t3 = rows[0, w], rows[1, w], rows[2, w], rows[3, w]
                dxp[r, w] += t0
                dxp[r + 1, w] += t1 - t2 + t3
                dxp[r + 2, w] += t1 + t2 - t0
                dxp[r + 3, w] -= t3
        for h in range(H):                                  # crop the padding
            for w in range(uintp(W)):
                dx[n, c, h, w] = dxp[h + ph, w + uintp(pw)]


@njit(**_jit)
def _outputs_of_tiles(M, q0, Y, y, argmax, n, b, relu, pool, taps, TW):
    """y[n] = A^T M A per tile, plus bias (and ReLU), from M[:, :, q0 : q0 + T].
    Y (4, T) is scratch: Y[2a + b, th*TW + tw] becomes output pixel (2*th + a, 2*tw + b).
    With pool, y[n] is the ReLU's 2x2 max pooling instead: each window is one tile, so it is
    pooled straight from Y (with taps, argmax[n] gets each window's tap 0..3, row-major, of
    its first maximum, as fast.py's fused kernel records it)."""
    F, OH, OW = y.shape[1], y.shape[2], y.shape[3]        # (pooled sizes, with pool)
    for f in range(F):
        for p in range(uintp(Y.shape[1])):      # one tile per p; every load and store runs
            q = uintp(q0) + p                   # along p, so the loop vectorises
            u0 = M[0, f, q] + M[4, f, q] + M[8, f, q]            # A^T m, row 0 (4 columns)
            u1 = M[1, f, q] + M[5, f, q] + M[9, f, q]
            u2 = M[2, f, q] + M[6, f, q] + M[10, f, q]
            u3 = M[3, f, q] + M[7, f, q] + M[11, f, q]
            Y[0, p], Y[1, p] = u0 + u1 + u2, u1 - u2 - u3       # (A^T m) A, row 0
            u0 = M[4, f, q] - M[8, f, q] - M[12, f, q]           # A^T m, row 1
            u1 = M[5, f, q] - M[9, f, q] - M[13, f, q]
            u2 = M[6, f, q] - M[10, f, q] - M[14, f, q]
            u3 = M[7, f, q] - M[11, f, q] - M[15, f, q]
            Y[2, p], Y[3, p] = u0 + u1 + u2, u1 - u2 - u3       # (A^T m) A, row 1
        bf = b[f]
        if pool:
            for th in range(OH):
                for tw in range(OW):
                    p = th * TW + tw
                    best, tap = Y[0, p] + bf, 0
                    for k in range(1, 4):
                        v = Y[k, p] + bf
                        if v > best:                # strict: the first maximum wins ties
                            best, tap = v, k
                    y[n, f, th, tw] = max(best, 0)
                    if taps:
                        argmax[n, f, th, tw] = tap
            continue
        for h in range(OH):                     # tiles -> image, plus bias (and ReLU)
            r, base = (h & 1) * 2, (h >> 1) * TW
            for w in range(OW):
                v = Y[r + (w & 1), base + (w >> 1)] + bf
                y[n, f, h, w] = max(v, 0) if relu else v


@njit(**_jit)
def _times_AT(d0, d1, negate, M, xi, f, q0):
    """M[xi + l, f, q0 + p] = +-((d0[p], d1[p]) A^T)[l], l = 0..3: (d0, d0 + d1, d0 - d1, -d1).
    One output row per call: a loop with 2 input and 4 output streams vectorises; with all
    16 outputs in one loop it did not (measured 3x slower)."""
    q0 = uintp(q0)
    for p in range(uintp(d0.shape[0])):
        a, b = (-d0[p], -d1[p]) if negate else (d0[p], d1[p])
        M[xi, f, q0 + p], M[xi + 1, f, q0 + p], M[xi + 2, f, q0 + p], M[xi + 3, f, q0 + p] = a, a + b, a - b, -b


@njit(**_jit)
def _tiles_of_gradient(dy, y, argmax, n, D, M, q0, relu, pool, db, TW):
    """M[:, f, q0 + th*TW + tw] = A dY A^T for every 2x2 tile dY of dy[n, f], with the
    ReLU's derivative applied (where relu: dy passes where y > 0); db[f] += the sum of dY.
    With pool, dy and y are the pooled output's gradient and the pooled output, and each
    tile's dY is zero but at its window's tap argmax[n] (the adjoint of the pooling).
    D (8, T) is scratch: rows 0-3 laid out as _outputs_of_tiles' Y (tiles past the edge
    get zeros), rows 4-5 and 6-7 the sum and the difference of dY's two rows."""
    F, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]        # (pooled sizes, with pool)
    for f in range(F):
        total = 0.0
        if pool:                                # window (th, tw) -> its tap of tile th*TW + tw
            D[:4] = 0
            for th in range(OH):
                for tw in range(OW):
                    v = dy[n, f, th, tw] * (y[n, f, th, tw] > 0)
                    D[argmax[n, f, th, tw], th * TW + tw] = v
                    total += v
        else:
            if OH % 2 or OW % 2:
                D[:4] = 0
            for h in range(OH):                 # image -> tiles (the ReLU's derivative applied)
                r, base = (h & 1) * 2, (h >> 1) * TW
                row = dy[n, f, h, 0] * 0
                for w in range(OW):             # (a multiply, not a branch: signs are random,
                    v = dy[n, f, h, w] * (not relu or y[n, f, h, w] > 0)    # a branch mispredicts)
                    D[r + (w & 1), base + (w >> 1)] = v
                    row += v
                total += row
        db[f] += total
        for p in range(uintp(D.shape[1])):      # row 0 + row 1 of dY, row 0 - row 1
            D[4, p], D[5, p] = D[0, p] + D[2, p], D[1, p] + D[3, p]
            D[6, p], D[7, p] = D[0, p] - D[2, p], D[1, p] - D[3, p]
        # A dY has rows dY[0], dY[0] + dY[1], dY[0] - dY[1], -dY[1]; each times A^T
        _times_AT(D[0], D[1], False, M, 0, f, q0)
        _times_AT(D[4], D[5], False, M, 4, f, q0)
        _times_AT(D[6], D[7], False, M, 8, f, q0)
        _times_AT(D[2], D[3], True, M, 12, f, q0)


@njit(**_jit)
def _chunk(t, nchunks, forward, x, U, b, y, dy, argmax, dx, dU_parts, db_parts, ph, pw, TH, TW, group, relu,
           pool, taps, need_dx, gemm):
    """Thread t's contiguous run of blocks: the forward pass (writes y, and argmax with
    taps) or the backward pass (writes dx and thread t's dU_parts[t], db_parts[t])."""
    N, C = x.shape[0], x.shape[1]
    F, T = U.shape[1], TH * TW
    nblocks = (N + group - 1) // group
    xp = np.zeros((2 * TH + 2, 2 * TW + 2), dtype=x.dtype)     # zero border, see _tiles_of_image
    rows = np.empty((4, 2 * TW + 2), dtype=x.dtype)
    tiles8 = np.zeros((8, T), dtype=x.dtype)                   # 2x2 tiles, see _outputs_of_tiles
    V_buf = np.empty(16 * C * group * T, dtype=x.dtype)
    M_buf = np.empty(16 * F * group * T, dtype=x.dtype)
    dV_buf = np.empty(0 if forward or not need_dx else 16 * C * group * T, dtype=x.dtype)
    for blk in range(t * nblocks // nchunks, (t + 1) * nblocks // nchunks):
        n0, n1 = blk * group, min(N, (blk + 1) * group)
        cols = (n1 - n0) * T
        V = V_buf[:16 * C * cols].reshape(16, C, cols)          # (16, C, g*T)
        M = M_buf[:16 * F * cols].reshape(16, F, cols)          # (16, F, g*T): M, or dM
        for n in range(n0, n1):
            _tiles_of_image(x, n, xp, rows, V, (n - n0) * T, ph, pw, TH, TW)
        if forward:
            for xi in range(16):
                _matmul(gemm, U[xi], False, V[xi], False, M[xi], 0.0)      # M = U V
            for n in range(n0, n1):
                _outputs_of_tiles(M, (n - n0) * T, tiles8[:4], y, argmax, n, b, relu, pool, taps, TW)
            continue
        for n in range(n0, n1):
            _tiles_of_gradient(dy, y, argmax, n, tiles8, M, (n - n0) * T, relu, pool, db_parts[t], TW)
        for xi in range(16):
            _matmul(gemm, M[xi], False, V[xi], True, dU_parts[t, xi], 1.0)    # dU += dM V^T
        if need_dx:
            dV = dV_buf[:16 * C * cols].reshape(16, C, cols)
            for xi in range(16):
                _matmul(gemm, U[xi], True, M[xi], False, dV[xi], 0.0)         # dV = U^T dM
            for n in range(n0, n1):
                _image_of_tiles(dV, (n - n0) * T, xp, rows, dx, n, ph, pw, TH, TW)
                xp[:] = 0                                   # (its border must be zero again)


@njit(parallel=True, **_jit)
def _on_numba_threads(nchunks, forward, x, U, b, y, dy, argmax, dx, dU_parts, db_parts, ph, pw, TH, TW, group,
                      relu, pool, taps, need_dx, gemm):
    for t in prange(nchunks):
        _chunk(t, nchunks, forward, x, U, b, y, dy, argmax, dx, dU_parts, db_parts, ph, pw, TH, TW, group, relu,
               pool, taps, need_dx, gemm)


def _blocking(N, C, F, T, itemsize, backward):
    """Images per block (so V and M, plus dV backward, fill about _BLOCK) and thread chunks."""
    per_image = 16 * T * itemsize * (2 * C + F if backward else C + F)
    group = max(1, min(N, _BLOCK // per_image))
    return group, _threads_for(-(-N // group))


_NO_TAPS = np.empty((0, 0, 0, 0), dtype=np.int8)     # argmax where none is read or written
_pool = None            # (process id, size, Python threads) for _on_python_threads


def _on_python_threads(nchunks, *args):
    """_on_numba_threads without a parallel kernel: chunk 0 on the calling thread, the others
    on a pool of Python threads (_chunk releases the GIL: nogil=True). Nothing to compile
    beyond _chunk; a hand-off to the pool costs ~75 us here (submit and wait for a no-op,
    measured), about 1% of a call on the models' layers. The pool is made on
    first use, and again in a forked child (which inherits the pool but not its threads)."""
    global _pool
    if nchunks > 1 and (_pool is None or _pool[0] != os.getpid() or _pool[1] < nchunks - 1):
        _pool = (os.getpid(), nchunks - 1, concurrent.futures.ThreadPoolExecutor(nchunks - 1, "tinycnn-winograd"))
    others = [_pool[2].submit(_chunk, t, nchunks, *args) for t in range(1, nchunks)]
    _chunk(0, nchunks, *args)
    for job in others:
        job.result()


# Which runs the thread chunks. Measured with benchmarks/bench_winograd.py (batch 128, the
# models' 3x3 layers, 2 threads, a 2-core machine shared with other jobs): at load ~1 the
# parallel kernel was 1.2-1.3x faster on forward passes (its OpenMP threads spin, so they
# are awake when work comes) and equal on backward passes, where Python threads used
# 5-15% less CPU; at load 3.5-5 Python threads took 1.2-1.7x less wall-clock time. Python
# threads also spare ~12 s of CPU compiling the parallel kernel on a cold start (it
# re-optimises everything _chunk calls), hence the default.
PYTHON_THREADS = True


def _run(forward, x, W, b, y, dy, argmax, need_dx, relu, pool, taps, padding, TH, TW):
    """Both passes' run over the thread chunks; returns (dx, dU, db) (backward) or nothing useful."""
    N, C, H, Wd = x.shape
    F = W.shape[0]
    dt = x.dtype
    group, nchunks = _blocking(N, C, F, TH * TW, x.itemsize, not forward)
    U = transform_weights(W.astype(dt, copy=False))
    bias = b.astype(dt, copy=False) if b is not None else np.zeros(F, dtype=dt)
    dx = np.empty((N if need_dx else 0, C, H, Wd), dtype=dt)
    dU_parts = np.zeros((0 if forward else nchunks, 16, F, C), dtype=dt)
    db_parts = np.zeros((0 if forward else nchunks, F), dtype=np.float64)
    run_chunks = _on_python_threads if PYTHON_THREADS else _on_numba_threads
    run_chunks(nchunks, forward, x, U, bias, y, dy, argmax, dx, dU_parts, db_parts, padding[0], padding[1], TH,
               TW, group, relu, pool, taps, need_dx, _gemm_for(dt))
    return dx, dU_parts, db_parts


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """As fast.conv2d_forward, by Winograd F(2x2, 3x3): returns y (N, F, OH, OW) and, as the
    cache, x (the backward pass transforms it again) and, with relu, y."""
    x = np.ascontiguousarray(x)
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    y = np.empty((x.shape[0], W.shape[0], OH, OW), dtype=x.dtype)
    _run(True, x, W, b, y, y[:0], _NO_TAPS, False, relu, False, False, padding, TH, TW)
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    """As fast.conv2d_backward: (dx or None, dW, db). dW = G^T dU G from the threads' dU."""
    x, y = cache
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    expected = (x.shape[0], W.shape[0], OH, OW)
    if dy.shape != expected:
        raise ValueError(f"winograd conv2d backward: dy has shape {dy.shape}, the forward pass gave {expected}")
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    return _backward(x, W, padding, dy, dy if y is None else y, _NO_TAPS, need_dx, y is not None, False, TH, TW)


def _backward(x, W, padding, dy, y, argmax, need_dx, relu, pool, TH, TW):
    """Both backward passes: (dx or None, dW, db), dW = G^T dU G from the threads' dU."""
    dy = np.ascontiguousarray(dy, dtype=x.dtype)
    dx, dU_parts, db_parts = _run(False, x, W, None, y, dy, argmax, need_dx, relu, pool, False, padding, TH, TW)
    nchunks, _, F, C = dU_parts.shape                     # (summed as fast.py's 3-d dW parts are:
    dU, db = _add_thread_parts(dU_parts.reshape(nchunks, 16 * F, C), db_parts)   # one compiled copy)
    return (dx if need_dx else None), weight_gradient(dU.reshape(16, F, C)).astype(x.dtype, copy=False), db


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """As fast.conv2d_relu_maxpool2_forward: the ReLU convolution's 2x2 max pooling
    (N, F, OH // 2, OW // 2) and, as the cache, x, the pooled output and each window's tap
    (int8); need_argmax=False records no taps and returns no cache. Each pooling window is
    one Winograd tile, pooled as the tile is transformed: the full output is never written."""
    x = np.ascontiguousarray(x)
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    pooled = np.empty((x.shape[0], W.shape[0], OH // 2, OW // 2), dtype=x.dtype)
    argmax = np.empty(pooled.shape, dtype=np.int8) if need_argmax else _NO_TAPS
    _run(True, x, W, b, pooled, pooled[:0], argmax, False, True, True, need_argmax, padding, TH, TW)
    return pooled, ((x, pooled, argmax) if need_argmax else None)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    """As fast.conv2d_relu_maxpool2_backward: (dx or None, dW, db)."""
    x, pooled, argmax = cache
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    if dpooled.shape != pooled.shape:
        raise ValueError(f"winograd conv2d backward: dy has shape {dpooled.shape}, the forward pass gave "
                         f"{pooled.shape}")
    return _backward(x, W, padding, dpooled, pooled, argmax, need_dx, True, True, TH, TW)
