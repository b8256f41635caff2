"""Saliency maps (d z_k / d x): against finite differences, across backends and the fused
pass, with dropout and batch norm in eval mode, and bad targets refused."""
import numpy as np
import pytest

import tinycnn
from tinycnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, fused
from tinycnn.models import convnet, fastnet
from tinycnn.saliency import saliency


def small_model(seed=0):
    """conv -> batch norm -> ReLU -> pool -> dropout -> dense: every kind of layer a
    saliency map passes back through, on (2, 6, 6) inputs, with 4 classes. The running
    statistics are set away from (0, 1) so eval mode visibly differs from training mode."""
    model = tinycnn.Sequential([Conv2D(2, 3, 3, padding=1), BatchNorm2D(3), ReLU(), MaxPool2D(2),
                                Flatten(), Dropout(0.5), Dense(27, 4)], input_shape=(2, 6, 6), seed=seed)
    rng = np.random.default_rng(seed + 1)
    bn = model.layers[1]
    bn.state["running_mean"][...] = rng.normal(0, 0.5, 3)
    bn.state["running_var"][...] = rng.uniform(0.5, 2, 3)
    bn.params["gamma"][...] = rng.uniform(0.5, 1.5, 3)
    return model


def numeric_saliency(model, x, target, h=1e-6):
    """Central differences of each image's logit z_target in eval mode, pixel by pixel:
    S[n, i] ~ (z(x + h e_i) - z(x - h e_i)) / 2h."""
    out = np.zeros_like(x)
    rows = np.arange(len(x))
    for i in np.ndindex(x.shape[1:]):
        plus, minus = x.copy(), x.copy()
        plus[(slice(None),) + i] += h                 # every image's pixel i at once: in eval
        minus[(slice(None),) + i] -= h                # mode images do not affect each other
        zp = model.forward(plus, training=False)[rows, target]
        zm = model.forward(minus, training=False)[rows, target]
        out[(slice(None),) + i] = (zp - zm) / (2 * h)
    return out


def test_saliency_equals_finite_differences_in_float64(numpy_backend):
    model = small_model().to(np.float64)
    x = np.random.default_rng(0).standard_normal((3, 2, 6, 6))
    for target in (None, np.array([3, 0, 1])):
        S, k = saliency(model, x, target)
        assert S.dtype == np.float64 and S.shape == x.shape
        # The network is piecewise linear (ReLU, max, affine batch norm in eval mode), so
        # the central difference is exact away from kinks: only rounding, ~1e-16 / h, stays.
        np.testing.assert_allclose(S, numeric_saliency(model, x, k), rtol=1e-6, atol=1e-8)


def test_saliency_of_a_linear_model_is_its_weight_column(numpy_backend):
    # z = flatten(x) @ W + b, so d z_k / d x = W[:, k] reshaped to the image: by hand.
    model = tinycnn.Sequential([Flatten(), Dense(12, 3)], input_shape=(1, 3, 4), seed=0)
    W = model.layers[1].params["W"]
    x = np.random.default_rng(1).standard_normal((2, 1, 3, 4)).astype(np.float32)
    predicted = model.predict(x)
    S, k = saliency(model, x)                                      # target: the prediction
    np.testing.assert_array_equal(k, predicted)
    for n in range(2):
        np.testing.assert_array_equal(S[n], W[:, predicted[n]].reshape(1, 3, 4))
    other = (predicted + 1) % 3                                    # target given
    S, k = saliency(model, x, other)
    np.testing.assert_array_equal(k, other)
    for n in range(2):
        np.testing.assert_array_equal(S[n], W[:, other[n]].reshape(1, 3, 4))


@pytest.mark.parametrize("target, why", [
    ([0, 4], "4 is not a class"), ([-1, 0], "negative"), ([0], "one target for two images"),
    ([0.5, 1.0], "not integers"), (["a", "b"], "not numbers")])
def test_bad_target_is_refused(numpy_backend, target, why):
    model = small_model()
    x = np.zeros((2, 2, 6, 6), np.float32)
    with pytest.raises(ValueError, match=r"saliency: target must hold 2 class indices in \[0, 4\), "
                                         r"got \[.*\]"):
        saliency(model, x, target)


def test_empty_batch_is_refused(numpy_backend):
    with pytest.raises(ValueError, match=r"saliency: x must be a non-empty batch \(N, \.\.\.\), "
                                         r"got shape \(0, 2, 6, 6\)"):
        saliency(small_model(), np.zeros((0, 2, 6, 6), np.float32))


def test_dropout_and_batchnorm_run_in_eval_mode(numpy_backend):
    # Dropout p=0.5 in training mode would draw a new mask each call, and batch norm would
    # use (and update) the batch statistics: in eval mode the map is the same every time
    # and the running statistics stay as they are.
    model = small_model()
    model.train()                                   # even when the model is left in training mode
    x = np.random.default_rng(2).standard_normal((4, 2, 6, 6)).astype(np.float32)
    bn = model.layers[1]
    running = {k: v.copy() for k, v in bn.state.items()}
    first, k1 = saliency(model, x)
    first = first.copy()
    second, k2 = saliency(model, x)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(k1, k2)
    for key, value in running.items():
        np.testing.assert_array_equal(bn.state[key], value, err_msg=key)
    assert np.abs(first).max() > 0
    # and it is the eval-mode gradient, not the training-mode one
    y_train = model.forward(x, training=True)
    assert not np.allclose(y_train, model.forward(x, training=False))


def test_fast_backend_equals_numpy_backend(backend):
    # float32 on both; the kernels sum in different orders, so they agree to rounding:
    # within 1e-5 of the map's largest entry.
    model = fastnet(seed=1)
    x = np.random.default_rng(3).standard_normal((3, 1, 28, 28)).astype(np.float32)
    target = np.array([0, 5, 9])
    S, _ = saliency(model, x, target)
    tinycnn.set_backend("numpy")
    S_ref, _ = saliency(model, x, target)
    assert S.dtype == S_ref.dtype == np.float32
    assert np.abs(S - S_ref).max() <= 1e-5 * np.abs(S_ref).max()


@pytest.mark.parametrize("builder", [convnet, fastnet])
def test_fused_eval_pass_gives_the_layers_own_saliency(builder, monkeypatch):
    # On the fast kernels, convnet's Conv2D(relu) + MaxPool2D(2) and fastnet's Conv2D +
    # MaxPool2D(2) + ReLU run as one fused step; in eval mode it records no arg-max taps and
    # its backward recomputes them from the input. That must give exactly the layers' result.
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numba")
    try:
        model = builder(seed=4)
        x = np.random.default_rng(5).standard_normal((4, 1, 28, 28)).astype(np.float32)
        maps = []
        for enabled in (True, False):
            monkeypatch.setattr(fused, "ENABLED", enabled)
            S, k = saliency(model, x)
            assert bool(model._fused) == enabled                 # the fused step really ran
            maps.append((S.copy(), k))
        (S_fused, k_fused), (S_layers, k_layers) = maps
        np.testing.assert_array_equal(k_fused, k_layers)
        np.testing.assert_array_equal(S_fused, S_layers)
        assert np.abs(S_fused).max() > 0
    finally:
        tinycnn.set_backend(previous)
