"""Every layer's gradients against finite differences (float64), on both kernel sets, and
the errors bad arguments get."""
import numpy as np
import pytest

import tinycnn
from tinycnn import gradcheck
from tinycnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten,
                            LeakyReLU, MaxPool2D, ReLU, Sigmoid, Tanh)
from tinycnn.losses import SoftmaxCrossEntropy

TOL = 1e-6


def away_from_zero(rng, shape, margin=0.05):
    """Normal samples pushed away from 0, so that a finite difference never crosses a kink."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * margin


def seeded(layer, seed=0):
    """Draw the layer's initial parameters from a fixed seed: an unseeded draw occasionally
    puts a gradient element so near zero that finite-difference rounding (~1e-10) shows up
    as a relative error above the tolerance, which would make the test flaky."""
    layer.reset_parameters(np.random.default_rng(seed))
    return layer


def well_separated(rng, shape, gap=1e-3):
    """Distinct values at least `gap` apart, shuffled: no max-pool window has a near tie that
    a finite-difference step could flip."""
    n = int(np.prod(shape))
    return rng.permutation(np.arange(n) - n / 2).reshape(shape) * gap * 10


@pytest.mark.parametrize("kernel, stride, padding, bias", [
    (3, 1, 0, True), (3, 2, 1, True), ((2, 3), (1, 2), (2, 0), False), (1, 1, 0, True),
    (5, 3, 2, True)])
def test_conv2d_gradients(backend, kernel, stride, padding, bias):
    layer = seeded(Conv2D(3, 4, kernel, stride=stride, padding=padding, bias=bias))
    x = np.random.default_rng(1).standard_normal((2, 3, 7, 6))
    result = gradcheck(layer, x)
    assert result.max_rel_error < TOL, str(result)
    assert set(result.errors) == {"x", "W"} | ({"b"} if bias else set())


def test_conv2d_with_relu_gradients(backend):
    layer = seeded(Conv2D(3, 4, 3, padding=1, activation="relu"))
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    y = layer.forward(x.astype(np.float32))
    assert y.min() == 0 and (y > 0).mean() > 0.2
    result = gradcheck(layer, x)
    assert result.max_rel_error < TOL, str(result)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("kernel, stride", [(2, None), (3, 2), ((2, 3), (1, 2)), (3, 1)])
def test_pooling_gradients(backend, cls, kernel, stride):
    x = well_separated(np.random.default_rng(2), (2, 3, 7, 8))
    result = gradcheck(cls(kernel, stride), x)
    assert result.max_rel_error < TOL, str(result)


def test_maxpool_backward_after_eval_forward(backend):
    """Eval mode skips the argmax; a backward pass after it (a saliency map) still routes dy."""
    x = np.random.default_rng(5).standard_normal((2, 3, 7, 8)).astype(np.float32)
    dy = np.random.default_rng(6).standard_normal((2, 3, 3, 4)).astype(np.float32)
    layer = MaxPool2D(2)
    y_train = layer.forward(x, training=True)
    dx_train = layer.backward(dy)
    y_eval = layer.forward(x, training=False)
    np.testing.assert_array_equal(y_eval, y_train)
    np.testing.assert_array_equal(layer.backward(dy), dx_train)


@pytest.mark.parametrize("layer", [seeded(Dense(5, 4)), seeded(Dense(5, 3, bias=False)), ReLU(), LeakyReLU(0.1),
                                   Sigmoid(), Tanh(), Flatten()], ids=repr)
def test_dense_activation_gradients(layer):
    x = away_from_zero(np.random.default_rng(3), (4, 5))
    result = gradcheck(layer, x)
    assert result.max_rel_error < TOL, str(result)


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(backend, training):
    rng = np.random.default_rng(4)
    bn2 = BatchNorm2D(3)
    bn1 = BatchNorm1D(5)
    for bn in (bn2, bn1):   # non-trivial parameters and running statistics
        bn.params["gamma"][...] = rng.uniform(0.5, 1.5, bn.num_features)
        bn.params["beta"][...] = rng.standard_normal(bn.num_features)
        bn.state["running_mean"][...] = rng.standard_normal(bn.num_features)
        bn.state["running_var"][...] = rng.uniform(0.5, 2, bn.num_features)
    for bn, shape in ((bn2, (4, 3, 5, 5)), (bn1, (6, 5))):
        result = gradcheck(bn, rng.standard_normal(shape) * 2 + 1, training=training)
        assert result.max_rel_error < TOL, f"{bn.name}: {result}"


def test_dropout_gradients_with_fixed_mask():
    x = np.random.default_rng(5).standard_normal((4, 50))
    result = gradcheck(Dropout(0.5), x, training=True)
    assert result.max_rel_error < TOL, str(result)


def test_softmax_cross_entropy_gradient():
    rng = np.random.default_rng(6)
    result = gradcheck(SoftmaxCrossEntropy(), rng.standard_normal((5, 4)) * 3,
                       labels=rng.integers(0, 4, 5))
    assert result.max_rel_error < TOL, str(result)


def test_whole_model_with_loss(backend):
    model = tinycnn.Sequential([
        Conv2D(2, 3, 3, padding=1), BatchNorm2D(3), ReLU(), MaxPool2D(2),
        Conv2D(3, 4, (2, 3), stride=(1, 2)), Tanh(), AvgPool2D(2, 1), Flatten(),
        Dropout(0.3), Dense(8, 6), BatchNorm1D(6), LeakyReLU(0.2), Dense(6, 3)], seed=7)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 2, 8, 12))
    result = gradcheck(model, x, labels=rng.integers(0, 3, 4), training=True)
    assert result.max_rel_error < TOL, str(result)
    assert len(result.errors) == 1 + len(list(model.parameters()))


def test_gradcheck_catches_a_wrong_gradient():
    class BrokenReLU(ReLU):
        def backward(self, dy):
            return super().backward(dy) * 1.01     # 1% off
    result = gradcheck(BrokenReLU(), away_from_zero(np.random.default_rng(8), (3, 4)))
    assert result.max_rel_error > 1e-3 and result.where.startswith("x[")


def test_gradcheck_leaves_the_layer_untouched():
    layer = seeded(Conv2D(1, 2, 3))
    before = layer.params["W"].copy()
    gradcheck(layer, np.random.default_rng(0).standard_normal((1, 1, 5, 5)))
    assert layer.params["W"].dtype == np.float32
    np.testing.assert_array_equal(layer.params["W"], before)


def test_gradcheck_says_when_it_compiles(capsys):
    """A first gradcheck on the fast kernels compiled for 20-40 s without a word: one line
    on stderr says so, once, and a check that compiles nothing says nothing."""
    from numba import njit

    @njit
    def double(a):                       # a kernel of its own: compiled at its first call
        return a * 2

    class Doubling(ReLU):
        def forward(self, x, training=False):
            return double(x)

        def backward(self, dy):
            return dy * 2

    x = np.random.default_rng(0).standard_normal((2, 3))
    assert gradcheck(Doubling(), x).max_rel_error < TOL
    err = capsys.readouterr().err
    assert err.count("gradcheck: Numba is compiling float64 kernels (once: it caches them;") == 1, err
    assert gradcheck(Doubling(), x).max_rel_error < TOL
    assert capsys.readouterr().err == ""


# -- behaviour beyond gradients ----------------------------------------------------------

def test_softmax_cross_entropy_is_stable_for_huge_logits():
    loss = SoftmaxCrossEntropy()
    logits = np.array([[1e4, 0, -1e4], [0, 1e4, 1e4]], dtype=np.float32)
    value = loss.forward(logits, np.array([0, 1]))
    assert np.isfinite(value) and value == pytest.approx(np.log(2) / 2, rel=1e-5)
    d = loss.backward()
    assert np.all(np.isfinite(d))
    np.testing.assert_allclose(tinycnn.functional.softmax(logits).sum(axis=1), 1, rtol=1e-6)


def test_dropout_is_identity_in_eval_and_inverted_in_training():
    x = np.ones((200, 500), np.float32)
    drop = Dropout(0.25)
    assert drop.forward(x, training=False) is x
    y = drop.forward(x, training=True)
    assert y.dtype == np.float32
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01 and abs(y.mean() - 1) < 0.02


def test_batchnorm_running_statistics_and_eval():
    bn = BatchNorm2D(2, momentum=0.5)
    x = np.random.default_rng(9).standard_normal((8, 2, 4, 4)).astype(np.float32) * 3 + 2
    y = bn.forward(x, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, atol=1e-3)
    mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.state["running_mean"], 0.5 * mu, rtol=1e-5)
    np.testing.assert_allclose(bn.state["running_var"], 0.5 + 0.5 * var, rtol=1e-5)
    y_eval = bn.forward(x, training=False)
    expected = (x - bn.state["running_mean"][None, :, None, None]) / np.sqrt(
        bn.state["running_var"][None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y_eval, expected, rtol=1e-5, atol=1e-5)


def test_pooling_floors_windows_that_do_not_fit():
    assert MaxPool2D(2).output_shape((3, 7, 5)) == (3, 3, 2)
    assert AvgPool2D(3, 2).output_shape((1, 8, 8)) == (1, 3, 3)
    assert Conv2D(1, 1, 3, stride=2, padding=1).output_shape((1, 8, 7)) == (1, 4, 4)


def test_params_and_grads_match():
    for layer in (Conv2D(2, 3, 3), Dense(4, 2), BatchNorm2D(3), BatchNorm1D(2), ReLU()):
        assert layer.params.keys() == layer.grads.keys()
        for k in layer.params:
            assert layer.params[k].shape == layer.grads[k].shape
            assert layer.params[k].dtype == np.float32
    w = Conv2D(16, 8, 3).params["W"]
    assert w.shape == (8, 16, 3, 3)
    assert w.std() == pytest.approx(np.sqrt(2 / (16 * 9)), rel=0.1)   # He initialisation


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [Conv2D(1, 2, 3), MaxPool2D(2), Dense(3, 2), ReLU(),
                                   BatchNorm2D(2), Dropout(0.5), Flatten()], ids=repr)
def test_backward_before_forward(layer):
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.ones((1, 2), np.float32))


def test_bad_inputs_are_named():
    conv = Conv2D(3, 4, 3)
    with pytest.raises(ValueError, match=r"expected a 4-D input.*got shape \(3, 8, 8\)"):
        conv.forward(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="float32 or float64, got uint8"):
        conv.forward(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\).*\(2, 8, 8\)"):
        conv.forward(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="kernel 3x3 is larger than the padded input 2x8"):
        conv.forward(np.zeros((1, 3, 2, 8), np.float32))
    with pytest.raises(TypeError, match="dtype float64 differs from parameter 'W' dtype float32"):
        conv.forward(np.zeros((1, 3, 8, 8), np.float64))
    with pytest.raises(ValueError, match="add a Flatten layer"):
        Dense(16, 2).forward(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="window 3x3 is larger than the input 2x2"):
        MaxPool2D(3).forward(np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        Conv2D(1, 1, "3")
    with pytest.raises(ValueError, match="Conv2D: activation must be None or 'relu', got 'tanh'"):
        Conv2D(1, 1, 3, activation="tanh")
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels must be integers"):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))
