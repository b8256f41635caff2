"""The three kernel tiers held equal: loops.py (from the definition) == reference.py (NumPy)
== fast/ (Numba), on random small shapes in float64 and float32; each loops kernel
against finite differences; a whole model on the loops backend; and teaching mode (on the
numpy and loops backends every layer runs its own passes, so a debugger visits each).

Tolerances: float64 results agree to rtol 1e-10 (the tiers sum in different orders, which
moves the last few bits); float32 to rtol 1e-4 with atol 1e-4 on values of order 1-10
(sums of up to 175 products in float32: ~1e-6 relative per rounding, and the fast kernels
use BLAS and Numba's reassociated sums). Max pooling's maxima and arg-max taps must agree
exactly, ties included.
"""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import tinycnn
from tinycnn import models
from tinycnn.gradcheck import gradcheck_report
from tinycnn.kernels import fast, loops, reference
from tinycnn.layers import LAYER_TYPES, MaxPool2D, fused
from test_kernels import CASES, random_conv

TIERS = (loops, reference, fast)
DTYPES = (np.float64, np.float32)
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-4)}


def assert_tiers_agree(results, dtype, what):
    """results: one tuple of arrays (or None) per tier in TIERS; all equal to the first."""
    for impl, result in zip(TIERS[1:], results[1:]):
        for k, (expected, got) in enumerate(zip(results[0], result)):
            if expected is None:
                assert got is None, f"{what}[{k}]: loops gave None, {impl.__name__} did not"
                continue
            assert got.dtype == expected.dtype == dtype, f"{what}[{k}] {impl.__name__}: {got.dtype}"
            np.testing.assert_allclose(got, expected, **TOL[dtype],
                                       err_msg=f"{what}[{k}]: loops vs {impl.__name__}")


def test_every_layer_facing_function_has_the_same_signature_in_all_tiers():
    assert "im2col" not in loops.__all__ and len(loops.__all__) == 14
    for name in loops.__all__:
        signatures = {impl.__name__: inspect.signature(getattr(impl, name)) for impl in TIERS}
        assert len(set(map(str, signatures.values()))) == 1, f"{name}: {signatures}"


# -- convolution --------------------------------------------------------------------------

CONV_CASES = CASES[::5]       # (N, C, F, H, W, kh, kw, sh, sw, ph, pw), see test_kernels.py


def conv_arrays(case, dtype):
    """x, W, b of `dtype` for one case, drawn from a seed the case fixes; ((sh, sw), (ph, pw));
    and the generator, for drawing dy."""
    x, w, b, args, rng = random_conv(case)
    return x.astype(dtype), w.astype(dtype), b.astype(dtype), args, rng


def test_conv_cases_cover_stride_padding_and_non_square_kernels():
    arr = np.array(CONV_CASES)
    assert (arr[:, 7:9] == 2).any() and (arr[:, 7:9] == 3).any()      # strides 2 and 3
    assert (arr[:, 9:11] > 0).any() and (arr[:, 9:11] == 0).all(axis=1).any()
    assert (arr[:, 5] != arr[:, 6]).any() and (arr[:, 1] > 1).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("relu", [False, True], ids=["plain", "relu"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv_tiers_agree(case, relu, dtype):
    x, w, b, args, rng = conv_arrays(case, dtype)
    forwards = [impl.conv2d_forward(x, w, b, *args, relu=relu) for impl in TIERS]
    assert_tiers_agree([(y,) for y, _ in forwards], dtype, "y")
    if relu:
        assert forwards[0][0].min() == 0 and (forwards[0][0] > 0).any()
    dy = rng.standard_normal(forwards[0][0].shape).astype(dtype)
    grads = [impl.conv2d_backward(dy, cache, x.shape, w, *args) for impl, (_, cache) in zip(TIERS, forwards)]
    assert_tiers_agree(grads, dtype, "(dx, dW, db)")
    dx, dW, db = loops.conv2d_backward(dy, forwards[0][1], x.shape, w, *args, need_dx=False)
    assert dx is None and np.array_equal(dW, grads[0][1]) and np.array_equal(db, grads[0][2])


def test_conv_without_bias_and_a_hand_worked_example():
    # d2l's 3x3 input and 2x2 kernel: [[19, 25], [37, 43]]
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    w = np.arange(4, dtype=np.float64).reshape(1, 1, 2, 2)
    y, cache = loops.conv2d_forward(x, w, None, (1, 1), (0, 0))
    np.testing.assert_array_equal(y[0, 0], [[19, 25], [37, 43]])
    dx, dW, db = loops.conv2d_backward(np.ones_like(y), cache, x.shape, w, (1, 1), (0, 0))
    np.testing.assert_array_equal(dW[0, 0], [[8, 12], [20, 24]])      # sum of each tap's 2x2 inputs
    np.testing.assert_array_equal(dx[0, 0], [[0, 1, 1], [2, 6, 4], [2, 5, 3]])
    assert db.tolist() == [4]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("case", [(2, 3, 4, 8, 7, 3, 3, 1, 1, 1, 1), (2, 2, 3, 9, 8, 3, 2, 2, 1, 0, 1)], ids=str)
def test_conv_relu_maxpool2_tiers_agree(case, dtype):
    x, w, b, args, rng = conv_arrays(case, dtype)
    forwards = [impl.conv2d_relu_maxpool2_forward(x, w, b, *args) for impl in TIERS]
    assert_tiers_agree([(p,) for p, _ in forwards], dtype, "pooled")
    assert loops.conv2d_relu_maxpool2_forward(x, w, b, *args, need_argmax=False)[1] is None
    dy = rng.standard_normal(forwards[0][0].shape).astype(dtype)
    grads = [impl.conv2d_relu_maxpool2_backward(dy, cache, x.shape, w, *args)
             for impl, (_, cache) in zip(TIERS, forwards)]
    assert_tiers_agree(grads, dtype, "(dx, dW, db)")


# -- pooling, ReLU ------------------------------------------------------------------------

POOLS = [(2, 2, 2, 2), (3, 3, 2, 2), (3, 2, 1, 2), (2, 3, 1, 1)]     # kh, kw, sh, sw: overlapping too


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_maxpool_tiers_agree_with_ties(pool, dtype):
    rng = np.random.default_rng(sum(pool))
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(dtype)          # three values: ties everywhere
    forwards = [impl.maxpool2d_forward(x, *pool) for impl in TIERS]
    for impl, (y, argmax) in zip(TIERS, forwards):              # maxima and taps: exactly equal
        np.testing.assert_array_equal(y, forwards[0][0], err_msg=impl.__name__)
        np.testing.assert_array_equal(argmax, forwards[0][1], err_msg=impl.__name__)
        assert impl.maxpool2d_forward(x, *pool, need_argmax=False)[1] is None
    window = x[:, :, :pool[0], :pool[1]].reshape(2, 3, -1)
    assert (np.sum(window == window.max(axis=2, keepdims=True), axis=2) > 1).any()   # ties present
    dy = rng.standard_normal(forwards[0][0].shape).astype(dtype)
    dxs = [(impl.maxpool2d_backward(dy, argmax, x.shape, *pool),) for impl, (_, argmax) in zip(TIERS, forwards)]
    assert_tiers_agree(dxs, dtype, "dx")


@pytest.mark.parametrize("impl", TIERS, ids=lambda m: m.__name__)
def test_maxpool_tie_sends_the_gradient_to_the_first_tap_only(impl):
    x = np.array([[[[1, 5, 5], [5, 5, 2]]]], dtype=np.float32)    # one 2x2 window per column pair
    y, argmax = impl.maxpool2d_forward(x, 2, 2, 1, 1)
    assert y.tolist() == [[[[5, 5]]]] and argmax.tolist() == [[[[1, 0]]]]
    dx = impl.maxpool2d_backward(np.array([[[[1, 10]]]], np.float32), argmax, x.shape, 2, 2, 1, 1)
    assert dx.tolist() == [[[[0, 11, 0], [0, 0, 0]]]]             # both windows' first 5: (0, 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("pool", POOLS, ids=str)
def test_avgpool_tiers_agree(pool, dtype):
    rng = np.random.default_rng(sum(pool))
    x = rng.standard_normal((2, 3, 7, 8)).astype(dtype)
    ys = [(impl.avgpool2d_forward(x, *pool),) for impl in TIERS]
    assert_tiers_agree(ys, dtype, "y")
    dy = rng.standard_normal(ys[0][0].shape).astype(dtype)
    assert_tiers_agree([(impl.avgpool2d_backward(dy, x.shape, *pool),) for impl in TIERS], dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
def test_relu_tiers_agree(dtype):
    rng = np.random.default_rng(0)
    x = rng.integers(-2, 3, (3, 4, 5)).astype(dtype)              # exact zeros: no gradient there
    forwards = [impl.relu_forward(x) for impl in TIERS]
    assert_tiers_agree([(y,) for y, _ in forwards], dtype, "y")
    for impl, (_, mask) in zip(TIERS, forwards):
        np.testing.assert_array_equal(mask, x > 0, err_msg=impl.__name__)
    dy = rng.standard_normal(x.shape).astype(dtype)
    assert_tiers_agree([(impl.relu_backward(dy, mask),) for impl, (_, mask) in zip(TIERS, forwards)], dtype, "dx")


# -- batch normalisation ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(4, 3, 10), (6, 5, 1)], ids=str)
def test_batchnorm_tiers_agree(shape, training, dtype):
    rng = np.random.default_rng(shape[0])
    x = (rng.standard_normal(shape) * 2 + 3).astype(dtype)
    C = shape[1]
    gamma, beta = rng.uniform(0.5, 1.5, C).astype(dtype), rng.standard_normal(C).astype(dtype)
    stats = [impl.batchnorm_stats(x) for impl in TIERS]
    assert_tiers_agree(stats, dtype, "(mean, var)")
    mean, var = stats[1] if training else (rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype))
    inv_std = (1 / np.sqrt(var + 1e-5)).astype(dtype)
    forwards = [impl.batchnorm_forward(x, gamma, beta, mean, inv_std) for impl in TIERS]
    assert_tiers_agree(forwards, dtype, "(y, xhat)")
    dy = rng.standard_normal(shape).astype(dtype)
    xhat = forwards[1][1]
    grads = [impl.batchnorm_backward(dy, xhat, gamma, inv_std, training) for impl in TIERS]
    assert_tiers_agree(grads, dtype, "(dx, dgamma, dbeta)")


# -- gradients against finite differences --------------------------------------------------

def test_loops_kernels_pass_the_gradient_check():
    # Every layer type, the loss and a small model, in float64 on the loops backend: the
    # layers that call kernels (Conv2D with and without ReLU, both poolings with overlapping
    # windows, ReLU, batch norm in training and eval mode) reach every function of loops.py.
    rows = gradcheck_report(["loops"], print_fn=None)
    failed = [r for r in rows if not r.passed]
    assert not failed, failed
    checked = {r.layer.split()[0] for r in rows}
    assert {"Conv2D", "MaxPool2D", "AvgPool2D", "ReLU", "BatchNorm2D", "BatchNorm1D"} <= checked
    assert {r.layer for r in rows} >= {"Conv2D 3x3 relu pad 1", "BatchNorm2D train", "BatchNorm2D eval"}


# -- a whole model on the loops backend -----------------------------------------------------

def run_step(model, x, dy):
    for layer in model.layers:
        if hasattr(layer, "rng"):
            layer.rng = np.random.default_rng(3)                  # the same dropout masks
    y = model.forward(x, training=True)
    dx = model.backward(dy)
    return y, dx, [g.copy() for _, _, _, g in model.parameters()]


@pytest.mark.parametrize("builder", [lambda: models.convnet(input_size=12, batchnorm=True, seed=1),
                                     lambda: models.lenet5(input_size=12, seed=1)], ids=["convnet-bn", "lenet5"])
def test_whole_model_on_loops_equals_numpy(builder, monkeypatch):
    model = builder()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 12, 12)).astype(np.float32)
    dy = rng.standard_normal((3, 10)).astype(np.float32)
    results = {}
    for backend in ("numpy", "loops"):
        monkeypatch.setattr(tinycnn.backend, "_current", backend)
        results[backend] = run_step(model, x, dy)
        assert model.layers[0].cache[0] is {"numpy": reference, "loops": loops}[backend]
    (y, dx, grads), (y_l, dx_l, grads_l) = results["numpy"], results["loops"]
    np.testing.assert_allclose(y_l, y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx_l, dx, rtol=1e-4, atol=1e-5)
    for (name, key, _, _), g, g_l in zip(model.parameters(), grads, grads_l):
        np.testing.assert_allclose(g_l, g, rtol=1e-4, atol=1e-5, err_msg=f"{name}.{key}")


def test_loops_backend_is_selected_by_name_and_environment():
    previous = tinycnn.get_backend()
    try:
        tinycnn.set_backend("loops")
        assert tinycnn.kernels.current() is loops
    finally:
        tinycnn.set_backend(previous)
    env = {**os.environ, "TINYCNN_BACKEND": "loops"}
    out = subprocess.run([sys.executable, "-c", "import tinycnn; print(tinycnn.kernels.current().__name__)"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "tinycnn.kernels.loops"


# -- teaching mode: a debugger visits every layer -------------------------------------------

LAYER_PASSES = {getattr(cls, name).__code__: name for cls in LAYER_TYPES.values()
                for name in ("forward", "backward")}


def frames_entered(model, x):
    """What a debugger's breakpoints would see during one training step: the set of
    (id of the layer, "forward" / "backward") of every layer method entered, and every
    code object entered at all (sys.settrace is the hook debuggers use)."""
    layer_calls, codes = set(), set()

    def tracer(frame, event, arg):
        if event == "call":
            codes.add(frame.f_code)
            if frame.f_code in LAYER_PASSES:
                layer_calls.add((id(frame.f_locals.get("self")), LAYER_PASSES[frame.f_code]))
        return None                                    # no line-by-line tracing inside

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y))
    finally:
        sys.settrace(previous)
    return layer_calls, codes


@pytest.mark.parametrize("builder", [models.convnet, models.fastnet, models.lenet5], ids=lambda b: b.__name__)
@pytest.mark.parametrize("backend", ["numpy", "loops", "numba"])
def test_teaching_mode_runs_every_layer_and_fast_path_stays_fused(builder, backend, monkeypatch):
    monkeypatch.setattr(tinycnn.backend, "_current", backend)
    model = builder(seed=0)
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    layer_calls, codes = frames_entered(model, x)
    maxpool_backward_hit = MaxPool2D.backward.__code__ in codes
    if backend == "numba":        # the fast default: conv + ReLU + pooling still run as one step
        assert not maxpool_backward_hit and fused.backward.__code__ in codes
        assert fused.run_length(model.layers, 0) > 0
        return
    assert maxpool_backward_hit, "a breakpoint in MaxPool2D.backward would not fire"
    assert fused.backward.__code__ not in codes and fused.teaching_mode()
    expected = {(id(layer), name) for layer in model.layers for name in ("forward", "backward")}
    assert expected <= layer_calls, [model.names[i] for i, l in enumerate(model.layers)
                                     if {(id(l), "forward"), (id(l), "backward")} - layer_calls]
