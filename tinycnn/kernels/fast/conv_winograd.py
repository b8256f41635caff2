"""Winograd F(2x2, 3x3) for 3x3, stride-1 convolutions: the maths and the NumPy twin are in
tinycnn/kernels/winograd.py; this is the fast version, with the same signatures as
conv.py's kernels.

Laid out like conv_gemm.py's im2col + GEMM convolution: the batch is cut into blocks of a
few images, whose V (16, C, g*T) and M (16, F, g*T) together fill about
conv_gemm.BLOCK_BYTES (so they stay in cache; conv_gemm.blocking); each block runs its 16
products through gemm.matmul (NumPy's sgemm for float32); blocks are shared among the
threads in contiguous runs, each thread owning its images' outputs and dx, and summing its
own dU and db (added in a fixed order after). The tile transforms go through small scratch
arrays so their loops need no bounds tests and run along contiguous memory: the input
through a zero-bordered padded plane (2*TH + 2, 2*TW + 2); the outputs (and dy, backward)
through 4 rows of T tiles, row 2a + b holding pixel (a, b) of every 2x2 tile, so the
output transform is one loop over tiles reading 16 and writing 4 contiguous streams (it
vectorises; the gradient's is cut into 4 such loops, see _times_AT). Measured on convnet's
conv2, batch 128, one thread, the transforms take 0.8-1.7 ms each, the 16 products per
block the rest (~4 ms forward).
Each thread's share (_forward_share, _backward_share) is a contiguous run of blocks, run
by parallel.in_parallel. The transforms are inlined into the shares (inline="always"): as
functions of their own, each was compiled twice on a first run, alone and again linked into
each share. Compiling convnet's two Winograd shares (Numba's compile events, one process,
two runs) took 6.2 and 6.3 s of CPU that way, 4.8 and 5.0 s inlined; the results are the
same bit for bit, and the speed too (one thread, three runs alternated).
"""
import numpy as np
from numba import njit, uintp

from ..winograd import tiling, transform_weights, weight_gradient
from .conv_gemm import blocking
from .gemm import gemm_for, matmul
from .parallel import JIT, add_thread_parts, in_parallel, share_range

@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
def _outputs_of_tiles(M, q0, Y, y, argmax, n, b, relu, pool, taps, TW):
    """y[n] = A^T M A per tile, plus bias (and ReLU), from M[:, :, q0 : q0 + T].
    Y (4, T) is scratch: Y[2a + b, th*TW + tw] becomes output pixel (2*th + a, 2*tw + b).
    With pool, y[n] is the ReLU's 2x2 max pooling instead: each window is one tile, so it is
    pooled straight from Y (with taps, argmax[n] gets each window's tap 0..3, row-major, of
    its first maximum, as conv.py's fused kernel records it)."""
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


@njit(inline="always", **JIT)
def _times_AT(d0, d1, negate, M, xi, f, q0):
    """M[xi + l, f, q0 + p] = +-((d0[p], d1[p]) A^T)[l], l = 0..3: (d0, d0 + d1, d0 - d1, -d1).
    One output row per call: a loop with 2 input and 4 output streams vectorises; with all
    16 outputs in one loop it did not (measured 3x slower)."""
    q0 = uintp(q0)
    for p in range(uintp(d0.shape[0])):
        a, b = (-d0[p], -d1[p]) if negate else (d0[p], d1[p])
        M[xi, f, q0 + p], M[xi + 1, f, q0 + p], M[xi + 2, f, q0 + p], M[xi + 3, f, q0 + p] = a, a + b, a - b, -b


_DM_ROWS = (0, 4, 6, 2)         # where _tiles_of_gradient's D holds A dY's row r (2 rows each)


@njit(inline="always", **JIT)
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
        # A dY has rows dY[0], dY[0] + dY[1], dY[0] - dY[1], -dY[1] (D's rows 0-1, 4-5, 6-7
        # and 2-3, negated); each times A^T. One call in a loop rather than four calls: each
        # call site would be inlined as a copy of its own, compiled on a first run.
        for r in range(4):
            k = _DM_ROWS[r]
            _times_AT(D[k], D[k + 1], r == 3, M, 4 * r, f, q0)


@njit(**JIT)
def _forward_share(t, nchunks, x, U, b, y, argmax, ph, pw, TH, TW, group, relu, pool, taps, gemm):
    """Share t's contiguous run of blocks, forward: writes y, and argmax with taps."""
    N, C = x.shape[0], x.shape[1]
    F, T = U.shape[1], TH * TW
    xp = np.zeros((2 * TH + 2, 2 * TW + 2), dtype=x.dtype)     # zero border, see _tiles_of_image
    rows = np.empty((4, 2 * TW + 2), dtype=x.dtype)
    Y = np.empty((4, T), dtype=x.dtype)                         # 2x2 tiles, see _outputs_of_tiles
    V_buf = np.empty(16 * C * group * T, dtype=x.dtype)
    M_buf = np.empty(16 * F * group * T, dtype=x.dtype)
    blk0, blk1 = share_range(t, nchunks, (N + group - 1) // group)
    for blk in range(blk0, blk1):
        n0, n1 = blk * group, min(N, (blk + 1) * group)
        cols = (n1 - n0) * T
        V = V_buf[:16 * C * cols].reshape(16, C, cols)          # (16, C, g*T)
        M = M_buf[:16 * F * cols].reshape(16, F, cols)          # (16, F, g*T)
        for n in range(n0, n1):
            _tiles_of_image(x, n, xp, rows, V, (n - n0) * T, ph, pw, TH, TW)
        for xi in range(16):
            matmul(gemm, U[xi], False, V[xi], False, M[xi], 0.0)          # M = U V
        for n in range(n0, n1):
            _outputs_of_tiles(M, (n - n0) * T, Y, y, argmax, n, b, relu, pool, taps, TW)


@njit(**JIT)
def _backward_share(t, nchunks, x, U, y, dy, argmax, dx, dU_parts, db_parts, ph, pw, TH, TW, group, relu, pool,
                    need_dx, gemm):
    """Share t's contiguous run of blocks, backward: writes dx and its own dU_parts[t],
    db_parts[t]."""
    N, C = x.shape[0], x.shape[1]
    F, T = U.shape[1], TH * TW
    xp = np.zeros((2 * TH + 2, 2 * TW + 2), dtype=x.dtype)
    rows = np.empty((4, 2 * TW + 2), dtype=x.dtype)
    tiles8 = np.zeros((8, T), dtype=x.dtype)                   # see _tiles_of_gradient
    V_buf = np.empty(16 * C * group * T, dtype=x.dtype)
    dM_buf = np.empty(16 * F * group * T, dtype=x.dtype)
    dV_buf = np.empty(16 * C * group * T if need_dx else 0, dtype=x.dtype)
    blk0, blk1 = share_range(t, nchunks, (N + group - 1) // group)
    for blk in range(blk0, blk1):
        n0, n1 = blk * group, min(N, (blk + 1) * group)
        cols = (n1 - n0) * T
        V = V_buf[:16 * C * cols].reshape(16, C, cols)          # (16, C, g*T)
        dM = dM_buf[:16 * F * cols].reshape(16, F, cols)        # (16, F, g*T)
        for n in range(n0, n1):
            _tiles_of_image(x, n, xp, rows, V, (n - n0) * T, ph, pw, TH, TW)
            _tiles_of_gradient(dy, y, argmax, n, tiles8, dM, (n - n0) * T, relu, pool, db_parts[t], TW)
        for xi in range(16):
            matmul(gemm, dM[xi], False, V[xi], True, dU_parts[t, xi], 1.0)   # dU += dM V^T
        if need_dx:
            dV = dV_buf[:16 * C * cols].reshape(16, C, cols)
            for xi in range(16):
                matmul(gemm, U[xi], True, dM[xi], False, dV[xi], 0.0)        # dV = U^T dM
            for n in range(n0, n1):
                _image_of_tiles(dV, (n - n0) * T, xp, rows, dx, n, ph, pw, TH, TW)
                xp[:] = 0                                   # (its border must be zero again)


def _bytes_per_image(C, F, T, itemsize, backward):
    """One image's share of a block: V and M forward; V, dM and dV backward (16 values per tile)."""
    return 16 * T * itemsize * (2 * C + F if backward else C + F)


_NO_TAPS = np.empty((0, 0, 0, 0), dtype=np.int8)     # argmax where none is read or written


def _forward(x, W, b, y, argmax, relu, pool, taps, padding, TH, TW):
    """Writes y (and argmax) from x (N, C, H, W), W (F, C, 3, 3), b (F,) or None."""
    N, C = x.shape[0], x.shape[1]
    F, dt = W.shape[0], x.dtype
    group, nchunks = blocking(N, _bytes_per_image(C, F, TH * TW, x.itemsize, False))
    U = transform_weights(W.astype(dt, copy=False))                 # (16, F, C)
    bias = b.astype(dt, copy=False) if b is not None else np.zeros(F, dtype=dt)
    in_parallel(_forward_share, nchunks, x, U, bias, y, argmax, padding[0], padding[1], TH, TW, group, relu, pool,
                taps, gemm_for(dt))


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """As conv.conv2d_forward, by Winograd F(2x2, 3x3): returns y (N, F, OH, OW) and, as the
    cache, x (the backward pass transforms it again) and, with relu, y."""
    x = np.ascontiguousarray(x)
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    y = np.empty((x.shape[0], W.shape[0], OH, OW), dtype=x.dtype)
    _forward(x, W, b, y, _NO_TAPS, relu, False, False, padding, TH, TW)
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    """As conv.conv2d_backward: (dx or None, dW, db). dW = G^T dU G from the shares' dU."""
    x, y = cache
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    expected = (x.shape[0], W.shape[0], OH, OW)
    if dy.shape != expected:
        raise ValueError(f"winograd conv2d backward: dy has shape {dy.shape}, the forward pass gave {expected}")
    return _backward(x, W, padding, dy, dy if y is None else y, _NO_TAPS, need_dx, y is not None, False, TH, TW)


def _backward(x, W, padding, dy, y, argmax, need_dx, relu, pool, TH, TW):
    """Both backward passes: (dx or None, dW, db), dW = G^T dU G from the shares' dU."""
    N, C, H, Wd = x.shape
    F, dt = W.shape[0], x.dtype
    dy = np.ascontiguousarray(dy, dtype=dt)
    group, nchunks = blocking(N, _bytes_per_image(C, F, TH * TW, x.itemsize, True))
    U = transform_weights(W.astype(dt, copy=False))
    dx = np.empty((N if need_dx else 0, C, H, Wd), dtype=dt)
    dU_parts = np.zeros((nchunks, 16, F, C), dtype=dt)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    in_parallel(_backward_share, nchunks, x, U, y, dy, argmax, dx, dU_parts, db_parts, padding[0], padding[1], TH,
                TW, group, relu, pool, need_dx, gemm_for(dt))
    dU, db = add_thread_parts(dU_parts, db_parts)
    return (dx if need_dx else None), weight_gradient(dU).astype(dt, copy=False), db


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """As conv.conv2d_relu_maxpool2_forward: the ReLU convolution's 2x2 max pooling
    (N, F, OH // 2, OW // 2) and, as the cache, x, the pooled output and each window's tap
    (int8); need_argmax=False records no taps and returns no cache. Each pooling window is
    one Winograd tile, pooled as the tile is transformed: the full output is never written."""
    x = np.ascontiguousarray(x)
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    pooled = np.empty((x.shape[0], W.shape[0], OH // 2, OW // 2), dtype=x.dtype)
    argmax = np.empty(pooled.shape, dtype=np.int8) if need_argmax else _NO_TAPS
    _forward(x, W, b, pooled, argmax, True, True, need_argmax, padding, TH, TW)
    return pooled, ((x, pooled, argmax) if need_argmax else None)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    """As conv.conv2d_relu_maxpool2_backward: (dx or None, dW, db)."""
    x, pooled, argmax = cache
    OH, OW, TH, TW = tiling(x.shape, W.shape, stride, padding)
    if dpooled.shape != pooled.shape:
        raise ValueError(f"winograd conv2d backward: dy has shape {dpooled.shape}, the forward pass gave "
                         f"{pooled.shape}")
    return _backward(x, W, padding, dpooled, pooled, argmax, need_dx, True, True, TH, TW)
