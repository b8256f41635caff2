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

Rounding: the transforms add and subtract 4 inputs (B^T d B), up to 9 weights (G g G^T) and
9 products (A^T M A) around the sum over channels, so float32 results round differently from a
direct convolution's, but for this small tile not by more: on the 3x3 layers of the models
here the largest float32 error of y, dx and dW was 2-6e-7 of the largest value, against
1-5e-7 for im2col + GEMM (tests/test_winograd.py measures it and bounds it; larger
tiles such as F(4x4, 3x3) have transform entries up to 8 and are known to lose more: not
measured here).

This file is the NumPy twin: conv2d_forward_numpy / conv2d_backward_numpy, each step of the
formulas above as one array expression, taking and returning what
kernels.reference.conv2d_forward / conv2d_backward do, for 3x3 kernels and stride 1 only
(`applies` says whether a layer qualifies); likewise conv2d_relu_maxpool2_*_numpy for a
ReLU convolution followed by 2x2 max pooling. The fast version, per block of images with
BLAS products, is kernels/fast/conv_winograd.py; it pools each 2x2 output tile (exactly one
pooling window) as it leaves the output transform. tests/test_winograd.py holds the twin
equal to the reference convolution and the fast version equal to the twin.
"""
import numpy as np

from . import reference

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
