"""Loop-level kernels: every pass written straight from its definition, one line per term.

The first of three tiers of the same functions (same names, signatures and caches):

    loops.py       here: nested Python loops over the indices of the formula
    reference.py   the same results vectorised in NumPy (im2col, strided views)
    fast/          the same results in Numba, laid out for speed

tests/test_loops.py holds the three equal and checks each function here against finite
differences. Select this tier with `tinycnn.set_backend("loops")` (or TINYCNN_BACKEND=loops)
to run a whole model on it, e.g. to step through a backward pass in a debugger.

It is slow on purpose, but a small model runs on it in seconds. One training-mode forward
and backward pass on 4 random 28x28 images took, in CPU time, 0.3 s for lenet5, 0.8 s for
fastnet and 1.5 s for convnet (wall time 2-4x that: the 2-core machine was shared with
other jobs); the reference kernels take a few milliseconds. Measured with

    tinycnn.set_backend("loops"); m = tinycnn.models.convnet(seed=0)
    y = m.forward(x, training=True); m.backward(np.ones_like(y))

Use it on a handful of small images, not for training.

Notation (as in docs/ and the layers' docstrings):
    x   (N, C, H, W)   input;  xpad: x with ph zero rows above and below, pw columns each side
    W   (F, C, kh, kw) filters;  bias (F,) (the argument `b`)
    y   (N, F, OH, OW) output;  (a, b) an output position, (i, j) a kernel tap
    Convolution:  y[n, f, a, b] = bias[f] + sum_{c,i,j} W[f, c, i, j] * xpad[n, c, a*sh + i, b*sw + j]
Where a window's sum over (c, i, j) is one line, it is written as np.sum over the window
(the (C, kh, kw) block of xpad that output (a, b) sees) rather than three more loops: the
line says the same thing, and keeps a small model's pass to seconds.

There is no im2col or col2im here: they are how reference.py turns these loops into one
matrix product, and a loop over the output positions needs neither.
"""
import numpy as np

from .reference import conv_output_size, conv_then_pool_backward, conv_then_pool_forward

__all__ = ["conv_output_size", "conv2d_forward", "conv2d_backward", "conv2d_relu_maxpool2_forward",
           "conv2d_relu_maxpool2_backward", "maxpool2d_forward", "maxpool2d_backward",
           "avgpool2d_forward", "avgpool2d_backward", "relu_forward", "relu_backward",
           "batchnorm_stats", "batchnorm_forward", "batchnorm_backward"]


# -- convolution --------------------------------------------------------------------------

def _pad(x, ph, pw):
    """x (N, C, H, W) -> xpad (N, C, H + 2*ph, W + 2*pw), zeros around each image."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """y[n, f, a, b] = bias[f] + sum over the window of W[f] * xpad; relu=True: max(that, 0).

    x (N, C, H, W), W (F, C, kh, kw), b (F,) or None -> y (N, F, OH, OW).
    caches: x, and with relu the output y (its positive entries are where the ReLU let
    the gradient through).
    """
    bias = b                  # (every tier calls it b; below, b is an output column, as in docs/)
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(Wd, kw, sw, pw)
    xpad = _pad(x, ph, pw)
    y = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n, f, a, b in np.ndindex(N, F, OH, OW):                  # every output element
        window = xpad[n, :, a * sh:a * sh + kh, b * sw:b * sw + kw]   # (C, kh, kw)
        y[n, f, a, b] = np.sum(W[f] * window)
        if bias is not None:
            y[n, f, a, b] += bias[f]
        if relu:
            y[n, f, a, b] = max(y[n, f, a, b], 0)
    return y, (x, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    """The chain rule, one output element at a time: y[n, f, a, b] depends on bias[f] with
    weight 1, on W[f, c, i, j] with weight xpad[n, c, a*sh + i, b*sw + j] and on that xpad
    element with weight W[f, c, i, j]. So each dy[n, f, a, b] adds itself to db[f], itself
    times the window to dW[f], and itself times W[f] to the window of dxpad.

    dy (N, F, OH, OW); cache is what conv2d_forward returned. Returns (dx or None, dW, db).
    """
    x, y = cache
    if y is not None:
        dy = dy * (y > 0)             # the built-in ReLU: no gradient where it output 0
    N, F, OH, OW = dy.shape
    _, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    xpad = _pad(x, ph, pw)
    dxpad = np.zeros_like(xpad)
    dW = np.zeros_like(W)
    db = np.zeros(F, dtype=dy.dtype)
    for n, f, a, b in np.ndindex(N, F, OH, OW):                  # every output element
        rows, cols = slice(a * sh, a * sh + kh), slice(b * sw, b * sw + kw)
        g = dy[n, f, a, b]
        db[f] += g                                    # ∂y/∂bias[f] = 1
        dW[f] += g * xpad[n, :, rows, cols]           # ∂y/∂W[f] = the window
        dxpad[n, :, rows, cols] += g * W[f]           # ∂y/∂window = W[f]
    dx = dxpad[:, :, ph:ph + x_shape[2], pw:pw + x_shape[3]]          # padding is not part of x
    return (dx if need_dx else None), dW, db


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """Convolution with ReLU, then 2x2 / stride 2 max pooling: this tier's two passes in
    turn. Returns the pooled output and the cache (None without need_argmax)."""
    return conv_then_pool_forward(conv2d_forward, maxpool2d_forward, x, W, b, stride, padding, need_argmax)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    """The pooling's backward pass, then the convolution's. Returns (dx, dW, db)."""
    return conv_then_pool_backward(conv2d_backward, maxpool2d_backward, dpooled, cache, x_shape, W,
                                   stride, padding, need_dx)


# -- pooling ------------------------------------------------------------------------------
# Window (a, b) covers x[n, c, a*sh : a*sh + kh, b*sw : b*sw + kw]; windows that do not fit
# are dropped. Tap (i, j) of a window is numbered i*kw + j (row-major), as in the other tiers.

def maxpool2d_forward(x, kh, kw, sh, sw, need_argmax=True):
    """y[n, c, a, b] = the largest value in window (a, b).

    Returns y (N, C, OH, OW) and argmax (N, C, OH, OW) int32, the tap of each maximum (None
    without need_argmax). On ties the first tap in row-major order wins: only a strictly
    larger value replaces the current best.
    """
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    argmax = np.zeros((N, C, OH, OW), dtype=np.int32)
    for n, c, a, b in np.ndindex(N, C, OH, OW):                  # every window
        best, best_tap = x[n, c, a * sh, b * sw], 0                   # tap (0, 0)
        for i, j in np.ndindex(kh, kw):                               # its taps, row by row
            value = x[n, c, a * sh + i, b * sw + j]
            if value > best:                                          # strictly: ties keep the first
                best, best_tap = value, i * kw + j
        y[n, c, a, b] = best
        argmax[n, c, a, b] = best_tap
    return y, (argmax if need_argmax else None)


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    """y is the window's value at its arg-max tap, so ∂y/∂x is 1 there and 0 at the other
    taps: each dy[n, c, a, b] goes to that one input (added, where windows overlap)."""
    N, C, OH, OW = dy.shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for n, c, a, b in np.ndindex(N, C, OH, OW):
        i, j = divmod(int(argmax[n, c, a, b]), kw)                    # tap -> (row, column)
        dx[n, c, a * sh + i, b * sw + j] += dy[n, c, a, b]
    return dx


def avgpool2d_forward(x, kh, kw, sh, sw):
    """y[n, c, a, b] = sum of window (a, b) / (kh*kw)."""
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, 0), conv_output_size(W, kw, sw, 0)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for n, c, a, b in np.ndindex(N, C, OH, OW):
        y[n, c, a, b] = np.sum(x[n, c, a * sh:a * sh + kh, b * sw:b * sw + kw]) / (kh * kw)
    return y


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    """Every input of window (a, b) has weight 1/(kh*kw) in y[n, c, a, b], so each receives
    dy[n, c, a, b] / (kh*kw) (added, where windows overlap)."""
    N, C, OH, OW = dy.shape
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for n, c, a, b in np.ndindex(N, C, OH, OW):
        dx[n, c, a * sh:a * sh + kh, b * sw:b * sw + kw] += dy[n, c, a, b] / (kh * kw)
    return dx


# -- ReLU ---------------------------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0) element by element; returns y and the mask x > 0 (any shape)."""
    y = np.zeros_like(x)
    mask = np.zeros(x.shape, dtype=bool)
    for index in np.ndindex(x.shape):
        mask[index] = x[index] > 0
        y[index] = x[index] if mask[index] else 0
    return y, mask


def relu_backward(dy, mask):
    """∂y/∂x is 1 where x > 0 and 0 elsewhere: dx = dy there, 0 elsewhere."""
    dx = np.zeros_like(dy)
    for index in np.ndindex(dy.shape):
        dx[index] = dy[index] if mask[index] else 0
    return dx


# -- Batch normalisation ------------------------------------------------------------------
# As in the other tiers the layer views its input as x (N, C, M) and normalises each
# channel c over its m = N*M values x[:, c, :]. The forward pass in stages, per channel:
#     mu      = sum(x) / m                   batchnorm_stats
#     xc      = x - mu                       (centred)
#     var     = sum(xc * xc) / m
#     inv_std = 1 / sqrt(var + eps)          the layer (it owns eps and the running stats)
#     xhat    = xc * inv_std                 batchnorm_forward (normalised)
#     y       = gamma * xhat + beta
# batchnorm_backward takes the stages in reverse, one gradient per stage.

def batchnorm_stats(x):
    """Per-channel mean and biased variance of x (N, C, M), each (C,)."""
    N, C, M = x.shape
    m = N * M
    mean = np.zeros(C, dtype=x.dtype)
    var = np.zeros(C, dtype=x.dtype)
    for c in range(C):
        mean[c] = np.sum(x[:, c]) / m
        xc = x[:, c] - mean[c]                        # (N, M) centred
        var[c] = np.sum(xc * xc) / m
    return mean, var


def batchnorm_forward(x, gamma, beta, mean, inv_std):
    """xhat = (x - mean) * inv_std, y = gamma * xhat + beta, per channel. Returns y, xhat."""
    y = np.zeros_like(x)
    xhat = np.zeros_like(x)
    for c in range(x.shape[1]):
        xc = x[:, c] - mean[c]                        # centred
        xhat[:, c] = xc * inv_std[c]                  # normalised
        y[:, c] = gamma[c] * xhat[:, c] + beta[c]     # scaled and shifted
    return y, xhat


def batchnorm_backward(dy, xhat, gamma, inv_std, training):
    """dx, dgamma, dbeta for dy (N, C, M), backpropagating each stage of the forward pass.

    In eval mode mean and inv_std are the running statistics, constants: dx = dxhat * inv_std.
    In training they are functions of x, and the gradient also flows through them.
    The centred values xc are recovered from the cache as xhat / inv_std.
    """
    N, C, M = dy.shape
    m = N * M
    dx = np.zeros_like(dy)
    dgamma = np.zeros(C, dtype=dy.dtype)
    dbeta = np.zeros(C, dtype=dy.dtype)
    for c in range(C):
        s = inv_std[c]
        # y = gamma * xhat + beta
        dbeta[c] = np.sum(dy[:, c])
        dgamma[c] = np.sum(dy[:, c] * xhat[:, c])
        dxhat = dy[:, c] * gamma[c]
        if not training:
            dx[:, c] = dxhat * s                      # xhat = (x - const) * const
            continue
        xc = xhat[:, c] / s
        # xhat = xc * s: through xc directly, and through s (every xhat uses it)
        dxc = dxhat * s
        ds = np.sum(dxhat * xc)
        # s = (var + eps)^(-1/2): ds/dvar = -(var + eps)^(-3/2) / 2 = -s^3 / 2
        dvar = ds * (-s ** 3 / 2)
        # var = sum(xc^2) / m: dvar/dxc = 2 * xc / m
        dxc = dxc + dvar * 2 * xc / m
        # xc = x - mu: to x with +1, to mu with -1 (summed over all m values it touches)
        dmu = -np.sum(dxc)
        # mu = sum(x) / m: dmu/dx = 1 / m for every value
        dx[:, c] = dxc + dmu / m
    return dx, dgamma, dbeta
