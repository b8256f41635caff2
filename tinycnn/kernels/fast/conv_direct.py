"""The direct convolution, for stride 1 and few channels.

When C*F is small (MNIST's first layers: 1->6, 1->32, 6->16) the matrix product of the
GEMM method (conv_gemm.py) is thin,
BLAS runs it far below peak, and im2col's copying costs as much as the arithmetic. For
stride 1 there is a layout that needs neither. Pad the image once, to Hp x Wp, and flatten
each plane. Output (oh, ow) reads input (oh + i, ow + j), at flat position
(oh*Wp + ow) + (i*Wp + j). So compute outputs at every flat position q = oh*Wp + ow for
q < L = (OH-1)*Wp + OW ("wide" outputs: each row carries Wp - OW extra columns, dropped
at the end); then tap (c, i, j) adds w * xp[c, i*Wp + j + q] for all q at once, one long
contiguous multiply-add over the image. Eight taps share each pass, so acc is loaded and
stored once per eight multiply-adds.

Backward is the same shape. dW[f, tap] is a dot product of the wide dy (zeros in the extra
columns, so they add nothing) with the same shifted input. dx is the adjoint: input
position r gets w * dy[r - (i*Wp + j)], a shifted sum over dy with negative offsets, so
dy sits in a buffer with M = (kh-1)*Wp + kw-1 zeros in front.

Which is faster depends on the layer's size (`python benchmarks/bench_conv_methods.py` times
both on this library's layers). Forward, direct wins while the product is thin: LeNet's 1->6 5x5
at batch 1000 12.4 -> 4.7 ms, the convnet's 1->32 3x3 at batch 128 1.5 -> 1.1 ms,
8->16 3x3 3.5 -> 2.8 ms; from 16->32 (C*F = 512) on BLAS wins, and by 1.5x at 32->64.
LeNet's 6->16 (96) is close: LeNet-5's inference measured 22.1 ms per 1000 images with it
on BLAS, 22.7 direct (alternated in one process), so it stays on BLAS. The limit counts the
layer's weights (C*F*kh*kw), because a 5x5 kernel makes each pass of the direct method 25
taps long where the GEMM only gets a deeper product: with the GEMM's 128 KB blocks (session
11), whole training steps with fastnet's first layer (1->24 5x5, 600 weights) on GEMM ran
5-6% faster than with it direct (batch 256: 26.3 / 27.7 ms; batch 128: 14.1 / 15.0, 16
rounds alternated in one process), bnnet's (1->32 5x5, 800) 3% (37.2 / 38.4 ms), and their
inference 3-5% (1,000 images); the convnet's 1->32 3x3 (288) trained as fast either way
(16.5 / 16.5 ms) and stays direct, which spares a first run compiling the GEMM forward pass
for it; LeNet's 1->6 5x5 (150) stays direct (0.47 against 0.83 ms forward, batch 128). Backward, the weight
gradient's dot products run well below the forward's multiply-adds, so direct won only for
the thinnest layer (1->6: 14.5 -> 9.1 ms without dx; 1->32: 2.4 -> 3.2 ms, a loss), and
since the GEMM backward sums dW^T when that is the taller matrix (conv_gemm.py), not even
there: 1->6 at batch 1000 7.8 ms by GEMM against 12.7 direct (a later run, on a machine
whose speed drifts between runs: compare within a run), and LeNet-5's training step
5.58 against 5.88 ms at batch 128 (10 rounds alternated in one process; 8.60 / 9.23 on one
thread, 9.48 / 10.17 at batch 256). So the backward pass is GEMM for every layer
(BACKWARD_MAX_WEIGHTS = 0); the direct one stays, as a second derivation of the same gradients
that tests/test_kernels.py holds equal to the reference, and for layers thinner than these.
The two passes need not agree: the GEMM backward rebuilds its columns from x anyway.
"""
import numpy as np
from numba import njit, uintp

from .epilogue import relu_maxpool2, relu_maxpool2_values, unpool_relu_grad, vector_sum
from .parallel import JIT, add_thread_parts, in_parallel, share_range, threads_for

FORWARD_MAX_WEIGHTS = 300   # the direct forward pass for layers with at most this many weights
BACKWARD_MAX_WEIGHTS = 0    # the direct backward pass likewise: never, at present (above)


def use_direct(C, F, kh, kw, stride, max_weights):
    """Whether a stride-1 layer with C input and F output channels and kh x kw kernels
    (C*F*kh*kw weights) takes the direct method."""
    return tuple(stride) == (1, 1) and C * F * kh * kw <= max_weights


@njit(inline="always", **JIT)
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


@njit(fastmath={"reassoc"}, **JIT)
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


def tap_offsets(C, kh, kw, plane, Wp, sign, shift):
    """shift + sign * (c*plane + i*Wp + j) for every tap (c, i, j), in W.reshape(F, -1)'s order.
    (NumPy, not jitted: a few hundred values, and nothing to compile on a first run.)"""
    c, i, j = np.arange(C)[:, None, None], np.arange(kh)[None, :, None], np.arange(kw)[None, None, :]
    return (shift + sign * (c * plane + i * Wp + j)).ravel().astype(np.intp)


@njit(inline="always", **JIT)
def pad_into(x, n, xp, ph, pw, Hp, Wp):
    """Copy image n into the interior of the flat padded buffer xp (borders stay as they are)."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for c in range(C):
        for h in range(H):
            src = x[n, c, h]
            base = uintp(c * Hp * Wp + (h + ph) * Wp + pw)
            for w in range(uintp(W)):
                xp[base + w] = src[w]


# -- forward -------------------------------------------------------------------------------

def forward(x, Wm, b, kh, kw, ph, pw, OH, OW, relu, pool, taps):
    """As conv_gemm.forward, for stride 1."""
    N, C, H, W = x.shape
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    offsets = tap_offsets(C, kh, kw, Hp * Wp, Wp, 1, 0)
    P = (OH // 2) * (OW // 2) if pool else OH * OW
    y = np.empty((N, F, P), dtype=x.dtype)
    argmax = np.empty((N, F, P) if taps else (0, 0, 0), dtype=np.int8)
    in_parallel(_forward_share, threads_for(N), x, Wm, b, y, argmax, offsets, ph, pw, OH, OW, relu, pool, taps)
    return y, argmax


@njit(**JIT)
def _forward_share(t, nchunks, x, Wm, b, y, argmax, offsets, ph, pw, OH, OW, relu, pool, taps):
    """Share t of forward: its run of images, into y and argmax."""
    N, C, H, W = x.shape
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    L = (OH - 1) * Wp + OW                                  # wide outputs per plane
    PH, PW = (OH // 2, OW // 2) if pool else (OH, OW)
    xp = np.zeros(C * Hp * Wp, dtype=x.dtype)              # the padding stays zero
    acc = np.empty(OH * Wp, dtype=x.dtype)                  # (the last Wp - OW are not used)
    n0, n1 = share_range(t, nchunks, N)
    for n in range(n0, n1):
        pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f in range(F):
            acc[:] = b[f]
            _shifted_sum(acc, xp, Wm[f], offsets, L)
            dst = y[n, f]
            if taps:
                relu_maxpool2(acc.reshape(OH, Wp), acc[0] * 0, dst.reshape(PH, PW), argmax[n, f].reshape(PH, PW))
                continue
            if pool:
                relu_maxpool2_values(acc.reshape(OH, Wp), acc[0] * 0, dst.reshape(PH, PW))
                continue
            for oh in range(OH):                            # drop the extra columns
                src, out = uintp(oh * Wp), uintp(oh * OW)
                if relu:
                    for ow in range(uintp(OW)):
                        dst[out + ow] = max(acc[src + ow], 0)
                else:
                    for ow in range(uintp(OW)):
                        dst[out + ow] = acc[src + ow]


# -- backward ------------------------------------------------------------------------------

def backward(x, dy, y, argmax, Wm, kh, kw, ph, pw, OH, OW, need_dx, relu, pool):
    """As conv_gemm.backward, for stride 1."""
    N, C, H, W = x.shape
    F, K = Wm.shape
    Hp, Wp = H + 2 * ph, W + 2 * pw
    S = Hp * Wp
    M = (kh - 1) * Wp + kw - 1                              # zeros in front of each dy row
    offsets = tap_offsets(C, kh, kw, S, Wp, 1, 0)          # input position of tap, forward
    back = tap_offsets(1, kh, kw, S, Wp, -1, M)            # dy position of tap, for dx
    nchunks = threads_for(N)
    dx = np.empty((N, C, H, W) if need_dx else (0, C, H, W), dtype=x.dtype)
    dW_parts = np.zeros((nchunks, F, K), dtype=x.dtype)
    db_parts = np.zeros((nchunks, F), dtype=np.float64)
    in_parallel(_backward_share, nchunks, x, dy, y, argmax, Wm, dx, dW_parts, db_parts, offsets, back, kh, kw,
                ph, pw, OH, OW, need_dx, relu, pool)
    dW, db = add_thread_parts(dW_parts, db_parts)
    return dx, dW, db


@njit(**JIT)
def _backward_share(t, nchunks, x, dy, y, argmax, Wm, dx, dW_parts, db_parts, offsets, back, kh, kw, ph, pw,
                    OH, OW, need_dx, relu, pool):
    """Share t of backward: its run of images; their dx, and their sums added into
    dW_parts[t] (F, K) and db_parts[t] (F,)."""
    N, C, H, W = x.shape
    F = Wm.shape[0]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    S, L = Hp * Wp, (OH - 1) * Wp + OW
    M = (kh - 1) * Wp + kw - 1
    PH, PW = OH // 2, OW // 2
    dW, db = dW_parts[t], db_parts[t]
    xp = np.zeros(C * S, dtype=x.dtype)
    dyw = np.zeros((F, M + S), dtype=x.dtype)              # wide dy; extra columns stay zero
    dxp = np.empty(C * S if need_dx else 0, dtype=x.dtype)
    n0, n1 = share_range(t, nchunks, N)
    for n in range(n0, n1):
        pad_into(x, n, xp, ph, pw, Hp, Wp)
        for f in range(F):
            row = dyw[f, M:M + L]
            src, out = dy[n, f], y[n, f]
            if pool:                                        # dy is the pooled output's gradient
                row[:] = 0
                unpool_relu_grad(src.reshape(PH, PW), out.reshape(PH, PW), argmax[n, f].reshape(PH, PW),
                                 dyw[f, M:M + OH * Wp].reshape(OH, Wp))
            else:
                for oh in range(OH):                        # dy (ReLU's derivative applied)
                    i, o = uintp(oh * OW), uintp(oh * Wp)
                    for ow in range(uintp(OW)):
                        row[o + ow] = src[i + ow] if not relu or out[i + ow] > 0 else src[i + ow] * 0
            db[f] += vector_sum(row)
            _shifted_dots(row, xp, offsets, L, dW[f])
        if need_dx:
            dxp[:] = 0
            for c in range(C):
                plane = dxp[c * S:(c + 1) * S]
                for f in range(F):
                    _shifted_sum(plane, dyw[f], Wm[f, c * kh * kw:(c + 1) * kh * kw], back, S)
            for c in range(C):                              # crop the padding
                for h in range(H):
                    dst, base = dx[n, c, h], uintp(c * S + (h + ph) * Wp + pw)
                    for w in range(uintp(W)):
                        dst[w] = dxp[base + w]
