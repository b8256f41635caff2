"""The convolution layers' fast kernels: each call picks the faster method for its shape:
Winograd F(2x2, 3x3) for 3x3, stride-1 layers with many input channels (conv_winograd.py),
else, forward, the direct method (conv_direct.py: stride 1, fewest weights), the
register-blocked direct method (conv_blocked.py: stride 1, at least one block of 16
channels and of 4 columns, or 8 with AVX-512, at most 4/3 of either computed) or im2col +
GEMM (conv_gemm.py); backward, direct or GEMM. (On AVX2, a Winograd layer whose channels
and columns are whole blocks runs forward blocked: BLOCKED_BEFORE_WINOGRAD.) The forward
and the backward pass need not agree: the GEMM backward rebuilds its columns from x anyway.
The ReLU, and a following 2x2 max pooling, are applied as each output plane is written
(epilogue.py).
All methods keep the same cache, so either pass may run by any of them."""

import numpy as np

from ...environment import flag
from ..reference import conv_output_size
from ..winograd import applies as winograd_applies
from . import conv_blocked, conv_direct, conv_gemm, conv_winograd

# Winograd for 3x3, stride-1 layers with at least this many input channels (it lost to the
# direct method on a first layer, 1 -> 32 channels: benchmarks/bench_winograd.py).
# TINYCNN_WINOGRAD=0 turns it off.
WINOGRAD_MIN_C = 32
WINOGRAD = flag("TINYCNN_WINOGRAD")
# The register-blocked forward pass where it applies; TINYCNN_BLOCKED=0 turns it off (GEMM).
BLOCKED = flag("TINYCNN_BLOCKED")


# With 256-bit vectors (AVX2), a Winograd layer whose output channels and columns are whole
# blocks of the register-blocked method (none overlapping) runs its forward pass by that
# method, and its backward by Winograd's (either pass may run by any method: they keep the
# same cache). bnnet's third
# layer (64 -> 64 channels, 10x10 inputs, batch 128, two threads, session 17, AMD EPYC Zen 4):
# forward 4.27 ms blocked against 6.22 by Winograd; backward 9.73 by Winograd against 10.46
# by GEMM. Where the last block of columns would overlap the one before, the two forwards
# were level (bnnet's second layer, 10 columns: 4.41 / 4.02 ms; the convnet's, 11: 5.14 /
# 5.05), and Winograd keeps them. With 512-bit vectors Winograd keeps every layer it takes:
# there bnnet's first layer is on the GEMM, so the blocked method would be one more kernel
# for its first run to compile (its first training step: 7.3 against 4.7 s, session 16).
BLOCKED_BEFORE_WINOGRAD = not conv_blocked.WIDE


def uses_winograd(x_shape, W, stride):
    """Whether a layer is Winograd's (its backward pass; its forward: forward_uses_winograd)."""
    return WINOGRAD and winograd_applies(W.shape, stride) and x_shape[1] >= WINOGRAD_MIN_C


def forward_uses_winograd(x_shape, W, stride, padding):
    """Whether the forward pass runs by Winograd: a Winograd layer's does, unless on AVX2 its
    channels and columns are whole blocks of the blocked method (BLOCKED_BEFORE_WINOGRAD)."""
    if not uses_winograd(x_shape, W, stride):
        return False
    N, C, F, kh, kw, sh, sw, ph, pw, OH, OW = _conv_shapes(x_shape, W, stride, padding)
    return not (BLOCKED_BEFORE_WINOGRAD and conv_blocked.whole_blocks(F, OW)
                and forward_method(C, F, kh, kw, OW, stride) == "blocked")


def _conv_shapes(x_shape, W, stride, padding):
    N, C, H, Wd = x_shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    return N, C, F, kh, kw, sh, sw, ph, pw, conv_output_size(H, kh, sh, ph), conv_output_size(Wd, kw, sw, pw)


def forward_method(C, F, kh, kw, OW, stride):
    """The method of a forward pass that Winograd does not take: "direct" for the fewest
    weights, else "blocked" where it applies, else "gemm" (conv_direct.py and
    conv_blocked.py have the measurements behind the choice)."""
    if conv_direct.use_direct(C, F, kh, kw, stride, conv_direct.FORWARD_MAX_WEIGHTS):
        return "direct"
    if BLOCKED and conv_blocked.applies(F, OW, stride) and C * kh * kw >= conv_blocked.MIN_TAPS:
        return "blocked"
    return "gemm"


def _forward(x, W, b, stride, padding, relu, pool, taps=False):
    """The convolution by the faster method for its shape: y (N, F, P) and, with pool and
    taps, each pooling window's tap of its maximum."""
    N, C, F, kh, kw, sh, sw, ph, pw, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    bias = b if b is not None else np.zeros(F, dtype=x.dtype)
    method = forward_method(C, F, kh, kw, OW, stride)
    if method == "direct":
        return conv_direct.forward(x, Wm, bias, kh, kw, ph, pw, OH, OW, relu, pool, pool and taps)
    if method == "blocked":
        return conv_blocked.forward(x, Wm, bias, kh, kw, ph, pw, OH, OW, relu, pool, pool and taps)
    return conv_gemm.forward(x, Wm, bias, kh, kw, sh, sw, ph, pw, OH, OW, relu, pool, pool and taps)


def _backward(dy, x, y, argmax, W, stride, padding, need_dx, relu, pool):
    N, C, F, kh, kw, sh, sw, ph, pw, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    expected = (N, F, OH // 2, OW // 2) if pool else (N, F, OH, OW)
    if dy.shape != expected:
        raise ValueError(f"conv2d backward: dy has shape {dy.shape}, the forward pass gave {expected}")
    Wm = np.ascontiguousarray(W.reshape(F, -1))
    dy = np.ascontiguousarray(dy).reshape(N, F, -1)
    y = y.reshape(N, F, -1) if y is not None else dy          # (read only with relu)
    argmax = np.empty((0, 0, 0), dtype=np.int8) if argmax is None else argmax.reshape(N, F, -1)
    if conv_direct.use_direct(C, F, kh, kw, stride, conv_direct.BACKWARD_MAX_WEIGHTS):
        dx, dW, db = conv_direct.backward(x, dy, y, argmax, Wm, kh, kw, ph, pw, OH, OW, need_dx, relu, pool)
    else:
        dx, dW, db = conv_gemm.backward(x, dy, y, argmax, Wm, kh, kw, sh, sw, ph, pw, OH, OW, need_dx, relu, pool)
    return (dx if need_dx else None), dW.reshape(W.shape), db


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """Returns y and, as the cache, x itself (the backward pass rebuilds what it needs from
    it) and, with relu, y. The ReLU is applied as the output is written and its derivative
    as dy is read: no separate passes over the activations, no mask array."""
    x = np.ascontiguousarray(x)
    if forward_uses_winograd(x.shape, W, stride, padding):
        return conv_winograd.conv2d_forward(x, W, b, stride, padding, relu)
    y, _ = _forward(x, W, b, stride, padding, relu, False)
    y = y.reshape(x.shape[0], W.shape[0], *_conv_shapes(x.shape, W, stride, padding)[-2:])
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    x, y = cache
    if uses_winograd(x.shape, W, stride):
        return conv_winograd.conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx)
    return _backward(dy, x, y, None, W, stride, padding, need_dx, y is not None, False)


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """The pooled output and, as the cache, x, the pooled output and each window's tap (int8);
    need_argmax=False (inference) records no taps and returns no cache.
    The convolution's full output is never written: each plane is pooled from the block's
    GEMM result (or the direct method's accumulator, or Winograd's output tile) while it is
    still in cache."""
    x = np.ascontiguousarray(x)
    if forward_uses_winograd(x.shape, W, stride, padding):
        return conv_winograd.conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax)
    pooled, argmax = _forward(x, W, b, stride, padding, True, True, need_argmax)
    _, _, F, _, _, _, _, _, _, OH, OW = _conv_shapes(x.shape, W, stride, padding)
    pooled = pooled.reshape(x.shape[0], F, OH // 2, OW // 2)
    # (the taps in pooled's shape, as Winograd's forward gives them: either backward can read them)
    return pooled, ((x, pooled, argmax.reshape(pooled.shape)) if need_argmax else None)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    x, pooled, argmax = cache
    if uses_winograd(x.shape, W, stride):
        return conv_winograd.conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx)
    return _backward(dpooled, x, pooled, argmax, W, stride, padding, need_dx, True, True)
