"""The Sequential container and the ready-made architectures."""
import numpy as np
import pytest

import tinycnn
from tinycnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, fused
from tinycnn.models import bnnet, convnet, convnet_bn, fastnet, lenet5


def test_shape_mismatch_at_build_time_names_layer_and_shapes():
    layers = [Conv2D(1, 4, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(100, 10)]
    with pytest.raises(ValueError, match=r"dense_4 does not fit the output of flatten_3 of shape "
                                         r"\(144,\).*expected input \(N, 100\)"):
        tinycnn.Sequential(layers, input_shape=(1, 14, 14))


def test_shape_mismatch_at_first_forward():
    model = tinycnn.Sequential([Conv2D(1, 4, 3), Conv2D(3, 2, 3)])
    with pytest.raises(ValueError, match=r"conv2d_1 does not fit the output of conv2d_0 of shape \(4, 6, 6\)"):
        model.forward(np.zeros((2, 1, 8, 8), np.float32))


@pytest.mark.parametrize("builder, size, flat", [(convnet, 28, 1600), (lenet5, 28, 400),
                                                 (convnet, 32, 2304), (lenet5, (32, 36), 16 * 6 * 7)])
def test_architectures_fit_other_sizes(builder, size, flat):
    model = builder(in_channels=3, num_classes=7, input_size=size)
    dense = next(l for l in model.layers if isinstance(l, Dense))
    assert dense.in_features == flat
    h, w = (size, size) if isinstance(size, int) else size
    assert model.predict_proba(np.random.rand(3, 3, h, w).astype(np.float32)).shape == (3, 7)


@pytest.mark.parametrize("builder, size", [(bnnet, 28), (bnnet, (20, 24)), (convnet_bn, 28),
                                           (lambda **k: fastnet(batchnorm=True, **k), 28)])
def test_batchnorm_architectures(builder, size):
    model = builder(in_channels=2, num_classes=5, input_size=size, seed=1)
    assert any(isinstance(l, tinycnn.layers.BatchNorm2D) for l in model.layers)
    h, w = (size, size) if isinstance(size, int) else size
    x = np.random.default_rng(0).standard_normal((8, 2, h, w)).astype(np.float32)
    model.forward(x, training=True)           # batch statistics, and the running ones move
    proba = model.predict_proba(x)
    assert proba.shape == (8, 5) and np.allclose(proba.sum(1), 1, atol=1e-5)


def test_bnnet_plan_has_no_bias_before_batchnorm():
    model = bnnet()
    names = [type(l).__name__ for l in model.layers]
    assert names.count("Conv2D") == 3 and names.count("BatchNorm2D") == 3 and names.count("BatchNorm1D") == 1
    for layer, after in zip(model.layers, model.layers[1:]):
        if type(after).__name__.startswith("BatchNorm"):
            assert "b" not in layer.params, layer.name
    assert model.num_parameters() == 189034


def test_convnet_and_lenet5_layer_plans():
    assert [type(l).__name__ for l in convnet().layers] == [
        "Conv2D", "MaxPool2D", "Conv2D", "MaxPool2D", "Flatten", "Dropout", "Dense"]
    assert [l.activation for l in convnet().layers if isinstance(l, Conv2D)] == ["relu", "relu"]
    assert convnet().num_parameters() == 34826
    assert lenet5().num_parameters() == 61706


def test_convnet_with_built_in_relu_is_the_keras_plan(backend):
    # The same network written with separate ReLU layers: same weights from the same seed,
    # same outputs, same gradients, in training mode (dropout draws the same masks).
    fused = convnet(seed=5)
    plain = tinycnn.Sequential([Conv2D(1, 32, 3), ReLU(), MaxPool2D(2), Conv2D(32, 64, 3), ReLU(), MaxPool2D(2),
                        Flatten(), Dropout(0.5), Dense(1600, 10)], input_shape=(1, 28, 28), seed=5)
    plain.layers[-1].params["W"] *= np.float32(0.1)           # as models._classifier does
    for a, b in zip(fused.parameters(), plain.parameters()):
        np.testing.assert_array_equal(a[2], b[2])
    x = np.random.default_rng(0).standard_normal((6, 1, 28, 28)).astype(np.float32)
    y_fused, y_plain = fused.forward(x, training=True), plain.forward(x, training=True)
    np.testing.assert_allclose(y_fused, y_plain, rtol=1e-5, atol=1e-6)
    dy = np.random.default_rng(1).standard_normal(y_fused.shape).astype(np.float32)
    fused.backward(dy)
    plain.backward(dy)
    for (name, key, _, g_fused), (_, _, _, g_plain) in zip(fused.parameters(), plain.parameters()):
        np.testing.assert_allclose(g_fused, g_plain, rtol=1e-4, atol=1e-5, err_msg=f"{name}.{key}")


@pytest.mark.parametrize("builder", [convnet, lenet5, fastnet])
@pytest.mark.parametrize("training", [True, False])
def test_conv_relu_pool_pairs_run_fused_with_the_layers_own_results(backend, builder, training, monkeypatch):
    # Sequential runs Conv2D(relu) + MaxPool2D(2), and fastnet's Conv2D + MaxPool2D(2) + ReLU,
    # as one step (layers/fused.py); it must give exactly what the layers give on their own:
    # output, dx and every gradient. (In eval mode the fused pass records no taps: backward
    # then recomputes them, as for a saliency map.)
    model = builder(seed=2)
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    dy = np.random.default_rng(1).standard_normal((5, 10)).astype(np.float32)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        for layer in model.layers:
            if isinstance(layer, Dropout):
                layer.rng = np.random.default_rng(3)              # the same masks both times
        y = model.forward(x, training=training)
        # the pair really ran as one (on numba; numpy is teaching mode: never fused)
        assert (model.layers[0].cache is None) == (enabled and backend == "numba")
        dx = model.backward(dy)
        results.append((y, dx, [g.copy() for _, _, _, g in model.parameters()]))
    (y, dx, grads), (y_layers, dx_layers, grads_layers) = results
    np.testing.assert_array_equal(y, y_layers)
    np.testing.assert_array_equal(dx, dx_layers)
    for g, g_layers in zip(grads, grads_layers):
        np.testing.assert_array_equal(g, g_layers)


def test_which_layers_fuse():
    conv, relu_conv = Conv2D(1, 4, 3), Conv2D(1, 4, 3, activation="relu")
    assert fused.run_length([relu_conv, MaxPool2D(2), ReLU()], 0) == 2
    assert fused.run_length([conv, MaxPool2D(2), ReLU()], 0) == 3
    assert fused.run_length([Flatten(), conv, MaxPool2D(2), ReLU()], 1) == 3
    assert fused.run_length([conv, MaxPool2D(2)], 0) == 0                      # no ReLU to fold in
    assert fused.run_length([conv, MaxPool2D(2), Flatten(), ReLU()], 0) == 0
    assert fused.run_length([relu_conv, MaxPool2D(3)], 0) == 0                 # only 2x2, stride 2
    assert fused.run_length([relu_conv, MaxPool2D(2, stride=1)], 0) == 0
    assert fused.run_length([relu_conv, ReLU(), MaxPool2D(2)], 0) == 0
    assert fused.run_length(fastnet(batchnorm=True).layers, 0) == 0           # batch norm between


def _normalised_convs(bias, seed=0):
    """Conv2D + BatchNorm2D in each eval fold the kernels have (+ ReLU + MaxPool2D(2), + ReLU,
    alone), with running statistics, gamma and beta drawn away from their defaults."""
    rng = np.random.default_rng(seed)
    model = tinycnn.Sequential([
        Conv2D(2, 4, 3, bias=bias), BatchNorm2D(4), ReLU(), MaxPool2D(2),      # 12x12 -> 10x10 -> 5x5
        Conv2D(4, 6, 3, padding=1, bias=bias), BatchNorm2D(6), ReLU(),         # 5x5
        Conv2D(6, 5, 3, bias=bias), BatchNorm2D(5),                            # 3x3
        Flatten(), Dense(45, 3)], input_shape=(2, 12, 12), seed=seed)
    for layer in model.layers:
        if isinstance(layer, BatchNorm2D):
            n = layer.num_features
            layer.params["gamma"][...] = rng.uniform(0.5, 2.0, n)
            layer.params["beta"][...] = rng.normal(0, 0.5, n)
            layer.state["running_mean"][...] = rng.normal(0, 0.5, n)
            layer.state["running_var"][...] = rng.uniform(0.2, 3.0, n)
        elif isinstance(layer, Conv2D) and bias:
            layer.params["b"][...] = rng.normal(0, 0.5, layer.params["b"].shape)
    return model


def test_which_layers_fold_batch_norm_in_eval_mode():
    layers = _normalised_convs(bias=False).layers
    assert [fused.run_length(layers, i, training=False) for i in (0, 4, 7)] == [4, 3, 2]
    assert [fused.run_length(layers, i, training=True) for i in (0, 4, 7)] == [0, 0, 0]
    relu_conv = Conv2D(2, 4, 3, activation="relu")                # ReLU before the normalisation
    assert fused.run_length([relu_conv, BatchNorm2D(4), ReLU()], 0, training=False) == 0
    assert fused.run_length([Conv2D(2, 4, 3), BatchNorm1D(4)], 0, training=False) == 0


@pytest.mark.parametrize("bias", [False, True])
def test_batch_norm_folded_into_the_convolution_gives_the_layers_results(bias, monkeypatch):
    # In eval mode Conv2D + BatchNorm2D (+ ReLU (+ MaxPool2D(2))) run as one convolution with
    # the normalisation folded into its filters (layers/fused.py): float32 rounding apart, the
    # layers' own output. A backward pass after it (a saliency map) runs the layers' own passes,
    # so dx and the first run's gradients are exactly theirs (later layers read a folded
    # output, so their weight gradients differ by its rounding).
    model = _normalised_convs(bias)
    x = np.random.default_rng(1).standard_normal((7, 2, 12, 12)).astype(np.float32)
    dy = np.random.default_rng(2).standard_normal((7, 3)).astype(np.float32)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        y = model.forward(x, training=False)
        assert sorted(model._fused) == ([3, 6, 8] if enabled else [])      # the three runs folded
        dx = model.backward(dy)
        results.append((y, dx, {(n, k): g.copy() for n, k, _, g in model.parameters()}))
    (y, dx, grads), (y_layers, dx_layers, grads_layers) = results
    assert not np.array_equal(y, y_layers)                  # (it did take the other route)
    np.testing.assert_allclose(y, y_layers, rtol=1e-5, atol=1e-5 * np.abs(y_layers).max())
    np.testing.assert_array_equal(dx, dx_layers)
    for name, g in grads.items():
        if name[0] in ("conv2d_0", "batchnorm2d_1"):
            np.testing.assert_array_equal(g, grads_layers[name], err_msg=str(name))
        else:
            np.testing.assert_allclose(g, grads_layers[name], rtol=1e-4, atol=1e-5, err_msg=str(name))
    for layer in model.layers:                               # eval never moves the running statistics
        if isinstance(layer, BatchNorm2D):
            assert layer.state["running_var"].min() >= 0.2


def test_batch_norm_fold_in_float64_and_with_a_channel_switched_off(monkeypatch):
    # The folded filters take the model's dtype (a float32 fold of a float64 model would
    # err by 1e-7, not 1e-15); gamma = 0 makes a channel's filter all zeros and its output
    # beta (then ReLU'd): the fold must give exactly that, not a NaN.
    model = _normalised_convs(bias=True).to(np.float64)
    model.layers[1].params["gamma"][1] = 0.0
    x = np.random.default_rng(3).standard_normal((3, 2, 12, 12))
    outputs = []
    for enabled in (True, False):
        monkeypatch.setattr(fused, "ENABLED", enabled)
        outputs.append(model.forward(x, training=False))
        assert sorted(model._fused) == ([3, 6, 8] if enabled else [])
    assert outputs[0].dtype == np.float64
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)
    pooled = fused._folded_forward(model.layers[:4], x)          # (3, 4, 5, 5): the first run
    beta = model.layers[1].params["beta"][1]
    np.testing.assert_array_equal(pooled[:, 1], max(beta, 0.0))


def test_bnnet_predictions_with_batch_norm_folded():
    model = tinycnn.models.bnnet(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):                                       # running statistics from real passes
        model.forward(rng.random((32, 1, 28, 28)).astype(np.float32), training=True)
    x = rng.random((40, 1, 28, 28)).astype(np.float32)
    folded = model.predict_proba(x, batch_size=100)
    with tinycnn.kernels.using(tinycnn.kernels.reference):
        reference = model.predict_proba(x, batch_size=100)
    np.testing.assert_array_equal(folded.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(folded, reference, rtol=1e-4, atol=1e-6)


def test_seed_makes_initialisation_and_dropout_reproducible():
    x = np.random.rand(4, 1, 28, 28).astype(np.float32)
    a, b, c = convnet(seed=3), convnet(seed=3), convnet(seed=4)
    np.testing.assert_array_equal(a.forward(x, training=True), b.forward(x, training=True))
    assert not np.array_equal(a.layers[0].params["W"], c.layers[0].params["W"])


def test_predict_in_batches_equals_one_pass():
    model = lenet5(seed=1)
    x = np.random.rand(37, 1, 28, 28).astype(np.float32)
    whole = tinycnn.functional.softmax(model.forward(x))
    np.testing.assert_allclose(model.predict_proba(x, batch_size=8), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(x, batch_size=5), whole.argmax(1))


def test_parameters_yields_names_and_grads():
    items = list(convnet().parameters())
    assert [(l, p) for l, p, _, _ in items] == [("conv2d_0", "W"), ("conv2d_0", "b"), ("conv2d_2", "W"),
                                              ("conv2d_2", "b"), ("dense_6", "W"), ("dense_6", "b")]
    assert all(p.shape == g.shape for _, _, p, g in items)


def test_summary_table():
    text = convnet().summary(print_fn=None)
    assert "conv2d_2 (Conv2D, relu)" in text and "(None, 64, 11, 11)" in text and "18,496" in text
    assert "Total params: 34,826" in text


def test_train_eval_flags_control_dropout():
    model = tinycnn.Sequential([Flatten(), Dropout(0.5)], seed=0)
    x = np.ones((2, 3, 4), np.float32)
    assert np.array_equal(model.eval().forward(x), x.reshape(2, -1))
    assert (model.train().forward(x) == 0).any()


@pytest.mark.parametrize("training", [False, True])          # (True: the first pair is fused)
def test_first_conv_can_skip_input_gradient(training):
    model = convnet(seed=0)
    x = np.random.rand(2, 1, 28, 28).astype(np.float32)
    y = model.forward(x, training=training)
    assert model.backward(np.ones_like(y), need_dx=False) is None
    assert model.backward(np.ones_like(y)).shape == x.shape


def test_integer_input_is_refused_with_advice():
    with pytest.raises(TypeError, match="scale images first"):
        convnet().forward(np.zeros((1, 1, 28, 28), np.uint8))


def test_backend_switch_runs_whole_model_on_reference_kernels():
    model = convnet(seed=0)
    x = np.random.rand(3, 1, 28, 28).astype(np.float32)
    fast = model.forward(x)
    tinycnn.set_backend("numpy")
    try:
        ref = model.forward(x)
    finally:
        tinycnn.set_backend("numba")
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        tinycnn.set_backend("cuda")
