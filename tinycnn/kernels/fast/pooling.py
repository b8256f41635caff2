"""Max and average pooling. Each thread's share is a run of the N*C planes; max pooling
finds the maximum and remembers its tap in one pass."""
import numpy as np
from numba import njit, uintp

from ..reference import conv_output_size
from .parallel import JIT, in_parallel, share_range, threads_for


def maxpool2d_forward(x, kh, kw, sh, sw, need_argmax=True):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW) if need_argmax else (0, 0, 0, 0), dtype=np.int32)
    in_parallel(_maxpool_forward_share, threads_for(N * C), np.ascontiguousarray(x), y, argmax, kh, kw, sh, sw,
                need_argmax)
    return y, (argmax if need_argmax else None)


@njit(**JIT)
def _maxpool_forward_share(t, nchunks, x, y, argmax, kh, kw, sh, sw, need_argmax):
    C = x.shape[1]
    OH, OW = y.shape[2], y.shape[3]
    # The common 2x2 window with stride 2 gets its own loop: the four taps are named, so
    # the compiler keeps everything in registers (measured 2-2.5x faster than the general
    # loop with argmax, and twice that again without it, as in eval mode).
    two_by_two = kh == 2 and kw == 2 and sh == 2 and sw == 2
    nc0, nc1 = share_range(t, nchunks, x.shape[0] * C)
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


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    N, C = dy.shape[0], dy.shape[1]
    dx = np.empty((N, C, x_shape[2], x_shape[3]), dtype=dy.dtype)
    in_parallel(_maxpool_backward_share, threads_for(N * C), np.ascontiguousarray(dy), argmax, dx, kh, kw, sh, sw)
    return dx


@njit(**JIT)
def _maxpool_backward_share(t, nchunks, dy, argmax, dx, kh, kw, sh, sw):
    C, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    # Each share zeroes the planes it then scatters into (one pass over memory, not a
    # separate np.zeros of the whole batch first).
    nc0, nc1 = share_range(t, nchunks, dy.shape[0] * C)
    for nc in range(nc0, nc1):
        n, c = uintp(nc // C), uintp(nc % C)
        grad, arg, plane = dy[n, c], argmax[n, c], dx[n, c]
        plane[:] = 0
        for a in range(uintp(OH)):
            for b in range(uintp(OW)):
                tap = uintp(arg[a, b])
                plane[a * uintp(sh) + tap // uintp(kw), b * uintp(sw) + tap % uintp(kw)] += grad[a, b]


def avgpool2d_forward(x, kh, kw, sh, sw):
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    y = np.empty((N, C, OH, OW), dtype=x.dtype)
    in_parallel(_avgpool_forward_share, threads_for(N * C), np.ascontiguousarray(x), y, kh, kw, sh, sw)
    return y


@njit(**JIT)
def _avgpool_forward_share(t, nchunks, x, y, kh, kw, sh, sw):
    C, OH, OW = x.shape[1], y.shape[2], y.shape[3]
    nc0, nc1 = share_range(t, nchunks, x.shape[0] * C)
    for nc in range(nc0, nc1):
        n, c = nc // C, nc % C
        for a in range(OH):
            for b in range(OW):
                acc = 0.0
                for i in range(kh):
                    for j in range(kw):
                        acc += x[n, c, a * sh + i, b * sw + j]
                y[n, c, a, b] = acc / (kh * kw)


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    N, C = dy.shape[0], dy.shape[1]
    dx = np.empty((N, C, x_shape[2], x_shape[3]), dtype=dy.dtype)
    in_parallel(_avgpool_backward_share, threads_for(N * C), np.ascontiguousarray(dy), dx, kh, kw, sh, sw)
    return dx


@njit(**JIT)
def _avgpool_backward_share(t, nchunks, dy, dx, kh, kw, sh, sw):
    C, OH, OW = dy.shape[1], dy.shape[2], dy.shape[3]
    nc0, nc1 = share_range(t, nchunks, dy.shape[0] * C)
    for nc in range(nc0, nc1):
        n, c = nc // C, nc % C
        dx[n, c] = 0
        for a in range(OH):
            for b in range(OW):
                share = dy[n, c, a, b] / (kh * kw)
                for i in range(kh):
                    for j in range(kw):
                        dx[n, c, a * sh + i, b * sw + j] += share
