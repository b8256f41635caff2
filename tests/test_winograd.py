"""Winograd F(2x2, 3x3): the NumPy twin (tinycnn/kernels/winograd.py) against the reference
convolution, the fast version (tinycnn/kernels/fast/conv_winograd.py) against the twin, gradients against finite differences,
and float32 rounding against a bound."""
import re

import numpy as np
import pytest

from tinycnn.kernels import fast, reference, winograd
from tinycnn.kernels.fast import conv_winograd

# N, C, F, H, W, padding: batch 1-5, odd and even sizes (odd outputs leave partial tiles),
# down to a single output pixel, padding 0-2
CASES = [(1, 1, 1, 3, 3, 0), (2, 3, 4, 7, 9, 1), (3, 4, 2, 8, 5, 0), (4, 2, 3, 5, 6, 2),
         (5, 3, 5, 6, 6, 1), (2, 5, 3, 9, 4, 0), (1, 2, 6, 1, 2, 1), (3, 6, 4, 10, 11, 1)]


def conv_case(case, dtype, seed=0):
    """x, W, b and dy for one case, and the (stride, padding) arguments."""
    N, C, F, H, W, p = case
    rng = np.random.default_rng(seed + sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    OH, OW = H + 2 * p - 2, W + 2 * p - 2
    dy = rng.standard_normal((N, F, OH, OW)).astype(dtype)
    return x, w, b, dy, ((1, 1), (p, p))


def run(forward, backward, x, w, b, dy, args, relu, need_dx=True):
    """y and (dx, dW, db) from one pair of kernels."""
    y, cache = forward(x, w, b, *args, relu=relu)
    return (y,) + tuple(backward(dy, cache, x.shape, w, *args, need_dx=need_dx))


NAMES = ("y", "dx", "dW", "db")
TWIN = (winograd.conv2d_forward_numpy, winograd.conv2d_backward_numpy)
REFERENCE = (reference.conv2d_forward, reference.conv2d_backward)
FAST = (conv_winograd.conv2d_forward, conv_winograd.conv2d_backward)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_twin_equals_reference_in_float64(case, relu):
    x, w, b, dy, args = conv_case(case, np.float64)
    expected = run(*REFERENCE, x, w, b, dy, args, relu)
    got = run(*TWIN, x, w, b, dy, args, relu)
    for name, e, g in zip(NAMES, expected, got):
        assert g.shape == e.shape and g.dtype == np.float64, name
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_fast_equals_twin(case, relu):
    # float64 takes the kernels' np.dot path, float32 NumPy's sgemm: both must agree with
    # the twin (to rounding: the sums run in another order).
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        x, w, b, dy, args = conv_case(case, dtype)
        expected = run(*TWIN, x, w, b, dy, args, relu)
        got = run(*FAST, x, w, b, dy, args, relu)
        for name, e, g in zip(NAMES, expected, got):
            assert g.shape == e.shape and g.dtype == dtype, (name, dtype)
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=f"{name} {dtype.__name__}")
        dx_none, dW_only, db_only = FAST[1](dy, FAST[0](x, w, b, *args, relu=relu)[1], x.shape, w, *args,
                                            need_dx=False)
        assert dx_none is None
        np.testing.assert_array_equal(dW_only, got[2])
        np.testing.assert_array_equal(db_only, got[3])


def test_fast_blocks_and_threads_do_not_change_results(monkeypatch):
    # One image per block (many blocks over the threads) against one block for the batch.
    x, w, b, dy, args = conv_case((5, 3, 4, 7, 8, 1), np.float64)
    monkeypatch.setattr(fast.conv_gemm, "BLOCK_BYTES", 1)
    small = run(*FAST, x, w, b, dy, args, True)
    monkeypatch.setattr(fast.conv_gemm, "BLOCK_BYTES", 1 << 30)
    large = run(*FAST, x, w, b, dy, args, True)
    for name, s, l in zip(NAMES, small, large):
        np.testing.assert_allclose(s, l, rtol=1e-13, atol=1e-13, err_msg=name)


def test_gradients_match_finite_differences():
    # L = sum(y * R): dL/dy = R. Central differences in float64, every element of x, W, b.
    x, w, b, R, args = conv_case((2, 2, 3, 5, 4, 1), np.float64, seed=1)
    loss = lambda x, w, b: float(np.sum(winograd.conv2d_forward_numpy(x, w, b, *args, relu=True)[0] * R))
    _, cache = winograd.conv2d_forward_numpy(x, w, b, *args, relu=True)
    analytic = winograd.conv2d_backward_numpy(R, cache, x.shape, w, *args)
    h = 1e-6
    for k, (name, grad) in enumerate(zip(("dx", "dW", "db"), analytic)):
        inputs = [x, w, b]
        numeric = np.empty_like(grad)
        for i in np.ndindex(grad.shape):
            plus, minus = [a.copy() for a in inputs], [a.copy() for a in inputs]
            plus[k][i] += h
            minus[k][i] -= h
            numeric[i] = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7, err_msg=name)


# float32 rounding. Winograd's transforms add and subtract inputs before multiplying, so
# its float32 results round differently from im2col + GEMM's. Measured on the 3x3 layers of
# convnet and bnnet (post-ReLU inputs, He-scaled weights, batch 4 and 16), the largest error
# of y, dx and dW, relative to the largest value of each, was 2-6e-7 (im2col + GEMM: 1-5e-7):
# F(2x2, 3x3)'s transforms only add, subtract and halve. The bound, 2e-6 (about 16 float32
# steps at the largest value), leaves room for other draws and still catches a transform
# with a wrong sign or entry (errors of order 1).
FLOAT32_BOUND = 2e-6


@pytest.mark.parametrize("C,F,H,p", [(32, 64, 13, 0), (32, 64, 12, 0), (64, 64, 10, 1)])
def test_float32_error_is_bounded(C, F, H, p):
    rng = np.random.default_rng(C + H)
    x = np.maximum(rng.standard_normal((2, C, H, H)), 0)
    w = rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)
    b = 0.1 * rng.standard_normal(F)
    args = ((1, 1), (p, p))
    dy = rng.standard_normal((2, F, H + 2 * p - 2, H + 2 * p - 2))
    truth = run(*REFERENCE, x, w, b, dy, args, False)
    f32 = lambda a: a.astype(np.float32)
    for impl in (TWIN, FAST):
        got = run(*impl, f32(x), f32(w), f32(b), f32(dy), args, False)
        for name, t, g in zip(NAMES, truth, got):
            error = np.abs(g - t).max() / np.abs(t).max()
            assert g.dtype == np.float32 and error < FLOAT32_BOUND, (impl[0].__name__, name, error)


def test_transforms_are_adjoint_pairs():
    # <transform(a), b> = <a, adjoint(b)> for the weight transform and the tile transforms:
    # the backward pass is built from these adjoints.
    rng = np.random.default_rng(3)
    W, dU = rng.standard_normal((3, 2, 3, 3)), rng.standard_normal((16, 3, 2))
    assert np.isclose(np.sum(winograd.transform_weights(W) * dU), np.sum(W * winograd.weight_gradient(dU)))
    x, padding = rng.standard_normal((2, 3, 5, 6)), (1, 0)
    OH, OW, TH, TW = winograd.tiling(x.shape, (4, 3, 3, 3), (1, 1), padding)
    dV = rng.standard_normal((16, 3, 2 * TH * TW))
    assert np.isclose(np.sum(winograd._input_tiles(x, padding, TH, TW) * dV),
                      np.sum(x * winograd._input_tiles_adjoint(dV, x.shape, padding, TH, TW)))
    M, dy = rng.standard_normal((16, 4, 2 * TH * TW)), rng.standard_normal((2, 4, OH, OW))
    assert np.isclose(np.sum(winograd._output_tiles(M, 2, OH, OW, TH, TW) * dy),
                      np.sum(M * winograd._output_tiles_adjoint(dy, TH, TW)))


@pytest.mark.parametrize("w_shape,stride,x_shape,padding,message", [
    ((4, 3, 5, 5), (1, 1), (2, 3, 8, 8), (0, 0), "needs 3x3 filters and stride 1, got filters (4, 3, 5, 5)"),
    ((4, 3, 3, 3), (2, 2), (2, 3, 8, 8), (0, 0), "and stride (2, 2)"),
    ((4, 2, 3, 3), (1, 1), (2, 3, 8, 8), (0, 0), "x has 3 channels, filters (4, 2, 3, 3) expect 2"),
    ((4, 3, 3, 3), (1, 1), (2, 3, 2, 8), (0, 0), "input 2x8 with padding (0, 0) is smaller than the 3x3 kernel"),
])
def test_unsupported_convolutions_are_refused(w_shape, stride, x_shape, padding, message):
    assert winograd.applies(w_shape, stride) == (w_shape[2:] == (3, 3) and stride == (1, 1))
    x, w = np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32)
    for forward in (conv_winograd.conv2d_forward, winograd.conv2d_forward_numpy):
        with pytest.raises(ValueError, match="winograd conv2d: .*" + re.escape(message)):
            forward(x, w, None, stride, padding)


def test_fast_backward_checks_dy_shape():
    x, w, b, dy, args = conv_case((2, 3, 4, 7, 9, 1), np.float32)
    _, cache = conv_winograd.conv2d_forward(x, w, b, *args)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 7, 8\), the forward pass gave \(2, 4, 7, 9\)"):
        conv_winograd.conv2d_backward(dy[..., :-1], cache, x.shape, w, *args)


POOL_CASES = [(1, 1, 2, 4, 4, 0), (2, 3, 4, 7, 9, 1), (3, 2, 3, 8, 5, 0), (5, 4, 3, 6, 7, 1)]


@pytest.mark.parametrize("case", POOL_CASES)
def test_relu_maxpool2_fast_equals_twin_and_reference(case):
    # Convolution + ReLU + 2x2 max pooling: the Numba version pools each tile as it is
    # transformed (one window per tile); the twin runs the reference pooling after the
    # twin convolution; the reference runs its own three steps.
    x, w, b, _, args = conv_case(case, np.float64)
    pooled_ref, cache_ref = reference.conv2d_relu_maxpool2_forward(x, w, b, *args)
    dpooled = np.random.default_rng(5).standard_normal(pooled_ref.shape)
    expected = (pooled_ref,) + reference.conv2d_relu_maxpool2_backward(dpooled, cache_ref, x.shape, w, *args)
    assert pooled_ref.size < 20 or 0.2 < (pooled_ref > 0).mean() < 1     # (the ReLU's gate matters)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):
        cast = lambda a: a.astype(dtype)
        for forward, backward in ((winograd.conv2d_relu_maxpool2_forward_numpy,
                                   winograd.conv2d_relu_maxpool2_backward_numpy),
                                  (conv_winograd.conv2d_relu_maxpool2_forward,
                                   conv_winograd.conv2d_relu_maxpool2_backward)):
            pooled, cache = forward(cast(x), cast(w), cast(b), *args)
            got = (pooled,) + backward(cast(dpooled), cache, x.shape, cast(w), *args)
            for name, e, g in zip(NAMES, expected, got):
                assert g.dtype == dtype, (forward.__name__, name)
                np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=f"{forward.__name__} {name} {dtype}")
            without_taps, no_cache = forward(cast(x), cast(w), cast(b), *args, need_argmax=False)
            np.testing.assert_array_equal(without_taps, pooled)
            assert no_cache is None
            dx_none, dW_only, _ = backward(cast(dpooled), cache, x.shape, cast(w), *args, need_dx=False)
            assert dx_none is None
            np.testing.assert_array_equal(dW_only, got[2])


def test_the_fast_kernels_take_winograd_for_wide_3x3_layers_only(monkeypatch):
    """conv.py sends a 3x3, stride-1 layer with >= WINOGRAD_MIN_C input channels to Winograd
    (same results as the other methods, to float32 rounding), and nothing else."""
    calls = []
    real = conv_winograd.conv2d_forward
    monkeypatch.setattr(conv_winograd, "conv2d_forward", lambda *a, **k: calls.append(a[1].shape) or real(*a, **k))
    rng = np.random.default_rng(2)
    C = fast.conv.WINOGRAD_MIN_C
    x = rng.standard_normal((2, C, 6, 6)).astype(np.float32)
    for w_shape, stride in (((4, C, 3, 3), (1, 1)), ((4, C, 3, 3), (2, 2)), ((4, C, 5, 5), (1, 1))):
        w = rng.standard_normal(w_shape).astype(np.float32)
        y, _ = fast.conv2d_forward(x, w, None, stride, (1, 1))
        y_ref, _ = reference.conv2d_forward(x, w, None, stride, (1, 1))
        np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    fast.conv2d_forward(x[:, :C - 1], rng.standard_normal((4, C - 1, 3, 3)).astype(np.float32), None, (1, 1), (1, 1))
    assert calls == [(4, C, 3, 3)]
    monkeypatch.setattr(fast.conv, "WINOGRAD", False)
    fast.conv2d_forward(x, rng.standard_normal((4, C, 3, 3)).astype(np.float32), None, (1, 1), (1, 1))
    assert calls == [(4, C, 3, 3)]


@pytest.mark.parametrize("blocked_first", [True, False])
@pytest.mark.parametrize("pooled", [False, True])
def test_a_winograd_layer_in_whole_blocks_may_run_forward_blocked_and_backward_winograd(monkeypatch, blocked_first,
                                                                                        pooled):
    """conv.BLOCKED_BEFORE_WINOGRAD (on with AVX2): a Winograd layer whose output channels
    and columns are whole blocks of conv_blocked runs its forward pass there and its backward
    by Winograd, from the blocked pass's cache; a layer whose last block of columns or of
    channels would overlap stays Winograd's. Either way the results equal the reference
    kernels' (with the ReLU: Winograd's backward reads the blocked pass's output)."""
    monkeypatch.setattr(fast.conv, "BLOCKED_BEFORE_WINOGRAD", blocked_first)
    monkeypatch.setattr(fast.conv, "BLOCKED", True)
    monkeypatch.setattr(fast.conv, "WINOGRAD", True)
    calls = []
    for module, name in ((fast.conv_blocked, "forward"), (conv_winograd, "conv2d_forward"),
                         (conv_winograd, "conv2d_relu_maxpool2_forward"), (conv_winograd, "conv2d_backward"),
                         (conv_winograd, "conv2d_relu_maxpool2_backward")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: calls.append(name) or real(*a, **k))
    rng = np.random.default_rng(4)
    C, BF, BP = fast.conv.WINOGRAD_MIN_C, fast.conv_blocked.BLOCK_F, fast.conv_blocked.BLOCK_P
    # whole blocks; a last block of columns overlapping; a last block of channels overlapping
    for F, OW in ((BF, 2 * BP), (BF, 2 * BP + 2), (BF + 8, 2 * BP)):
        calls.clear()
        x = rng.standard_normal((3, C, 6, OW + 2)).astype(np.float32)
        w = rng.standard_normal((F, C, 3, 3)).astype(np.float32) / 10
        b = rng.standard_normal(F).astype(np.float32)
        if pooled:
            y, cache = fast.conv2d_relu_maxpool2_forward(x, w, b, (1, 1), (0, 0))
            dy = rng.standard_normal(y.shape).astype(np.float32)
            grads = fast.conv2d_relu_maxpool2_backward(dy, cache, x.shape, w, (1, 1), (0, 0))
            y_ref, cache_ref = reference.conv2d_forward(x, w, b, (1, 1), (0, 0), relu=True)
            pooled_ref, argmax = reference.maxpool2d_forward(y_ref, 2, 2, 2, 2)
            np.testing.assert_allclose(y, pooled_ref, rtol=1e-4, atol=1e-4)
            dconv = reference.maxpool2d_backward(dy, argmax, y_ref.shape, 2, 2, 2, 2)
            grads_ref = reference.conv2d_backward(dconv, cache_ref, x.shape, w, (1, 1), (0, 0))
        else:
            y, cache = fast.conv2d_forward(x, w, b, (1, 1), (0, 0), relu=True)
            dy = rng.standard_normal(y.shape).astype(np.float32)
            grads = fast.conv2d_backward(dy, cache, x.shape, w, (1, 1), (0, 0))
            y_ref, cache_ref = reference.conv2d_forward(x, w, b, (1, 1), (0, 0), relu=True)
            np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
            grads_ref = reference.conv2d_backward(dy, cache_ref, x.shape, w, (1, 1), (0, 0))
        for g, g_ref in zip(grads, grads_ref):
            np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4 * np.abs(g_ref).max())
        forward = "conv2d_relu_maxpool2_forward" if pooled else "conv2d_forward"
        backward = "conv2d_relu_maxpool2_backward" if pooled else "conv2d_backward"
        takes_blocked = blocked_first and (F, OW) == (BF, 2 * BP)
        assert calls == ["forward" if takes_blocked else forward, backward], (F, OW, calls)
