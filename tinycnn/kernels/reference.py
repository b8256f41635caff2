"""Reference kernels in plain NumPy: the version to read next to the maths.

The middle one of three tiers of the same functions (same names, signatures and results):

    loops.py       nested loops straight from each formula (backend "loops")
    reference.py   here: the loops vectorised with NumPy (backend "numpy")
    fast/          the same in Numba, laid out for speed (backend "numba", the default)

tests/test_kernels.py holds this tier and fast/ equal on many random shapes;
tests/test_loops.py holds all three equal. im2col and col2im exist only here and in fast/conv_gemm.py.

Notation used throughout:
    x   (N, C, H, W)     input batch, NCHW
    W   (F, C, kh, kw)   convolution filters
    y   (N, F, OH, OW)   output, OH = (H + 2*ph - kh) // sh + 1 (likewise OW)
    P = OH * OW          output pixels per image

im2col layout: cols has shape (C*kh*kw, N*OH*OW). Row r = (c, i, j) holds, for every output
pixel of every image, the input value that kernel tap (c, i, j) sees there. A convolution
is then one matrix product: W reshaped to (F, C*kh*kw) times cols gives (F, N*OH*OW).
This "taps x pixels" layout (rather than pixels x taps) is the one whose rows are filled
with long contiguous runs, which measured 4-8x faster to build on these machines.
"""
import numpy as np


def conv_output_size(size, kernel, stride, padding):
    """Output length along one axis: windows that do not fit are dropped (floor)."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kh, kw, sh, sw, ph, pw):
    """x (N, C, H, W) -> cols (C*kh*kw, N*OH*OW), zero padding included."""
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((C, kh, kw, N, OH, OW), dtype=x.dtype)
    # One strided slice per kernel tap (i, j): the pixels that tap touches, for every
    # output position at once. kh*kw slices instead of N*OH*OW windows.
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]   # (N, C, OH, OW)
            cols[:, i, j] = window.transpose(1, 0, 2, 3)            # (C, N, OH, OW)
    return cols.reshape(C * kh * kw, N * OH * OW)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    """The adjoint of im2col: cols (C*kh*kw, N*OH*OW) -> dx (N, C, H, W).

    Where windows overlap, an input pixel appears in several columns; its gradient is the
    sum of all of them, so slices are added (+=), never assigned.
    """
    N, C, H, W = x_shape
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(W, kw, sw, pw)
    cols = cols.reshape(C, kh, kw, N, OH, OW)
    dxp = np.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw] += cols[:, i, j].transpose(1, 0, 2, 3)
    return dxp[:, :, ph:ph + H, pw:pw + W]


def conv2d_forward(x, W, b, stride, padding, relu=False):
    """y = W * x + b (cross-correlation, as every framework does); relu=True returns
    max(y, 0) instead, a convolution with its ReLU built in.

    Returns y (N, F, OH, OW) and the cache the backward pass needs: here the columns, and
    with relu the output y itself (its positive entries are where the ReLU let dy through).
    """
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    OH = conv_output_size(H, kh, sh, ph)
    OW = conv_output_size(Wd, kw, sw, pw)
    cols = im2col(x, kh, kw, sh, sw, ph, pw)          # (C*kh*kw, N*P)
    out = W.reshape(F, -1) @ cols                     # (F, N*P)
    if b is not None:
        out += b[:, None]
    y = np.ascontiguousarray(out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3))  # (N, F, OH, OW)
    if relu:
        np.maximum(y, 0, out=y)
    return y, (cols, y if relu else None)


def conv2d_backward(dy, cache, x_shape, W, stride, padding, need_dx=True):
    """Gradients of y = W_mat @ cols + b.

        dW_mat = dY_mat @ cols.T      (F, C*kh*kw)
        dcols  = W_mat.T @ dY_mat     (C*kh*kw, N*P), folded back to dx by col2im
        db     = dy summed over batch and pixels
    where dY_mat is dy laid out like the forward's output, (F, N*P). With the built-in ReLU,
    dy first goes through the ReLU's derivative: zero where y = max(conv, 0) is zero.
    cache is what conv2d_forward returned. Returns (dx or None, dW, db).
    """
    cols, y = cache
    if y is not None:
        dy = dy * (y > 0)
    F, C, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    db = dy.sum(axis=(0, 2, 3))
    dy_mat = dy.transpose(1, 0, 2, 3).reshape(F, -1)  # (F, N*P)
    dW = (dy_mat @ cols.T).reshape(W.shape)
    dx = None
    if need_dx:
        dcols = W.reshape(F, -1).T @ dy_mat           # (C*kh*kw, N*P)
        dx = col2im(dcols, x_shape, kh, kw, sh, sw, ph, pw)
    return dx, dW, db


def conv2d_relu_maxpool2_forward(x, W, b, stride, padding, need_argmax=True):
    """Convolution, ReLU and 2x2 / stride 2 max pooling as one call: here, literally the
    three in turn (the fast kernels fuse them; see tinycnn/layers/fused.py for why).
    Returns the pooled output (N, F, OH // 2, OW // 2) and the cache for the backward pass
    (None with need_argmax=False: inference has no backward pass)."""
    return conv_then_pool_forward(conv2d_forward, maxpool2d_forward, x, W, b, stride, padding, need_argmax)


def conv2d_relu_maxpool2_backward(dpooled, cache, x_shape, W, stride, padding, need_dx=True):
    """The pooling's backward pass, then the convolution's (with its ReLU). Returns (dx, dW, db)."""
    return conv_then_pool_backward(conv2d_backward, maxpool2d_backward, dpooled, cache, x_shape, W,
                                   stride, padding, need_dx)


def conv_then_pool_forward(conv_forward, pool_forward, x, W, b, stride, padding, need_argmax):
    """A ReLU convolution and a 2x2 / stride 2 max pooling run in turn, with one tier's
    kernels (this module's, or loops.py's): its cache holds both passes' caches."""
    y, conv_cache = conv_forward(x, W, b, stride, padding, relu=True)
    pooled, argmax = pool_forward(y, 2, 2, 2, 2, need_argmax)
    return pooled, ((conv_cache, argmax, y.shape) if need_argmax else None)


def conv_then_pool_backward(conv_backward, pool_backward, dpooled, cache, x_shape, W, stride, padding, need_dx):
    """conv_then_pool_forward's backward: the pooling's pass, then the convolution's."""
    conv_cache, argmax, y_shape = cache
    dy = pool_backward(dpooled, argmax, y_shape, 2, 2, 2, 2)
    return conv_backward(dy, conv_cache, x_shape, W, stride, padding, need_dx)


def _pool_windows(x, kh, kw, sh, sw):
    """Yield (tap index k, i, j, view) for each kernel tap: view (N, C, OH, OW) is the input
    pixel that tap (i, j) sees in every pooling window."""
    N, C, H, W = x.shape
    OH = conv_output_size(H, kh, sh, 0)
    OW = conv_output_size(W, kw, sw, 0)
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, i, j, x[:, :, i:i + sh * OH:sh, j:j + sw * OW:sw]


def maxpool2d_forward(x, kh, kw, sh, sw, need_argmax=True):
    """y[n, c, a, b] = max of the window at (a*sh, b*sw).

    Returns y and argmax (N, C, OH, OW) int32: the tap i*kw + j of each window's maximum
    (None when need_argmax is False: inference has no backward pass to route).
    On ties the first tap in row-major order wins, so the gradient goes to one element.
    """
    taps = np.stack([view for _, _, _, view in _pool_windows(x, kh, kw, sh, sw)])  # (kh*kw, N, C, OH, OW)
    y = taps.max(axis=0)
    return y, (taps.argmax(axis=0).astype(np.int32) if need_argmax else None)


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    """dx is zero except at each window's arg-max, which receives dy of that window
    (summed where overlapping windows share a maximum)."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    for k, i, j, view in _pool_windows(dx, kh, kw, sh, sw):
        view += np.where(argmax == k, dy, 0)   # view is a slice of dx: writes go through
    return dx


def avgpool2d_forward(x, kh, kw, sh, sw):
    """y[n, c, a, b] = mean of the window at (a*sh, b*sw)."""
    y = None
    for _, _, _, view in _pool_windows(x, kh, kw, sh, sw):
        y = view.copy() if y is None else y + view
    return y / np.asarray(kh * kw, dtype=x.dtype)


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    """Each input pixel of a window receives dy / (kh*kw) of that window."""
    dx = np.zeros(x_shape, dtype=dy.dtype)
    share = dy / np.asarray(kh * kw, dtype=dy.dtype)
    for _, _, _, view in _pool_windows(dx, kh, kw, sh, sw):
        view += share
    return dx


def relu_forward(x):
    """y = max(x, 0); returns y and the mask x > 0 that the backward pass needs."""
    return np.maximum(x, 0), x > 0


def relu_backward(dy, mask):
    """dx = dy where x > 0, else 0."""
    return dy * mask


# -- Batch normalisation ------------------------------------------------------------------
# The layer views its input as x (N, C, M): C channels, each normalised over its N*M values
# (M = H*W for convolution maps, M = 1 for dense features). Vectors are per channel, (C,).

def batchnorm_stats(x):
    """Per-channel mean and biased variance of x (N, C, M)."""
    return x.mean(axis=(0, 2)), x.var(axis=(0, 2))


def batchnorm_forward(x, gamma, beta, mean, inv_std):
    """xhat = (x - mean) * inv_std;  y = gamma * xhat + beta.  Returns y and xhat."""
    xhat = (x - mean[:, None]) * inv_std[:, None]
    return gamma[:, None] * xhat + beta[:, None], xhat


def batchnorm_backward(dy, xhat, gamma, inv_std, training):
    """Returns dx, dgamma, dbeta for dy (N, C, M).

    dbeta = sum(dy), dgamma = sum(dy * xhat), dxhat = dy * gamma. In eval mode mean and
    inv_std are constants: dx = dxhat * inv_std. In training they depend on x too, and the
    paths through them add two terms (m = N*M values per channel):
        dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) * inv_std
    Since mean(dxhat) = gamma * dbeta / m and mean(dxhat * xhat) = gamma * dgamma / m,
    that is  dx = gamma * inv_std * (dy - dbeta / m - xhat * dgamma / m).
    """
    dbeta = dy.sum(axis=(0, 2))
    dgamma = (dy * xhat).sum(axis=(0, 2))
    scale = (gamma * inv_std)[:, None]
    if not training:
        return dy * scale, dgamma, dbeta
    m = dy.shape[0] * dy.shape[2]
    dx = scale * (dy - (dbeta / m)[:, None] - xhat * (dgamma / m)[:, None])
    return dx, dgamma, dbeta
