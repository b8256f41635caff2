"""The direct convolution with its accumulators in registers: 8 output channels x 8 output
pixels at a time, for stride-1 layers with at least 8 output channels and 8 output columns;
and the weight gradient likewise, 8 taps x 8 channels at a time (below, "backward").

conv_direct.py adds one tap at a time to a whole output plane in memory, and conv_gemm.py
copies every input window out (im2col) for BLAS to multiply: both move memory for every
multiply-add or two. Here a block of the output, 8 channels f0..f0+7 of 8 neighbouring
pixels in one row (oh, ow0..ow0+7), stays in 64 scalar accumulators while the sum runs
over all taps (c, i, j):

    a[k][p] += W[f0 + k, c, i, j] * xpad[c, oh + i, ow0 + j + p]        k, p = 0..7

Per tap that is 8 neighbouring input values and 8 weights (one contiguous run each: the
padded image is one flat array, and the weights are laid out (taps, F), W's transpose)
for 64 multiply-adds. LLVM's SLP vectoriser packs each channel's 8 accumulators into one
8-lane register and each row of 8 multiply-adds into one fused multiply-add ('contract'
allows the fusing) with its weight broadcast from memory: 8 accumulator registers, and per
tap 1 vector load and 8 FMAs. Numba leaves the SLP vectoriser off, so these shares are
compiled with it on (parallel.slp_share); without it the same code ran 8-9 GFLOP/s.
Written as loops over k and p, the accumulators stayed in memory (7 GFLOP/s); with the
input as 3-D planes and separate loops over c, i and j, 20% slower than one loop over the
taps (the loops over i and j are too short). One trap: the accumulators start from a zero
of x's dtype; `0 * a float32` is a float64 in Numba, and float64 sums were 3x slower.

Measured on fastnet's second layer (24 -> 32 channels, 5x5, 12x12 inputs, batch 256, one
thread, a 2-core AMD EPYC): 79 GFLOP/s, where NumPy's sgemm on 1024x1024 matrices reaches
80-93 on the same core (benchmarks/bench_conv_methods.py compares the methods per layer).

Tails: the last channel block starts at F - 8 and the last pixel block at OW - 8, so they
overlap the block before and compute a few outputs twice (the same values). The bias,
ReLU and pooling are applied to each finished plane (epilogue.py).
"""
import numpy as np
from numba import njit, uintp

from .conv_direct import pad_into, tap_offsets
from .epilogue import relu_grad_row, relu_maxpool2, relu_maxpool2_values, unpool_relu_grad, vector_sum
from .parallel import JIT, add_thread_parts, in_parallel, share_range, slp_share, threads_for

BLOCK = 8       # output channels, and output pixels, per block


def applies(F, OW, stride):
    """Whether a layer can take this method: stride 1, F and OW at least one block."""
    return tuple(stride) == (1, 1) and F >= BLOCK and OW >= BLOCK


# The weight gradient by this method for stride-1 layers with at least this many taps
# (C*kh*kw). Measured against GEMM, batch 256, two threads: fastnet's 24->32 5x5 (600 taps)
# 6.1 against 7.8 ms, LeNet-5's 6->16 5x5 (150) 1.6 against 2.4; but the one-channel first
# layers (9-25 taps, 576-784 pixels) 1.7-1.9x slower: few taps per pixel, padded to 16 or 32.
MIN_TAPS_FOR_DW = 64


def applies_to_dW(C, kh, kw, stride):
    return tuple(stride) == (1, 1) and C * kh * kw >= MIN_TAPS_FOR_DW


def forward(x, Wm, b, kh, kw, ph, pw, OH, OW, relu, pool, taps):
    """As conv_gemm.forward, for stride 1 (see applies)."""
    N, C, H, W = x.shape
    F = Wm.shape[0]
    Wp = W + 2 * pw
    offsets = tap_offsets(C, kh, kw, (H + 2 * ph) * Wp, Wp, 1, 0)
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    in_parallel(_forward_share, threads_for(N), x, np.ascontiguousarray(Wm.T), offsets, b, y, argmax,
                ph, pw, OH, OW, relu, pool, taps)
    return y, argmax


@slp_share
@njit(fastmath={"contract"}, **JIT)
def _forward_share(t, nchunks, x, Wt, offsets, b, y, argmax, ph, pw, OH, OW, relu, pool, taps):
    """Share t of forward: its run of images, into y and argmax. Wt (taps, F) is W's
    transpose; offsets[k] is tap k's place in the flat padded image."""
    N, C, H, W = x.shape
    F = Wt.shape[1]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    PH, PW = (OH // 2, OW // 2) if pool else (OH, OW)
    xp = np.zeros(C * Hp * Wp + BLOCK, dtype=x.dtype)          # the padding stays zero
    conv = np.empty((F, OH * OW), dtype=x.dtype)              # one image's sums, no bias
    z = np.zeros(1, dtype=x.dtype)[0]                         # 0 in x.dtype (not 0 * a float32,
    n0, n1 = share_range(t, nchunks, N)                       # which Numba makes a float64)
    for n in range(n0, n1):
        pad_into(x, n, xp, ph, pw, Hp, Wp)
        for fb in range(0, F, BLOCK):
            f0 = uintp(min(fb, F - BLOCK))
            for oh in range(OH):
                for pb in range(0, OW, BLOCK):
                    ow0 = min(pb, OW - BLOCK)
                    _block(xp, Wt, offsets, uintp(oh * Wp + ow0), f0, conv, uintp(oh * OW + ow0), z)
        for f in range(F):
            plane, bias, dst = conv[f], b[f], y[n, f]
            if pool and taps:
                relu_maxpool2(plane.reshape(OH, OW), bias, dst.reshape(PH, PW), argmax[n, f].reshape(PH, PW))
            elif pool:
                relu_maxpool2_values(plane.reshape(OH, OW), bias, dst.reshape(PH, PW))
            elif relu:
                for p in range(uintp(OH * OW)):
                    dst[p] = max(plane[p] + bias, z)
            else:
                for p in range(uintp(OH * OW)):
                    dst[p] = plane[p] + bias


@njit(inline="always", **JIT)
def _block(xp, Wt, offsets, base, f0, out, o, z):
    """out[f0 + k, o + p] = sum over taps of Wt[tap, f0 + k] * xp[base + offsets[tap] + p],
    for k, p = 0..7: one block, in 64 accumulators (see the module's docstring)."""
    a00, a01, a02, a03, a04, a05, a06, a07 = z, z, z, z, z, z, z, z
    a10, a11, a12, a13, a14, a15, a16, a17 = z, z, z, z, z, z, z, z
    a20, a21, a22, a23, a24, a25, a26, a27 = z, z, z, z, z, z, z, z
    a30, a31, a32, a33, a34, a35, a36, a37 = z, z, z, z, z, z, z, z
    a40, a41, a42, a43, a44, a45, a46, a47 = z, z, z, z, z, z, z, z
    a50, a51, a52, a53, a54, a55, a56, a57 = z, z, z, z, z, z, z, z
    a60, a61, a62, a63, a64, a65, a66, a67 = z, z, z, z, z, z, z, z
    a70, a71, a72, a73, a74, a75, a76, a77 = z, z, z, z, z, z, z, z
    for k in range(uintp(offsets.shape[0])):      # every tap (c, i, j)
        s = base + uintp(offsets[k])
        x0, x1, x2, x3 = xp[s], xp[s + uintp(1)], xp[s + uintp(2)], xp[s + uintp(3)]
        x4, x5, x6, x7 = xp[s + uintp(4)], xp[s + uintp(5)], xp[s + uintp(6)], xp[s + uintp(7)]
        w = Wt[k, f0 + uintp(0)]
        a00, a01, a02, a03, a04, a05, a06, a07 = (a00 + w * x0, a01 + w * x1, a02 + w * x2, a03 + w * x3,
                                                  a04 + w * x4, a05 + w * x5, a06 + w * x6, a07 + w * x7)
        w = Wt[k, f0 + uintp(1)]
        a10, a11, a12, a13, a14, a15, a16, a17 = (a10 + w * x0, a11 + w * x1, a12 + w * x2, a13 + w * x3,
                                                  a14 + w * x4, a15 + w * x5, a16 + w * x6, a17 + w * x7)
        w = Wt[k, f0 + uintp(2)]
        a20, a21, a22, a23, a24, a25, a26, a27 = (a20 + w * x0, a21 + w * x1, a22 + w * x2, a23 + w * x3,
                                                  a24 + w * x4, a25 + w * x5, a26 + w * x6, a27 + w * x7)
        w = Wt[k, f0 + uintp(3)]
        a30, a31, a32, a33, a34, a35, a36, a37 = (a30 + w * x0, a31 + w * x1, a32 + w * x2, a33 + w * x3,
                                                  a34 + w * x4, a35 + w * x5, a36 + w * x6, a37 + w * x7)
        w = Wt[k, f0 + uintp(4)]
        a40, a41, a42, a43, a44, a45, a46, a47 = (a40 + w * x0, a41 + w * x1, a42 + w * x2, a43 + w * x3,
                                                  a44 + w * x4, a45 + w * x5, a46 + w * x6, a47 + w * x7)
        w = Wt[k, f0 + uintp(5)]
        a50, a51, a52, a53, a54, a55, a56, a57 = (a50 + w * x0, a51 + w * x1, a52 + w * x2, a53 + w * x3,
                                                  a54 + w * x4, a55 + w * x5, a56 + w * x6, a57 + w * x7)
        w = Wt[k, f0 + uintp(6)]
        a60, a61, a62, a63, a64, a65, a66, a67 = (a60 + w * x0, a61 + w * x1, a62 + w * x2, a63 + w * x3,
                                                  a64 + w * x4, a65 + w * x5, a66 + w * x6, a67 + w * x7)
        w = Wt[k, f0 + uintp(7)]
        a70, a71, a72, a73, a74, a75, a76, a77 = (a70 + w * x0, a71 + w * x1, a72 + w * x2, a73 + w * x3,
                                                  a74 + w * x4, a75 + w * x5, a76 + w * x6, a77 + w * x7)
    _store8(out, f0 + uintp(0), o, a00, a01, a02, a03, a04, a05, a06, a07)
    _store8(out, f0 + uintp(1), o, a10, a11, a12, a13, a14, a15, a16, a17)
    _store8(out, f0 + uintp(2), o, a20, a21, a22, a23, a24, a25, a26, a27)
    _store8(out, f0 + uintp(3), o, a30, a31, a32, a33, a34, a35, a36, a37)
    _store8(out, f0 + uintp(4), o, a40, a41, a42, a43, a44, a45, a46, a47)
    _store8(out, f0 + uintp(5), o, a50, a51, a52, a53, a54, a55, a56, a57)
    _store8(out, f0 + uintp(6), o, a60, a61, a62, a63, a64, a65, a66, a67)
    _store8(out, f0 + uintp(7), o, a70, a71, a72, a73, a74, a75, a76, a77)


@njit(inline="always", **JIT)
def _store8(out, f, o, a0, a1, a2, a3, a4, a5, a6, a7):
    out[f, o], out[f, o + uintp(1)], out[f, o + uintp(2)], out[f, o + uintp(3)] = a0, a1, a2, a3
    out[f, o + uintp(4)], out[f, o + uintp(5)], out[f, o + uintp(6)], out[f, o + uintp(7)] = a4, a5, a6, a7



# -- backward: the weight gradient ----------------------------------------------------------
# The same blocks of 64 accumulators, for dW straight from the padded input (no im2col):
#   dW[f, k] = sum over pixels q of dy[f, q] * xpad[offsets[k] + pixels[q]]
# A block is 8 taps x 8 channels; per pixel, 8 neighbouring channels of dy (one contiguous
# run of dyT, dy laid out pixel-major) and 8 input values, one per tap, for 64
# multiply-adds. The sums run over whole blocks: the taps are padded to a multiple of 8
# with taps whose offset points past the image into zeros, and dyT's channels with zero
# columns; what those add is zero, in rows and columns that are dropped.
# dx is left to the GEMM method (conv_gemm.backward with need_dW=False): the same blocking
# for dx, whose sums run over the F channels only (32 for fastnet's second layer), measured
# 52 GFLOP/s against the GEMM's 62 (one thread, batch 128).

def weight_gradient(x, dy, y, argmax, Wm, kh, kw, ph, pw, OH, OW, relu, pool):
    """dW (F, K) and db (F,) of a stride-1 layer: conv_gemm.backward's, without dx."""
    N, C, H, W = x.shape
    F, K = Wm.shape
    Hp, Wp = H + 2 * ph, W + 2 * pw
    offsets = np.full(_whole_blocks(K), C * Hp * Wp, dtype=np.intp)     # padding taps: past the image
    offsets[:K] = tap_offsets(C, kh, kw, Hp * Wp, Wp, 1, 0)
    nchunks = threads_for(N)
    dWT_parts = np.zeros((nchunks, len(offsets), _whole_blocks(F)), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    in_parallel(_weight_gradient_share, nchunks, x, dy, y, argmax, offsets, dWT_parts, db_parts,
                ph, pw, OH, OW, relu, pool)
    dWT, db = add_thread_parts(dWT_parts, db_parts)
    return np.ascontiguousarray(dWT[:K, :F].T), db


def _whole_blocks(n):
    return -(-n // BLOCK) * BLOCK


@slp_share
@njit(fastmath={"contract"}, **JIT)
def _weight_gradient_share(t, nchunks, x, dy, y, argmax, offsets, dWT_parts, db_parts, ph, pw, OH, OW, relu, pool):
    """Share t of weight_gradient: its run of images, their sums added into dWT_parts[t]
    (taps, channels: dW^T, padded to whole blocks) and db_parts[t] (F,)."""
    N, C, H, W = x.shape
    F = db_parts.shape[1]
    Kp, Fp = dWT_parts.shape[1], dWT_parts.shape[2]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    P, PH, PW = OH * OW, OH // 2, OW // 2
    dWT, db = dWT_parts[t], db_parts[t]
    xp = np.zeros(C * Hp * Wp + Hp * Wp, dtype=x.dtype)     # the image, then zeros for the padding taps
    plane = np.empty(P, dtype=x.dtype)
    dyT = np.zeros((P, Fp), dtype=x.dtype)                 # dy pixel-major; padding channels stay zero
    pixels = np.empty(P, dtype=np.intp)                    # output pixel q's place in the padded input
    for oh in range(OH):
        for ow in range(OW):
            pixels[oh * OW + ow] = oh * Wp + ow
    n0, n1 = share_range(t, nchunks, N)
    for n in range(n0, n1):
        pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f in range(F):                                  # dy, the ReLU's (and pooling's)
            if pool:                                        # derivative applied
                plane[:] = 0
                unpool_relu_grad(dy[n, f].reshape(PH, PW), y[n, f].reshape(PH, PW),
                                 argmax[n, f].reshape(PH, PW), plane.reshape(OH, OW))
                db[f] += vector_sum(plane)
            else:
                db[f] += relu_grad_row(dy[n, f], y[n, f], plane, relu)
            for q in range(uintp(P)):
                dyT[q, f] = plane[q]
        for k0 in range(0, Kp, BLOCK):
            for f0 in range(0, Fp, BLOCK):
                _dW_block(xp, offsets, uintp(k0), dyT, uintp(f0), dWT, pixels)


@njit(inline="always", **JIT)
def _dW_block(xp, offsets, k0, dyT, f0, dWT, pixels):
    """dWT[k0 + k, f0 + f] += sum over pixels q of xp[pixels[q] + offsets[k0 + k]]
    * dyT[q, f0 + f], for k, f = 0..7: one block, in 64 accumulators."""
    o0, o1, o2, o3 = uintp(offsets[k0]), uintp(offsets[k0 + 1]), uintp(offsets[k0 + 2]), uintp(offsets[k0 + 3])
    o4, o5, o6, o7 = uintp(offsets[k0 + 4]), uintp(offsets[k0 + 5]), uintp(offsets[k0 + 6]), uintp(offsets[k0 + 7])
    a00, a01, a02, a03, a04, a05, a06, a07 = _load8(dWT, k0 + uintp(0), f0)
    a10, a11, a12, a13, a14, a15, a16, a17 = _load8(dWT, k0 + uintp(1), f0)
    a20, a21, a22, a23, a24, a25, a26, a27 = _load8(dWT, k0 + uintp(2), f0)
    a30, a31, a32, a33, a34, a35, a36, a37 = _load8(dWT, k0 + uintp(3), f0)
    a40, a41, a42, a43, a44, a45, a46, a47 = _load8(dWT, k0 + uintp(4), f0)
    a50, a51, a52, a53, a54, a55, a56, a57 = _load8(dWT, k0 + uintp(5), f0)
    a60, a61, a62, a63, a64, a65, a66, a67 = _load8(dWT, k0 + uintp(6), f0)
    a70, a71, a72, a73, a74, a75, a76, a77 = _load8(dWT, k0 + uintp(7), f0)
    for q in range(uintp(pixels.shape[0])):
        s = uintp(pixels[q])
        g0, g1, g2, g3, g4, g5, g6, g7 = _load8(dyT, q, f0)
        v = xp[s + o0]
        a00, a01, a02, a03, a04, a05, a06, a07 = (a00 + v * g0, a01 + v * g1, a02 + v * g2, a03 + v * g3,
                                                  a04 + v * g4, a05 + v * g5, a06 + v * g6, a07 + v * g7)
        v = xp[s + o1]
        a10, a11, a12, a13, a14, a15, a16, a17 = (a10 + v * g0, a11 + v * g1, a12 + v * g2, a13 + v * g3,
                                                  a14 + v * g4, a15 + v * g5, a16 + v * g6, a17 + v * g7)
        v = xp[s + o2]
        a20, a21, a22, a23, a24, a25, a26, a27 = (a20 + v * g0, a21 + v * g1, a22 + v * g2, a23 + v * g3,
                                                  a24 + v * g4, a25 + v * g5, a26 + v * g6, a27 + v * g7)
        v = xp[s + o3]
        a30, a31, a32, a33, a34, a35, a36, a37 = (a30 + v * g0, a31 + v * g1, a32 + v * g2, a33 + v * g3,
                                                  a34 + v * g4, a35 + v * g5, a36 + v * g6, a37 + v * g7)
        v = xp[s + o4]
        a40, a41, a42, a43, a44, a45, a46, a47 = (a40 + v * g0, a41 + v * g1, a42 + v * g2, a43 + v * g3,
                                                  a44 + v * g4, a45 + v * g5, a46 + v * g6, a47 + v * g7)
        v = xp[s + o5]
        a50, a51, a52, a53, a54, a55, a56, a57 = (a50 + v * g0, a51 + v * g1, a52 + v * g2, a53 + v * g3,
                                                  a54 + v * g4, a55 + v * g5, a56 + v * g6, a57 + v * g7)
        v = xp[s + o6]
        a60, a61, a62, a63, a64, a65, a66, a67 = (a60 + v * g0, a61 + v * g1, a62 + v * g2, a63 + v * g3,
                                                  a64 + v * g4, a65 + v * g5, a66 + v * g6, a67 + v * g7)
        v = xp[s + o7]
        a70, a71, a72, a73, a74, a75, a76, a77 = (a70 + v * g0, a71 + v * g1, a72 + v * g2, a73 + v * g3,
                                                  a74 + v * g4, a75 + v * g5, a76 + v * g6, a77 + v * g7)
    _store8(dWT, k0 + uintp(0), f0, a00, a01, a02, a03, a04, a05, a06, a07)
    _store8(dWT, k0 + uintp(1), f0, a10, a11, a12, a13, a14, a15, a16, a17)
    _store8(dWT, k0 + uintp(2), f0, a20, a21, a22, a23, a24, a25, a26, a27)
    _store8(dWT, k0 + uintp(3), f0, a30, a31, a32, a33, a34, a35, a36, a37)
    _store8(dWT, k0 + uintp(4), f0, a40, a41, a42, a43, a44, a45, a46, a47)
    _store8(dWT, k0 + uintp(5), f0, a50, a51, a52, a53, a54, a55, a56, a57)
    _store8(dWT, k0 + uintp(6), f0, a60, a61, a62, a63, a64, a65, a66, a67)
    _store8(dWT, k0 + uintp(7), f0, a70, a71, a72, a73, a74, a75, a76, a77)


@njit(inline="always", **JIT)
def _load8(a, i, j):
    return (a[i, j], a[i, j + uintp(1)], a[i, j + uintp(2)], a[i, j + uintp(3)],
            a[i, j + uintp(4)], a[i, j + uintp(5)], a[i, j + uintp(6)], a[i, j + uintp(7)])

