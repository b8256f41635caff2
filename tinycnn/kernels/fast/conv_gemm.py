"""The convolution as a matrix product (im2col + GEMM), for layers with many channels.

The batch is cut into blocks of a few images. For each block, im2col builds its columns
(C*kh*kw, g*OH*OW) in a small buffer (up to BLOCK_BYTES = 128 KB, or one image's columns
if those are larger, so it stays in the core's cache),
one BLAS matrix product turns them into the block's outputs, and the result is written out
in NCHW with the bias (and ReLU, and pooling: epilogue.py) added. The full-batch column
matrix (17 MB for MNIST's second conv at batch 128, 39 MB for a 5x5 one at batch 256) is
never built: on these machines a fresh large array costs ~3 us per 4 KB page just to touch,
which is more than the arithmetic.
- Each thread's share is a contiguous run of blocks; it owns its images' outputs (and,
  backward, their dx), and sums its own weight gradient (parallel.py).
- The backward pass rebuilds each block's columns instead of keeping them from the forward
  pass: rebuilding from cache-hot input is cheaper than storing and re-reading them.
- im2col copies whole runs of a row at a time: for each kernel column j it works out once
  which output columns read inside the image (lo..hi); the rest are padding zeros. No
  per-element bounds test in the inner loop, so it compiles to straight copies.
"""
import numpy as np
from numba import njit, types, uintp
from numba.extending import overload

from ..reference import conv_output_size
from .epilogue import relu_grad_row, unpool_relu_grad, vector_sum, write_plane
from .gemm import gemm_for, matmul
from .parallel import JIT, add_thread_parts, in_parallel, share_range, threads_for

# Target size of one block's column buffer. Training steps (2 threads, 10-12 rounds of 10
# steps alternated in one process, session 11, 2-core AMD EPYC, 1 MB of L2 per core),
# 128 KB against 512 KB: fastnet at batch 256 26.6 / 28.7 and 28.2 / 30.9 ms, convnet 14.1 /
# 14.9 (and 18.6 / 18.7 in a noisy run), bnnet 32.5 / 33.4 and 35.2 / 38.4, LeNet-5 5.3 / 5.6 ms;
# 64 KB as 128 KB.
# Inference (1,000 images) within +-3%, LeNet-5's 7% faster. (An earlier session measured
# 256 KB-1 MB best, on earlier kernels.) For fastnet's and the convnet's second layers
# this is one image per block.
BLOCK_BYTES = 1 << 17


def strides_and_pads(geometry):
    """(sh, sw, ph, pw) from a share's `geometry`: those four in an array, or None for the
    commonest case, stride 1 and no padding (every built-in model's GEMM layers). For jitted
    code only: with None the overload below returns constants, which LLVM folds into
    im2col's and col2im's index arithmetic, so their row copies compile to straight vector
    moves. A padded stride-1 layer is padded first (padded_here); a strided layer compiles
    its own version of a share, when first used. The same sums in the same order: the same
    bits.
    Measured in session 19 (AMD EPYC Zen 4, AVX2, two threads, batch 128, one process, the
    median of paired calls' ratios): the backward pass of fastnet's second layer 10.2 -> 9.0
    ms (1.11x), of LeNet-5's 4.1 -> 3.7 (1.10x); whole training steps (bench_switch.py,
    10 rounds) fastnet 1.06x, LeNet-5 1.04x, the convnet and bnnet 1.00x and 1.02x (their
    GEMM layers are small); compiling the two shares for fastnet's second layer took 6.1 s
    of CPU against 7.4 (means of three cold processes), and LeNet-5's first training step on
    a new machine 5.7 s against 7.6 (medians of three, alternated; its padded first layer
    had run the general version)."""
    raise TypeError("strides_and_pads runs inside jitted kernels only")


@overload(strides_and_pads, jit_options=JIT)
def _strides_and_pads_typed(geometry):
    if isinstance(geometry, types.NoneType):
        return lambda geometry: (1, 1, 0, 0)
    return lambda geometry: (geometry[0], geometry[1], geometry[2], geometry[3])


def geometry_of(sh, sw, ph, pw):
    """What the shares take as `geometry` (see strides_and_pads): None, or the four as an
    array (Numba's parallel loop passes arrays and numbers to a share, not tuples)."""
    return None if (sh, sw, ph, pw) == (1, 1, 0, 0) else np.array([sh, sw, ph, pw], dtype=np.int64)


def padded_here(x, sh, sw, ph, pw):
    """(x, ph, pw) for the shares: a stride-1 layer's padding is made here, in a padded copy
    of x (LeNet-5's first layer: 0.5 MB at batch 128), so that it too runs the constant
    version of the shares, and a model compiles one version of each (two had cost LeNet-5's
    first training step 2-3 s more CPU on a new machine). The columns are the same, zeros
    included, so the results are the same bits; backward crops dx (unpadded)."""
    if (sh, sw) != (1, 1) or (ph, pw) == (0, 0):
        return x, ph, pw
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))), 0, 0


@njit(inline="always", **JIT)
def _valid_columns(j, sw, pw, OW, W):
    """The output columns ow for which input column ow*sw + j - pw lies inside [0, W)."""
    lo = 0
    while lo < OW and lo * sw + j - pw < 0:
        lo += 1
    hi = OW
    while hi > lo and (hi - 1) * sw + j - pw >= W:
        hi -= 1
    return lo, hi


@njit(inline="always", **JIT)
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


@njit(inline="always", **JIT)
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


@njit(**JIT)
def _im2col_share(t, nchunks, x, cols, kh, kw, geometry, OH, OW):
    sh, sw, ph, pw = strides_and_pads(geometry)
    n0, n1 = share_range(t, nchunks, x.shape[0])
    for n in range(n0, n1):
        _im2col_image(x, n, cols, n * OH * OW, kh, kw, sh, sw, ph, pw, OH, OW)


@njit(**JIT)
def _col2im_share(t, nchunks, cols, dx, kh, kw, geometry, OH, OW):
    sh, sw, ph, pw = strides_and_pads(geometry)
    n0, n1 = share_range(t, nchunks, dx.shape[0])
    for n in range(n0, n1):
        dx[n] = 0
        _col2im_image(cols, n * OH * OW, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)


def im2col(x, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    cols = np.empty((C * kh * kw, N * OH * OW), dtype=x.dtype)
    in_parallel(_im2col_share, threads_for(N), np.ascontiguousarray(x), cols, kh, kw, geometry_of(sh, sw, ph, pw),
                OH, OW)
    return cols


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    N, C, H, W = x_shape
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw)
    dx = np.empty((N, C, H, W), dtype=cols.dtype)
    in_parallel(_col2im_share, threads_for(N), np.ascontiguousarray(cols), dx, kh, kw, geometry_of(sh, sw, ph, pw),
                OH, OW)
    return dx


def blocking(N, bytes_per_image):
    """Images per block (so one block's buffers fill about BLOCK_BYTES) and thread shares.
    Also used by conv_winograd.py, whose blocks hold its transformed tiles instead."""
    group = max(1, min(N, BLOCK_BYTES // bytes_per_image))
    return group, threads_for(-(-N // group))


# -- forward -------------------------------------------------------------------------------

def forward(x, Wm, b, kh, kw, sh, sw, ph, pw, OH, OW, relu, pool, taps):
    """y (N, F, P) from x (N, C, H, W) C-contiguous and Wm (F, C*kh*kw); P = OH*OW, or the
    pooled plane with pool. With taps, also each pooling window's tap of its maximum (int8)."""
    x, ph, pw = padded_here(x, sh, sw, ph, pw)
    N, F = x.shape[0], Wm.shape[0]
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    group, nchunks = blocking(N, Wm.shape[1] * OH * OW * x.itemsize)   # columns (C*kh*kw, OH*OW)
    in_parallel(_forward_share, nchunks, x, Wm, b, y, argmax, kh, kw, geometry_of(sh, sw, ph, pw), OH, OW, group,
                relu, pool, taps, gemm_for(x.dtype))
    return y, argmax


@njit(**JIT)
def _forward_share(t, nchunks, x, Wm, b, y, argmax, kh, kw, geometry, OH, OW, group, relu, pool, taps, gemm):
    """Share t of forward: its run of blocks of `group` images, into y and argmax."""
    sh, sw, ph, pw = strides_and_pads(geometry)
    N = x.shape[0]
    F, K = Wm.shape
    P = OH * OW
    blk0, blk1 = share_range(t, nchunks, (N + group - 1) // group)
    for blk in range(blk0, blk1):
        n0, n1 = blk * group, min(N, (blk + 1) * group)
        cols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)     # (C*kh*kw, g*P)
        for n in range(n0, n1):
            _im2col_image(x, n, cols, (n - n0) * P, kh, kw, sh, sw, ph, pw, OH, OW)
        out = np.empty((F, (n1 - n0) * P), dtype=x.dtype)
        matmul(gemm, Wm, False, cols, False, out, 0.0)         # (F, g*P), BLAS
        for n in range(n0, n1):                                 # -> NCHW, plus bias
            c0 = (n - n0) * P                                   # (and ReLU: no extra pass)
            for f in range(F):
                write_plane(out[f, c0:c0 + P], b[f], y, argmax, n, f, OH, OW, relu, pool, taps)


# -- backward ------------------------------------------------------------------------------

def backward(x, dy, y, argmax, Wm, kh, kw, sh, sw, ph, pw, OH, OW, need_dx, relu, pool):
    """dx (or an empty array), dW (F, K) and db (F,); dy (N, F, P) as forward returned y."""
    N, C, H, W = x.shape
    (top, left), (x, ph, pw) = (ph, pw), padded_here(x, sh, sw, ph, pw)
    top, left = top - ph, left - pw        # padding made here: cropped from dx at the end
    F, K = Wm.shape
    group, nchunks = blocking(N, K * OH * OW * x.itemsize)
    dx = np.empty(x.shape if need_dx else (0, C, H, W), dtype=x.dtype)        # zeroed per image
    # The weight gradient's sums are kept as dW (F, K) or as its transpose (K, F), whichever
    # is the taller matrix: BLAS runs these thin products faster with a tall result
    # (one thread, GFLOP/s, dW against dW^T: fastnet's second conv, K=600, F=32: 60 / 92;
    # LeNet's, K=150, F=16: 41 / 74; convnet's first, K=9, F=32: 26 / 20).
    tall_dWT = K >= F
    dW_parts = np.zeros((nchunks, K, F) if tall_dWT else (nchunks, F, K), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    in_parallel(_backward_share, nchunks, x, dy, y, argmax, Wm, dx, dW_parts, db_parts, kh, kw,
                geometry_of(sh, sw, ph, pw), OH, OW, group, need_dx, relu, pool, tall_dWT, gemm_for(x.dtype))
    dW, db = add_thread_parts(dW_parts, db_parts)
    if need_dx and (top or left):
        dx = np.ascontiguousarray(dx[:, :, top:top + H, left:left + W])
    return dx, (np.ascontiguousarray(dW.T) if tall_dWT else dW), db


@njit(**JIT)
def _backward_share(t, nchunks, x, dy, y, argmax, Wm, dx, dW_parts, db_parts, kh, kw, geometry, OH, OW,
                    group, need_dx, relu, pool, tall_dWT, gemm):
    """Share t of backward: its run of blocks; their dx, and their sums added into
    dW_parts[t] ((K, F), dW transposed, with tall_dWT, else (F, K)) and db_parts[t] (F,)."""
    sh, sw, ph, pw = strides_and_pads(geometry)
    N = x.shape[0]
    F, K = Wm.shape
    P = OH * OW
    PH, PW = OH // 2, OW // 2
    dW, db = dW_parts[t], db_parts[t]
    blk0, blk1 = share_range(t, nchunks, (N + group - 1) // group)
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
                    unpool_relu_grad(dy[n, f].reshape(PH, PW), y[n, f].reshape(PH, PW),
                                     argmax[n, f].reshape(PH, PW), row.reshape(OH, OW))
                    db[f] += vector_sum(row)
                else:
                    db[f] += relu_grad_row(dy[n, f], y[n, f], dy_blk[f, c0:c0 + P], relu)
        if tall_dWT:
            matmul(gemm, cols, False, dy_blk, True, dW, 1.0)  # dW^T += cols dY^T
        else:
            matmul(gemm, dy_blk, False, cols, True, dW, 1.0)  # dW += dY cols^T
        if need_dx:
            dcols = np.empty((K, (n1 - n0) * P), dtype=x.dtype)
            matmul(gemm, Wm, True, dy_blk, False, dcols, 0.0)  # W^T dY, then col2im
            for n in range(n0, n1):
                dx[n] = 0
                _col2im_image(dcols, (n - n0) * P, dx, n, kh, kw, sh, sw, ph, pw, OH, OW)
