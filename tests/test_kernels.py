"""The fast (Numba) kernels against the reference (NumPy) ones, and both against a direct,
loop-by-loop convolution that shares no code with either."""
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit, uintp

from tinycnn.kernels import conv_output_size, fast, reference


def random_case(rng):
    """A random convolution/pooling configuration from the ranges the library promises."""
    N, C, F = rng.integers(1, 6), rng.integers(1, 8), rng.integers(1, 8)
    kh, kw = rng.integers(1, 6, size=2)
    sh, sw = rng.integers(1, 4, size=2)
    ph, pw = rng.integers(0, 3, size=2)
    H = rng.integers(max(kh - 2 * ph, 1), 12) | 1      # odd sizes
    W = rng.integers(max(kw - 2 * pw, 1), 12) | 1
    H, W = max(H, kh - 2 * ph), max(W, kw - 2 * pw)
    return tuple(int(v) for v in (N, C, F, H, W, kh, kw, sh, sw, ph, pw))


CASES = [random_case(np.random.default_rng(seed)) for seed in range(60)]


def direct_conv(x, W, b, stride, padding):
    """Convolution straight from its definition, one output element at a time."""
    N, C, H, Wd = x.shape
    F, _, kh, kw = W.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = conv_output_size(H, kh, sh, ph), conv_output_size(Wd, kw, sw, pw)
    y = np.zeros((N, F, OH, OW), dtype=np.float64)
    for n in range(N):
        for f in range(F):
            for a in range(OH):
                for c in range(OW):
                    y[n, f, a, c] = np.sum(xp[n, :, a * sh:a * sh + kh, c * sw:c * sw + kw] * W[f]) + b[f]
    return y


def test_cases_cover_the_promised_ranges():
    arr = np.array(CASES)
    assert arr[:, 0].min() == 1 and arr[:, 0].max() == 5       # batch 1-5
    assert arr[:, 1].max() == 7 and arr[:, 5].max() == 5       # channels up to 7, kernel up to 5
    assert arr[:, 7].max() == 3 and arr[:, 9].max() == 2       # stride up to 3, padding up to 2
    assert any(kh != kw for kh, kw in arr[:, 5:7])             # non-square kernels


def random_conv(case):
    """float32 x, W, b for one case, drawn from a seed the case fixes; ((sh, sw), (ph, pw));
    and the generator, for drawing dy."""
    N, C, F, H, W, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((F, C, kh, kw)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    return x, w, b, ((sh, sw), (ph, pw)), rng


# The fast convolution has three methods: im2col + GEMM; a direct one for stride 1 and few
# channels (tinycnn/kernels/fast/conv_direct.py); and, forward only, a register-blocked
# direct one for stride 1 with at least one block of channels and of columns, a last block
# overlapping the one before (conv_blocked.py: 16 channels x 4 columns, or 16 x 8 on a CPU
# with 512-bit vectors). use_method forces one
# ("blocked": forward; the backward is GEMM's).
STRIDE_1 = [case[:7] + (1, 1) + case[9:] for case in CASES[::2]]
# BLOCKED: stride 1; one or more blocks of channels and of columns (BF + 8 channels and
# 2.5 BP columns: a last block overlapping the one before).
BF, BP = fast.conv_blocked.BLOCK_F, fast.conv_blocked.BLOCK_P
BLOCKED = [(N, C, (BF, BF + 8, 3 * BF)[i % 3], H, (BP, 2 * BP + BP // 2)[i // 3 % 2] + kw - 1 - 2 * pw, kh, kw,
            1, 1, ph, pw) for i, (N, C, F, H, W, kh, kw, sh, sw, ph, pw) in enumerate(STRIDE_1[::2])]


def use_method(monkeypatch, method):
    limit = 10 ** 9 if method == "direct" else 0
    monkeypatch.setattr(fast.conv_direct, "FORWARD_MAX_WEIGHTS", limit)
    monkeypatch.setattr(fast.conv_direct, "BACKWARD_MAX_WEIGHTS", limit)
    monkeypatch.setattr(fast.conv, "BLOCKED", method == "blocked")
    monkeypatch.setattr(fast.conv_blocked, "MIN_TAPS", 1)         # (whatever the CPU)


def test_blocked_cases_take_the_blocked_method(monkeypatch):
    # (so that the tests below run it), in every combination of one and several blocks; a
    # layer with fewer channels or columns than a block, or whose blocks would compute more
    # than 4/3 of its columns, does not take it.
    calls, real = [], fast.conv_blocked.forward
    monkeypatch.setattr(fast.conv_blocked, "forward", lambda *args: calls.append(args) or real(*args))
    use_method(monkeypatch, "blocked")
    blocks = set()
    for case in BLOCKED:
        x, w, b, args, _ = random_conv(case)
        y, _ = fast.conv2d_forward(x, w, b, *args)
        blocks.add((w.shape[0] > BF, y.shape[3] > BP))
    assert len(calls) == len(BLOCKED)
    assert blocks == {(False, False), (False, True), (True, False), (True, True)}
    N, C, F, H, W, kh, kw, sh, sw, ph, pw = BLOCKED[0]
    OW = BP + kw - 1 - 2 * pw
    for F, W in ((BF // 2, OW), (BF, OW - 1), (BF, OW + 1)):   # 8 channels; BP - 1 columns; BP + 1
        x, w, b, args, _ = random_conv((N, C, F, H, W, kh, kw, sh, sw, ph, pw))
        fast.conv2d_forward(x, w, b, *args)
    assert len(calls) == len(BLOCKED)
    assert fast.conv_blocked.applies(BF, 2 * BP + BP // 2, (1, 1)) and not fast.conv_blocked.applies(BF, BP + 1, (1, 1))
    with pytest.raises(ValueError, match=f"{BF} channels and {BP + 1} columns do not fit blocks of {BF} channels "
                                         f"and {BP} columns"):
        real(x, np.ascontiguousarray(w.reshape(BF, -1)), b, kh, kw, 0, 0, 4, BP + 1, False, False, False)


@njit(cache=True)
def _one_block(block, xp, Wt, offsets, base, f0, out, o):
    block(xp, Wt, offsets, uintp(base), uintp(f0), out, uintp(o), np.float32(0))


@pytest.mark.parametrize("block,pixels", [("_block_16x4", 4), ("_block_16x8", 8)])
def test_both_register_blocks_sum_one_block_of_the_convolution(block, pixels):
    # Each machine's kernel compiles one of the two blocks (8 pixels with AVX-512, else 4);
    # both run here, on every machine, on one block of a 3-channel 3x3 layer: channels
    # 16..31 at row 2, columns 1..pixels. They add the same products in the same order, so
    # their common 4 pixels agree bit for bit.
    rng = np.random.default_rng(5)
    C, H, W, k = 3, 7, 12, 3
    xp = rng.standard_normal(C * H * W).astype(np.float32)       # a flat (unpadded) image
    Wt = rng.standard_normal((C * k * k, 48)).astype(np.float32)  # (taps, channels)
    offsets = fast.conv_direct.tap_offsets(C, k, k, H * W, W, 1, 0)
    f0, oh, ow0 = 16, 2, 1
    out = np.zeros((48, 64), np.float32)
    _one_block(getattr(fast.conv_blocked, block), xp, Wt, offsets, oh * W + ow0, f0, out, 5)
    windows = np.stack([xp[oh * W + ow0 + p + offsets] for p in range(pixels)])    # (pixels, taps)
    expected = (windows.astype(np.float64) @ Wt[:, f0:f0 + 16].astype(np.float64)).T  # (16, pixels)
    np.testing.assert_allclose(out[f0:f0 + 16, 5:5 + pixels], expected, rtol=1e-5, atol=1e-5)
    assert not out[:f0].any() and not out[f0 + 16:].any() and not out[:, :5].any() and not out[:, 5 + pixels:].any()
    other_name = "_block_16x8" if block == "_block_16x4" else "_block_16x4"
    other = np.zeros_like(out)
    _one_block(getattr(fast.conv_blocked, other_name), xp, Wt, offsets, oh * W + ow0, f0, other, 5)
    np.testing.assert_array_equal(out[:, 5:9], other[:, 5:9])


@pytest.mark.parametrize("case,method", [(c, "gemm") for c in CASES] + [(c, "direct") for c in STRIDE_1]
                         + [(c, "blocked") for c in BLOCKED])
def test_conv_fast_equals_reference(case, method, monkeypatch):
    use_method(monkeypatch, method)
    _, _, _, _, _, kh, kw, sh, sw, ph, pw = case
    x, w, b, args, rng = random_conv(case)
    y_ref, cache_ref = reference.conv2d_forward(x, w, b, *args)
    y_fast, cache_fast = fast.conv2d_forward(x, w, b, *args)
    assert y_fast.dtype == np.float32
    np.testing.assert_array_equal(fast.im2col(x, kh, kw, sh, sw, ph, pw), cache_ref[0])  # pure copying
    np.testing.assert_allclose(y_fast, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_ref, direct_conv(x, w, b, *args), rtol=1e-4, atol=1e-4)

    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    grads_ref = reference.conv2d_backward(dy, cache_ref, x.shape, w, *args)
    grads_fast = fast.conv2d_backward(dy, cache_fast, x.shape, w, *args)
    for name, g_ref, g_fast in zip(("dx", "dW", "db"), grads_ref, grads_fast):
        assert g_fast.dtype == np.float32, name
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-4, err_msg=name)
    dx_none, dW_only, _ = fast.conv2d_backward(dy, cache_fast, x.shape, w, *args, need_dx=False)
    assert dx_none is None
    np.testing.assert_array_equal(dW_only, grads_fast[1])


# The GEMM backward sums dW^T when K = C*kh*kw >= F and dW otherwise (fast/conv_gemm.py);
# only one of CASES has K < F, so two more (N, C, F, H, W, kh, kw, sh, sw, ph, pw) here.
WIDE_DW = [(3, 1, 7, 9, 9, 2, 2, 1, 1, 0, 0), (2, 2, 7, 8, 9, 1, 3, 2, 1, 1, 0)]


@pytest.mark.parametrize("case", WIDE_DW)
def test_conv_gemm_backward_with_fewer_taps_than_filters(case, monkeypatch):
    _, C, F, _, _, kh, kw = case[:7]
    assert C * kh * kw < F
    test_conv_fast_equals_reference(case, "gemm", monkeypatch)


@pytest.mark.parametrize("pool", [False, True])
@pytest.mark.parametrize("pad", [0, 1])
def test_conv_gemm_stride_one_shares_give_the_general_shares_bits(monkeypatch, pool, pad):
    """Stride-1 layers reach the GEMM shares as geometry None, which compiles them with
    stride 1 and no padding as constants (conv_gemm.strides_and_pads), a padding being made
    in a padded copy of x first (conv_gemm.padded_here). Spelled out as an array, the same
    layer runs the general version, which pads as it copies. The same sums in the same
    order: equal bits, dx included."""
    from tinycnn.kernels.fast import conv_gemm
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 10, 10)).astype(np.float32)
    Wm = rng.standard_normal((4, 3 * 9)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    O = 10 + 2 * pad - 2
    results = {}
    for name in ("constants", "general"):
        if name == "general":
            monkeypatch.setattr(conv_gemm, "padded_here", lambda x, sh, sw, ph, pw: (x, ph, pw))
            monkeypatch.setattr(conv_gemm, "geometry_of", lambda *four: np.array(four, np.int64))
        y, taps = conv_gemm.forward(x, Wm, b, 3, 3, 1, 1, pad, pad, O, O, True, pool, pool)
        dy = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
        results[name] = (y, taps) + conv_gemm.backward(x, dy, y, taps, Wm, 3, 3, 1, 1, pad, pad, O, O, True,
                                                       True, pool)
    for a, b_ in zip(results["constants"], results["general"]):
        np.testing.assert_array_equal(a, b_)
    assert results["constants"][2].shape == x.shape and np.abs(results["constants"][2]).max() > 0     # dx


@pytest.mark.parametrize("case,method", [(c, "gemm") for c in CASES[::5]]   # (20-80% of the outputs kept)
                         + [(c, "blocked") for c in BLOCKED[::3] + BLOCKED[1::3]])  # (1::3: overlapping)
def test_conv_with_built_in_relu_is_conv_then_relu(case, method, monkeypatch):
    # relu=True must be exactly max(conv, 0) forward, and backward the plain convolution's
    # gradients for dy masked where the output is zero - on both kernel sets.
    use_method(monkeypatch, method)
    x, w, b, args, rng = random_conv(case)
    for impl in (reference, fast):
        plain, plain_cache = impl.conv2d_forward(x, w, b, *args)
        y, cache = impl.conv2d_forward(x, w, b, *args, relu=True)
        np.testing.assert_array_equal(y, np.maximum(plain, 0), err_msg=impl.__name__)
        assert 0.2 < (y > 0).mean() < 0.8
        dy = rng.standard_normal(y.shape).astype(np.float32)
        expected = impl.conv2d_backward(dy * (plain > 0), plain_cache, x.shape, w, *args)
        got = impl.conv2d_backward(dy, cache, x.shape, w, *args)
        for name, e, g in zip(("dx", "dW", "db"), expected, got):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=f"{impl.__name__} {name}")


@pytest.mark.parametrize("case,method", [(c, m) for c in CASES[::3] for m in ("gemm", "direct")]
                         + [(c, "blocked") for c in BLOCKED[::2]])
def test_conv_relu_maxpool2_fast_equals_reference(case, method, monkeypatch):
    # The fused convolution + ReLU + 2x2 max pooling (the fast kernels pool each plane as it is
    # written) against the reference, which runs the three in turn.
    use_method(monkeypatch, method)
    N, C, F, H, W, kh, kw, sh, sw, ph, pw = case
    if method != "gemm":
        sh = sw = 1
    H, W = max(H, kh + sh - 2 * ph), max(W, kw + sw - 2 * pw)       # conv output >= 2x2
    x, w, b, _, rng = random_conv((N, C, F, H, W, kh, kw, sh, sw, ph, pw))
    args = ((sh, sw), (ph, pw))
    pooled_ref, cache_ref = reference.conv2d_relu_maxpool2_forward(x, w, b, *args)
    pooled, cache = fast.conv2d_relu_maxpool2_forward(x, w, b, *args)
    assert pooled.shape == pooled_ref.shape and pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, pooled_ref, rtol=1e-5, atol=1e-5)
    for impl, with_taps in ((fast, pooled), (reference, pooled_ref)):     # inference: no taps, no cache
        without_taps, no_cache = impl.conv2d_relu_maxpool2_forward(x, w, b, *args, need_argmax=False)
        np.testing.assert_array_equal(without_taps, with_taps, err_msg=impl.__name__)
        assert no_cache is None
    dy = rng.standard_normal(pooled.shape).astype(np.float32)
    grads_ref = reference.conv2d_relu_maxpool2_backward(dy, cache_ref, x.shape, w, *args)
    grads = fast.conv2d_relu_maxpool2_backward(dy, cache, x.shape, w, *args)
    for name, g_ref, g in zip(("dx", "dW", "db"), grads_ref, grads):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4, err_msg=name)
    dx_none, dW_only, _ = fast.conv2d_relu_maxpool2_backward(dy, cache, x.shape, w, *args, need_dx=False)
    assert dx_none is None
    np.testing.assert_array_equal(dW_only, grads[1])


def test_conv_fast_backward_checks_dy_shape():
    # (The fast kernels index dy directly: a wrong shape would read out of bounds.)
    x, w, b, args, _ = random_conv((2, 3, 4, 9, 9, 3, 3, 1, 1, 0, 0))
    _, cache = fast.conv2d_forward(x, w, b, *args)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 4, 6, 7\), the forward pass gave \(2, 4, 7, 7\)"):
        fast.conv2d_backward(np.zeros((2, 4, 6, 7), np.float32), cache, x.shape, w, *args)


def test_conv_direct_forward_with_gemm_backward(monkeypatch):
    # By default a layer with C*F*kh*kw between the two limits runs the direct forward and
    # the GEMM backward; the backward must take the direct forward's cached ReLU output.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4, 9, 10)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    assert fast.conv_direct.BACKWARD_MAX_WEIGHTS < 4 * 8 * 3 * 3 <= fast.conv_direct.FORWARD_MAX_WEIGHTS
    y, cache = fast.conv2d_forward(x, w, b, (1, 1), (1, 1), relu=True)
    y_ref, cache_ref = reference.conv2d_forward(x, w, b, (1, 1), (1, 1), relu=True)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for g, g_ref in zip(fast.conv2d_backward(dy, cache, x.shape, w, (1, 1), (1, 1)),
                        reference.conv2d_backward(dy, cache_ref, x.shape, w, (1, 1), (1, 1))):
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


def test_conv_fast_np_dot_fallback_equals_the_direct_blas_call(monkeypatch):
    # float32 products go to NumPy's cblas_sgemm when it is found; without it (another BLAS)
    # the kernels use np.dot. Both must give the same outputs and gradients.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    dy = rng.standard_normal((7, 5, 9, 7)).astype(np.float32)
    assert fast.gemm.SGEMM is not None, "NumPy's cblas_sgemm was not found: the fast path is not used"
    results = []
    for gemm in (fast.gemm.SGEMM, None):
        monkeypatch.setattr(fast.gemm, "SGEMM", gemm)
        y, cache = fast.conv2d_forward(x, w, b, (1, 1), (1, 0), relu=True)
        results.append((y, *fast.conv2d_backward(dy, cache, x.shape, w, (1, 1), (1, 0))))
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["gemm", "direct", "blocked"])
def test_conv_fast_blocks_and_threads_do_not_change_results(monkeypatch, method):
    # Blocks of one image and blocks of many, one thread or two, must give the same outputs
    # and gradients.
    use_method(monkeypatch, method)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 3, 10, 10)).astype(np.float32)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    dy = rng.standard_normal((9, 16, 8, 8)).astype(np.float32)
    assert fast.conv.forward_method(3, 16, 3, 3, 8, (1, 1)) == method
    results = []
    for block_bytes, threads in ((1, 2), (1 << 30, 1)):
        monkeypatch.setattr(fast.conv_gemm, "BLOCK_BYTES", block_bytes)
        for method_module in (fast.conv_gemm, fast.conv_direct, fast.conv_blocked):
            monkeypatch.setattr(method_module, "threads_for", lambda N: min(threads, N))
        y, cache = fast.conv2d_forward(x, w, b, (1, 1), (0, 0))
        results.append((y, *fast.conv2d_backward(dy, cache, x.shape, w, (1, 1), (0, 0))))
    # Equal up to float32 rounding: dW sums 576 products, which BLAS adds in an order of its
    # own per block size and thread (its kernel for the CPU decides): an element near zero
    # among others near 30 can differ by 1e-5 (seen on an AVX-512 EPYC). So the tolerance
    # is a millionth of each array's largest value.
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6 * np.abs(c).max())


@pytest.mark.parametrize("case", CASES[:30])
def test_col2im_is_the_adjoint_of_im2col(case):
    # <im2col(x), c> == <x, col2im(c)> for all x, c: the defining property of the adjoint.
    N, C, _, H, W, kh, kw, sh, sw, ph, pw = case
    rng = np.random.default_rng(sum(case))
    x = rng.standard_normal((N, C, H, W))
    for impl in (reference, fast):
        cols = impl.im2col(x, kh, kw, sh, sw, ph, pw)
        c = rng.standard_normal(cols.shape)
        lhs = np.sum(cols * c)
        rhs = np.sum(x * impl.col2im(c, x.shape, kh, kw, sh, sw, ph, pw))
        assert lhs == pytest.approx(rhs, rel=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_pooling_fast_equals_reference(case):
    N, C, _, H, W, kh, kw, sh, sw, _, _ = case
    H, W = max(H, kh), max(W, kw)
    rng = np.random.default_rng(sum(case))
    # Small integers make ties common: both versions must send the gradient to the same one.
    x = rng.integers(-3, 4, size=(N, C, H, W)).astype(np.float32)
    y_ref, arg_ref = reference.maxpool2d_forward(x, kh, kw, sh, sw)
    y_fast, arg_fast = fast.maxpool2d_forward(x, kh, kw, sh, sw)
    np.testing.assert_array_equal(y_fast, y_ref)
    np.testing.assert_array_equal(arg_fast, arg_ref)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = reference.maxpool2d_backward(dy, arg_ref, x.shape, kh, kw, sh, sw)
    dx_fast = fast.maxpool2d_backward(dy, arg_fast, x.shape, kh, kw, sh, sw)
    np.testing.assert_allclose(dx_fast, dx_ref, rtol=1e-6, atol=1e-6)
    # The gradient mass is conserved: every window passes all of dy to exactly one pixel.
    assert dx_ref.sum() == pytest.approx(dy.sum(), rel=1e-4, abs=1e-4)

    a_ref = reference.avgpool2d_forward(x, kh, kw, sh, sw)
    a_fast = fast.avgpool2d_forward(x, kh, kw, sh, sw)
    assert a_fast.dtype == np.float32 and a_ref.dtype == np.float32
    np.testing.assert_allclose(a_fast, a_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.avgpool2d_backward(dy, x.shape, kh, kw, sh, sw),
                               reference.avgpool2d_backward(dy, x.shape, kh, kw, sh, sw),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 4, 8, 6), (2, 5, 7, 9), (1, 1, 2, 2)])
def test_maxpool_2x2_loop_and_no_argmax(shape):
    """The 2x2 / stride 2 window has its own fast loop; eval mode asks for no argmax."""
    x = np.random.default_rng(sum(shape)).integers(-2, 3, size=shape).astype(np.float32)  # many ties
    y_ref, arg_ref = reference.maxpool2d_forward(x, 2, 2, 2, 2)
    for impl in (reference, fast):
        y, arg = impl.maxpool2d_forward(x, 2, 2, 2, 2)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(arg, arg_ref)
        y_only, none = impl.maxpool2d_forward(x, 2, 2, 2, 2, need_argmax=False)
        np.testing.assert_array_equal(y_only, y_ref)
        assert none is None
    y_general, _ = fast.maxpool2d_forward(x, 3, 2, 2, 2, need_argmax=False)   # the general loop
    np.testing.assert_array_equal(y_general, reference.maxpool2d_forward(x, 3, 2, 2, 2)[0])


def test_maxpool_matches_window_definition():
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 9)).astype(np.float32)
    y, _ = fast.maxpool2d_forward(x, 3, 2, 2, 3)
    for a in range(y.shape[2]):
        for b in range(y.shape[3]):
            np.testing.assert_array_equal(y[:, :, a, b], x[:, :, 2 * a:2 * a + 3, 3 * b:3 * b + 2].max(axis=(2, 3)))


def test_kernels_keep_float32():
    x = np.ones((2, 3, 8, 8), np.float32)
    for impl in (reference, fast):
        cols = impl.im2col(x, 3, 3, 1, 1, 1, 1)
        assert cols.dtype == np.float32
        assert impl.col2im(cols, x.shape, 3, 3, 1, 1, 1, 1).dtype == np.float32


@pytest.mark.parametrize("shape", [(1,), (7, 3), (2, 3, 5, 4), (0, 3)])
def test_relu_fast_equals_reference(shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::3] = 0                                     # exact zeros: not positive
    y_ref, m_ref = reference.relu_forward(x)
    y_fast, m_fast = fast.relu_forward(x)
    np.testing.assert_array_equal(y_fast, y_ref)
    np.testing.assert_array_equal(m_fast, m_ref)
    assert y_fast.dtype == np.float32 and y_fast.shape == shape
    dy = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(fast.relu_backward(dy, m_fast), reference.relu_backward(dy, m_ref))


@pytest.mark.parametrize("shape", [(2, 3, 1), (5, 4, 7), (64, 6, 1), (3, 2, 100)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_fast_equals_reference(shape, dtype):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)     # offset mean: tests the centring
    gamma = rng.standard_normal(shape[1]).astype(dtype)
    beta = rng.standard_normal(shape[1]).astype(dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    mean, var = reference.batchnorm_stats(x)
    for got, want in zip(fast.batchnorm_stats(x), (mean, var)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2)), **tol)
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    y_ref, xhat_ref = reference.batchnorm_forward(x, gamma, beta, mean, inv_std)
    y_fast, xhat_fast = fast.batchnorm_forward(x, gamma, beta, mean, inv_std)
    np.testing.assert_allclose(y_fast, y_ref, **tol)
    np.testing.assert_allclose(xhat_fast, xhat_ref, **tol)
    assert y_fast.dtype == dtype
    dy = rng.standard_normal(shape).astype(dtype)
    for training in (True, False):
        want = reference.batchnorm_backward(dy, xhat_ref, gamma, inv_std, training)
        got = fast.batchnorm_backward(dy, xhat_ref, gamma, inv_std, training)
        for g, w in zip(got, want):
            assert g.dtype == dtype
            np.testing.assert_allclose(g, w, **tol)


def test_blocked_overlapping_blocks_stay_inside_their_arrays(tmp_path):
    # A last block that would run past the channels or columns starts early instead
    # (conv_blocked._forward_share). Without that, the kernel writes past its own buffer,
    # which no value check sees; Numba's bounds checking does (IndexError). It needs its own
    # compilation: the disk cache does not record the setting, hence an empty cache folder.
    script = f"""
import numpy as np
from tinycnn.kernels import fast, reference
BF, BP = fast.conv_blocked.BLOCK_F, fast.conv_blocked.BLOCK_P
rng = np.random.default_rng(0)
for F, OW in ((BF + 8, BP + BP // 2), (BF, 2 * BP + BP // 2), (BF + 8, BP)):
    assert fast.conv_blocked.applies(F, OW, (1, 1)) and not fast.conv_blocked.whole_blocks(F, OW)
    x = rng.standard_normal((2, 3, 5, OW + 2)).astype(np.float32)
    w = rng.standard_normal((F, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    y, _ = fast.conv_blocked.forward(x, np.ascontiguousarray(w.reshape(F, -1)), b, 3, 3, 0, 0, 3, OW,
                                     False, False, False)
    y_ref, _ = reference.conv2d_forward(x, w, b, (1, 1), (0, 0))
    np.testing.assert_allclose(y.reshape(y_ref.shape), y_ref, rtol=1e-4, atol=1e-4)
print("ok")
"""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
