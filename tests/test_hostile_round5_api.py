"""Round 5 of hostile input, the Python API: every mistake is refused with a message that
names it, before the caller's model or arrays change and before anything is compiled or
trained; no NaN, broadcast or wrapped index passes for an answer."""
import math
import os
import re

import numpy as np
import pytest

import tinycnn
from tinycnn import datasets, metrics, optim, schedules, train, warmup
from tinycnn.augment import RandomAffine
from tinycnn.datasets import DownloadError
from tinycnn.io import load_checkpoint
from tinycnn.layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
                            MaxPool2D, ReLU, Sigmoid, Tanh)
from tinycnn.losses import SoftmaxCrossEntropy

from test_hostile_round4_train import tiny_data, tiny_model     # 40 + 10 examples of 1x4x4, 3 classes


def weights(model):
    return [p.copy() for _, _, p, _ in model.parameters()]


def same_weights(model, before):
    return all(p.dtype == b.dtype and np.array_equal(p, b) for (_, _, p, _), b in zip(model.parameters(), before))


def tiny_fit(model, optimizer=None, x=None, y=None, **kw):
    x0, y0, _ = tiny_data()
    optimizer = optimizer or optim.Adam(model, lr=1e-2)
    return train.fit(model, SoftmaxCrossEntropy(), optimizer, x0 if x is None else x, y0 if y is None else y,
                     batch_size=8, progress=False, log=None, **kw)


@pytest.fixture
def no_compiling(monkeypatch):
    """fit must refuse before it compiles: compiling is the first thing it does after its checks."""
    def compile_for(*args, **kwargs):
        raise AssertionError("fit compiled before refusing")
    monkeypatch.setattr(warmup, "compile_for", compile_for)


# -- D3: model.to(int) truncated the weights for good -------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, bool, np.float16, "int8", None, "no-such-type"])
def test_to_refuses_every_dtype_but_float32_and_float64_before_casting(dtype):
    model = tinycnn.Sequential([Flatten(), Dense(16, 3), BatchNorm1D(3)], input_shape=(1, 4, 4), seed=0)
    model.layers[1].params["W"] *= 10               # values an int cast would truncate
    before = weights(model)
    state = model.layers[2].state["running_var"].copy()
    with pytest.raises(TypeError, match=r"^Sequential.to: dtype must be float32 or float64, got .* would "
                                        r"truncate the weights for good\); use np.float32 .* or np.float64$"):
        model.to(dtype)
    assert same_weights(model, before)
    assert model.layers[2].state["running_var"].dtype == np.float32
    np.testing.assert_array_equal(model.layers[2].state["running_var"], state)
    layer = Dense(4, 2)
    W = layer.params["W"]
    with pytest.raises(TypeError, match=r"^Dense.to: dtype must be float32 or float64"):
        layer.to(dtype)
    assert layer.params["W"] is W and W.dtype == np.float32


# -- S1: an optimiser made before model.to(...) trained nothing, silently ---------------------
def test_to_the_same_dtype_keeps_the_arrays_so_an_earlier_optimiser_still_trains(numpy_backend):
    model = tiny_model()
    arrays = [(p, g) for _, _, p, g in model.parameters()]
    optimizer = optim.SGD(model, lr=0.5)
    assert model.to(np.float32) is model and model.to("float32") is model
    assert all(p is p0 and g is g0 for (_, _, p, g), (p0, g0) in zip(model.parameters(), arrays))
    history = tiny_fit(model, optimizer, epochs=3)
    assert history["train_loss"][-1] < history["train_loss"][0] - 0.01      # it learns


def test_fit_refuses_an_optimiser_made_for_other_arrays(numpy_backend, no_compiling):
    model = tiny_model()
    stale = optim.Adam(model)
    model.to(np.float64)                        # new arrays: the optimiser holds the old ones
    before = weights(model)
    message = (r"^fit: the optimiser was made for other arrays: its dense_1.W is not this model's \(a "
               r"model.to\(...\) that changes the dtype, or reset_parameters, gives the model new arrays\). "
               r"Make it after model.to\(...\), or for this model: Adam\(model, ...\)$")
    with pytest.raises(ValueError, match=message):
        tiny_fit(model, stale, x=tiny_data()[0].astype(np.float64))
    with pytest.raises(ValueError, match=message):
        tiny_fit(model, optim.Adam(tiny_model()), x=tiny_data()[0].astype(np.float64))
    assert same_weights(model, before)


def test_an_optimiser_of_a_part_of_the_model_still_trains_that_part(numpy_backend):
    model = tiny_model()
    b = model.layers[1].params["b"].copy()
    W = model.layers[1].params["W"].copy()
    tiny_fit(model, optim.SGD([item for item in model.parameters() if item[1] == "W"], lr=0.5))
    assert np.array_equal(model.layers[1].params["b"], b)          # frozen
    assert not np.array_equal(model.layers[1].params["W"], W)


# -- D4: fit checked some arguments only after training --------------------------------------
def bad_fit_arguments(tmp_path):
    x, y, (xv, yv) = tiny_data()
    y_neg = y.copy()
    y_neg[30] = -1
    return [
        ({"y": y_neg}, ValueError,
         "fit: training data labels: label -1 at index 30 is not one of the classes 0..2 (the model's 3 outputs)"),
        ({"validation": (xv, np.r_[yv[:4], -2, yv[5:]])}, ValueError,
         "fit: validation data labels: label -2 at index 4 is not one of the classes 0..2 (the model's 3 outputs)"),
        ({"validation": (xv, yv.astype(float))}, ValueError,
         "fit: validation data labels must be integer class labels of shape (N,), one per example, "
         "got float64 of shape (10,)"),
        ({"validation": (xv, yv > 0)}, ValueError,
         "fit: validation data labels must be integer class labels of shape (N,), one per example, "
         "got bool of shape (10,)"),
        ({"y": y.astype(np.float32)}, ValueError, "fit: training data labels must be integer class labels of shape (N,)"),
        ({"validation": ((xv * 255).astype(np.uint8), yv)}, TypeError,
         "fit: validation data must be floating point, got uint8; scale images first "
         "(model.preprocess(images) applies the model's own recipe)"),
        ({"validation": (xv[:, :, :2], yv)}, ValueError,
         "fit: validation data has examples of shape (1, 2, 4), the training data (1, 4, 4); "
         "prepare both the same way"),
        ({"checkpoint": str(tmp_path)}, ValueError,
         f"fit: checkpoint {tmp_path} is a folder, not a file; give the path of a file to write, "
         "e.g. checkpoint='run/checkpoint.npz'"),
        ({"checkpoint": tmp_path / "no-such-folder" / "ckpt.npz"}, ValueError,
         f"fit: checkpoint {tmp_path / 'no-such-folder' / 'ckpt.npz'}: its folder "
         f"{tmp_path / 'no-such-folder'} does not exist; create it first (os.makedirs) or choose another path"),
        ({"checkpoint": 3}, TypeError, "fit: checkpoint must be a file path, got int 3"),
    ] + [
        ({"validation": (xv, yv), "early_stopping": bad}, ValueError,
         f"fit: early_stopping must be a whole number of epochs >= 1 (None or 0: no early stopping), got {bad!r}")
        for bad in ("2", -1, 0.5, True)          # (0, like None, turns it off: test_api_user)
    ] + [
        ({"schedule": 1e-3}, TypeError, "fit: schedule must be a callable (step, total_steps) -> lr"),
    ]


def test_fit_refuses_bad_arguments_before_compiling_or_training(numpy_backend, no_compiling, tmp_path):
    model = tiny_model()
    before = weights(model)
    for kwargs, kind, message in bad_fit_arguments(tmp_path):
        with pytest.raises(kind) as err:
            tiny_fit(model, epochs=2, **kwargs)
        assert str(err.value).startswith(message), (kwargs, str(err.value))
    assert same_weights(model, before)
    assert os.listdir(tmp_path) == []            # no checkpoint, no folder made, no probe left behind


def test_fit_refuses_a_checkpoint_folder_it_cannot_write(numpy_backend, no_compiling, tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        # (root writes through chmod; /sys is read-only to root too)
        folder = next((str(f) for f in (read_only, "/sys") if os.path.isdir(f) and not _can_write(f)), None)
        if folder is None:
            pytest.skip("no folder this user cannot write in")
        model = tiny_model()
        before = weights(model)
        path = os.path.join(folder, "ckpt.npz")
        with pytest.raises(ValueError, match=re.escape(f"fit: checkpoint {path}: cannot write in its folder "
                                                       f"{folder} (") + r".*\); choose another path$"):
            tiny_fit(model, checkpoint=path)
        assert same_weights(model, before)
    finally:
        read_only.chmod(0o700)


def _can_write(folder):
    try:
        tinycnn.fileutil.check_writable(folder)
        return True
    except OSError:
        return False


# -- S2: learning rates from schedules were never checked ------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda: schedules.Cosine(-0.5), "Cosine: lr must be > 0 and finite, got -0.5"),
    (lambda: schedules.Cosine(float("nan")), "Cosine: lr must be > 0 and finite, got nan"),
    (lambda: schedules.Cosine(0.1, min_lr=-0.01), "Cosine: min_lr must be in [0, 0.1], got -0.01"),
    (lambda: schedules.Cosine(0.1, min_lr=0.2), "Cosine: min_lr must be in [0, 0.1], got 0.2"),
    (lambda: schedules.Cosine(0.1, warmup=-1), "Cosine: warmup must be a whole number of steps >= 0, got -1"),
    (lambda: schedules.StepDecay(0.1, 1, gamma=-1), "StepDecay: gamma must be in (0, 1], got -1"),
    (lambda: schedules.StepDecay(0.1, 0), "StepDecay: every must be a whole number of steps >= 1, got 0"),
    (lambda: schedules.StepDecay(0.1, 2.5), "StepDecay: every must be a whole number of steps >= 1, got 2.5"),
    (lambda: schedules.StepDecay(0, 1), "StepDecay: lr must be > 0 and finite, got 0"),
    (lambda: schedules.OneCycle(float("nan")), "OneCycle: max_lr must be > 0 and finite, got nan"),
    (lambda: schedules.OneCycle(float("inf")), "OneCycle: max_lr must be > 0 and finite, got inf"),
    (lambda: schedules.OneCycle(0.1, div=0), "OneCycle: div must be >= 1 and finite, got 0"),
    (lambda: schedules.OneCycle(0.1, final_div=-5), "OneCycle: final_div must be >= 1 and finite, got -5"),
    (lambda: schedules.OneCycle(0.1, pct_start=1), "OneCycle: pct_start must be in (0, 1), got 1"),
    (lambda: schedules.Constant("fast"), "Constant: lr must be > 0 and finite, got 'fast'"),
])
def test_schedules_check_their_arguments(make, message):
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        make()


def test_schedules_still_give_their_rates():
    assert math.isclose(schedules.StepDecay(1.0, every=10, gamma=0.5)(25, 100), 0.25)
    assert schedules.Cosine(0.1, min_lr=0.1)(5, 10) == 0.1
    assert repr(schedules.OneCycle(3e-3)) == "OneCycle(0.003, pct_start=0.25, div=25, final_div=10000)"


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf"), None])     # (0 is allowed: test_api_user)
def test_fit_refuses_a_bad_learning_rate_from_a_schedule_naming_it_and_the_step(numpy_backend, bad):
    def schedule(step, total_steps):
        return 1e-2 if step < 3 else bad
    model = tiny_model()
    with pytest.raises(ValueError, match=re.escape(f"gave the learning rate {bad!r} for epoch 1, step 4 (called as "
                                                   "schedule(3, 5)); a learning rate must be a finite number >= 0")):
        tiny_fit(model, schedule=schedule)
    with pytest.raises(ValueError, match=r"^fit: schedule schedule gave the learning rate"):
        tiny_fit(model, schedule=schedule)


def test_weights_made_infinite_by_the_last_step_are_no_success(numpy_backend, tmp_path):
    """The loss is checked before each update: the last one was never checked."""
    model = tiny_model()
    with pytest.raises(tinycnn.TrainingDiverged, match=r"^the weights of dense_1 \(W\) became NaN or infinite in "
                                                       r"epoch 1 \(lr 1e\+39\); try a lower learning rate.$"):
        with np.errstate(over="ignore", invalid="ignore"):
            tiny_fit(model, schedule=lambda step, total: 1e-2 if step < total - 1 else 1e39)
    # With a checkpoint: the last good one is named, and not replaced by the broken weights.
    path = tmp_path / "ckpt.npz"
    with pytest.raises(tinycnn.TrainingDiverged, match=re.escape(f"in epoch 2 (lr 1e+39); try a lower learning "
                                                                 f"rate. The last good checkpoint is {path}.")):
        with np.errstate(over="ignore", invalid="ignore"):
            tiny_fit(tiny_model(), epochs=2, checkpoint=path,
                     schedule=lambda step, total: 1e-2 if step < total - 1 else 1e39)
    saved, _, state = load_checkpoint(path)
    assert state["epoch"] == 1 and all(np.isfinite(p).all() for _, _, p, _ in saved.parameters())


# -- S3: evaluate returned NaN and nonsense ----------------------------------------------------
def test_evaluate_refuses_nan_outputs_bad_lengths_and_batch_sizes(numpy_backend):
    x, y, _ = tiny_data()
    model, loss = tiny_model(), SoftmaxCrossEntropy()
    broken = tiny_model()
    broken.layers[1].params["W"][0, 0] = np.nan
    with pytest.raises(FloatingPointError, match=r"^evaluate: the model's output is NaN or infinite for 40 of the "
                                                 r"40 inputs from index 0 \(first: index 0\); its weights are broken"):
        train.evaluate(broken, loss, x, y)
    cases = [
        ((x[:5], y), {}, "evaluate: x has 5 inputs but 40 labels"),
        ((x[:0], y[:0]), {}, "evaluate: x is empty"),
        ((x, np.r_[y[:-1], -1]), {}, "evaluate: y labels: label -1 at index 39 is not one of the classes 0..2 (the model's 3 outputs)"),
        ((x, y.astype(float)), {}, "evaluate: y labels must be integer class labels of shape (N,), one per example"),
    ] + [((x, y), {"batch_size": bad}, f"evaluate: batch_size must be a whole number >= 1, got {bad!r}")
         for bad in (-1, 0, 2.5, float("nan"), "8")]
    for args, kwargs, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            train.evaluate(model, loss, *args, **kwargs)
    with pytest.raises(TypeError, match=r"^evaluate: x must be floating point, got uint8"):
        train.evaluate(model, loss, (x * 255).astype(np.uint8), y)
    assert train.evaluate(model, loss, x, y, batch_size=np.int64(7)) == pytest.approx(train.evaluate(model, loss, x, y))


# -- S6: float64 data past float32's range ------------------------------------------------------
def test_data_beyond_the_models_float_range_is_refused_up_front(numpy_backend, no_compiling):
    x, y, (xv, yv) = tiny_data()
    x64 = x.astype(np.float64)
    x64[5, 0, 0, 0] = 1e39
    x64[9, 0, 1, 1] = -1e300
    model = tiny_model()
    before = weights(model)
    message = ("fit: training data has values beyond float32's range (+-3.4e+38), the model's dtype, where they "
               "become infinite (2 examples, the first at index 5); scale the data")
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        tiny_fit(model, x=x64)
    with pytest.raises(ValueError, match=r"^fit: validation data has values beyond float32's range"):
        tiny_fit(model, validation=(x64[:10], y[:10]))
    with pytest.raises(ValueError, match=r"^evaluate: x has values beyond float32's range"):
        train.evaluate(model, SoftmaxCrossEntropy(), x64, y)
    assert same_weights(model, before)
    # In a float64 model those values are numbers like any other.
    model.to(np.float64)
    assert np.isfinite(train.evaluate(model, SoftmaxCrossEntropy(), x64 * 1e-300, y)[0])


# -- S7: metrics and data helpers broadcast or wrapped ------------------------------------------
def test_metrics_refuse_shapes_ks_and_labels_that_do_not_fit():
    rng = np.random.default_rng(0)
    p = rng.random((5, 10))
    y = rng.integers(0, 10, 5)
    cases = [
        (lambda: metrics.top_k_accuracy(y[:, None], p, 3),
         "top_k_accuracy: y_true must be integer class labels of shape (N,), one per example, got int64 of shape (5, 1)"),
        (lambda: metrics.top_k_accuracy(y[:1], p), "top_k_accuracy: 1 labels but 5 rows of probabilities"),
        (lambda: metrics.top_k_accuracy(y, p[0]), "top_k_accuracy: proba must be numbers of shape (N, K)"),
        (lambda: metrics.top_k_accuracy(np.r_[y[:4], 10], p),
         "top_k_accuracy: y_true: label 10 at index 4 is not one of the classes 0..9"),
        (lambda: metrics.top_k_accuracy(y, np.where(np.eye(5, 10) > 0, np.nan, p)),
         "top_k_accuracy: proba has NaN or infinite values (the first in row 0)"),
        (lambda: metrics.top_k_accuracy(y[:0], p[:0]), "top_k_accuracy: y_true are empty"),
        (lambda: metrics.accuracy([], []), "accuracy: no labels: there is nothing to score"),
        (lambda: metrics.confusion_matrix(np.r_[y, 10], np.r_[y, 3], 10),
         "confusion_matrix: y_true: label 10 at index 5 is not one of the classes 0..9"),
        (lambda: metrics.confusion_matrix(np.r_[y, 3], np.r_[y, -1], 10),
         "confusion_matrix: y_pred: label -1 at index 5 is not one of the classes 0..9"),
        (lambda: metrics.confusion_matrix(np.r_[y, -1], np.r_[y, 3]),
         "confusion_matrix: y_true: label -1 at index 5 is not a class (0 or more)"),
        (lambda: metrics.confusion_matrix(y, y[:3], 10), "confusion_matrix: 5 labels but 3 predictions"),
        (lambda: metrics.misclassified(y[:1], p), "misclassified: 1 labels but 5 rows of probabilities"),
        (lambda: datasets.one_hot([-1, 2], 3), "one_hot: labels: label -1 at index 0 is not one of the classes 0..2"),
        (lambda: datasets.one_hot([0, 3], 3), "one_hot: labels: label 3 at index 1 is not one of the classes 0..2"),
        (lambda: datasets.one_hot([0.5], 3), "one_hot: labels must be integer class labels of shape (N,), one per example, got float64"),
        (lambda: datasets.standardize(p, 0, float("nan")), "standardize: std must be > 0 and finite, got nan"),
        (lambda: datasets.standardize(p, float("inf"), 1), "standardize: mean must be a finite number, got inf"),
        (lambda: datasets.standardize(np.where(np.eye(5, 10) > 0, np.nan, p)),
         "standardize: x has 5 NaN or infinite values (the first at index (0, 0))"),
    ]
    for call, message in cases + [(lambda k=k: metrics.top_k_accuracy(y, p, k),
                                   f"top_k_accuracy: k must be a whole number from 1 to the number of classes "
                                   f"(10), got {k!r}") for k in (-1, 0, 2.5, 11, True)]:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            call()
    # What was right still is.
    assert metrics.top_k_accuracy(y, p, 10) == 1.0
    assert metrics.confusion_matrix(y, y).trace() == 5
    np.testing.assert_array_equal(datasets.one_hot(np.array([2, 0], np.uint8), 3), [[0, 0, 1], [1, 0, 0]])


# -- S8: preprocess divided every integer dtype by 255 ------------------------------------------
def test_preprocess_scales_by_the_dtype_and_refuses_unknown_scales():
    model = tinycnn.Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, 1, 2] = True
    np.testing.assert_array_equal(model.preprocess(mask), mask[:, None].astype(np.float32))
    assert model.preprocess(np.full((1, 4, 4), 255, np.uint8)).max() == 1.0
    assert model.preprocess(np.full((1, 4, 4), 51, np.int64)).max() == np.float32(51) / 255   # 8-bit values
    with pytest.raises(ValueError, match=re.escape("preprocess: uint16 pixels from 0 to 60000 are not 8-bit values "
                                                   "(0..255); scale them to [0, 1] floats first, e.g. images / "
                                                   "65535 for 16-bit images")):
        model.preprocess(np.r_[np.zeros((1, 4, 4), np.uint16), np.full((1, 4, 4), 60000, np.uint16)])
    with pytest.raises(ValueError, match=r"^preprocess: int32 pixels from -1 to 0 are not 8-bit values"):
        model.preprocess(-np.eye(4, dtype=np.int32)[None])


# -- S9: backward took a dy of the wrong shape ----------------------------------------------------
LAYERS = [
    (lambda: ReLU(), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: LeakyReLU(), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: Sigmoid(), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: Tanh(), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: MaxPool2D(2), (2, 3, 8, 8), (2, 3, 4, 4)),
    (lambda: AvgPool2D(2), (2, 3, 8, 8), (2, 3, 4, 4)),
    (lambda: Conv2D(3, 2, 3, activation="relu"), (2, 3, 8, 8), (2, 2, 6, 6)),
    (lambda: Conv2D(3, 2, 3), (2, 3, 8, 8), (2, 2, 6, 6)),
    (lambda: Dense(6, 4), (2, 6), (2, 4)),
    (lambda: Flatten(), (2, 3, 2, 2), (2, 12)),
    (lambda: Dropout(0.5), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: BatchNorm2D(3), (2, 3, 4, 4), (2, 3, 4, 4)),
    (lambda: BatchNorm1D(3), (4, 3), (4, 3)),
]


@pytest.mark.parametrize("make, x_shape, y_shape", LAYERS)
def test_backward_refuses_a_dy_of_another_shape(numpy_backend, make, x_shape, y_shape):
    layer = make()
    rng = np.random.default_rng(0)
    for training in (True, False):
        if isinstance(layer, Dropout) and not training:
            continue            # (eval: the identity, dx = dy; the layer before it checks the shape)
        y = layer.forward(rng.standard_normal(x_shape).astype(np.float32), training=training)
        assert y.shape == y_shape
        params = {k: v.copy() for k, v in layer.grads.items()}
        wrong = [(1, *y_shape[1:]), y_shape[:-1] + (y_shape[-1] - 1,), y_shape[::-1], y_shape[1:]]
        for shape in wrong:
            if shape == y_shape:
                continue
            with pytest.raises(ValueError, match="^" + re.escape(
                    f"{layer.name}.backward: dy must be the gradient of the last forward pass's output, an array "
                    f"of shape {y_shape}, got shape {shape}") + "$"):
                layer.backward(np.ones(shape, np.float32))
        with pytest.raises(ValueError, match=re.escape(f"of shape {y_shape}, got a list")):
            layer.backward(np.ones(y_shape).tolist())
        assert all(np.array_equal(layer.grads[k], v) for k, v in params.items())    # no gradient written
        assert layer.backward(np.ones(y_shape, np.float32)).shape == x_shape


@pytest.mark.parametrize("dy_shape", [(2, 3, 3, 4), (1, 3, 4, 4)])
def test_maxpool_backward_on_the_fast_kernels_refuses_a_dy_of_another_shape(dy_shape):
    """The fast kernel read only the part of dy it expected and returned a full-size dx."""
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numba")
    try:
        pool = MaxPool2D(2)
        pool.forward(np.random.default_rng(0).random((2, 3, 8, 8), dtype=np.float32), training=True)
        with pytest.raises(ValueError, match=re.escape(f"MaxPool2D.backward: dy must be the gradient of the last "
                                                       f"forward pass's output, an array of shape (2, 3, 4, 4), got "
                                                       f"shape {dy_shape}")):
            pool.backward(np.ones(dy_shape, np.float32))
    finally:
        tinycnn.set_backend(previous)


def test_a_model_backward_still_runs_through_its_layers(numpy_backend):
    model = tinycnn.Sequential([Conv2D(1, 2, 3, activation="relu"), MaxPool2D(2), BatchNorm2D(2), Dropout(0.2),
                                Flatten(), Dense(8, 3)], input_shape=(1, 6, 6), seed=0)
    logits = model.forward(np.random.default_rng(0).random((4, 1, 6, 6), dtype=np.float32), training=True)
    assert model.backward(np.ones_like(logits)).shape == (4, 1, 6, 6)
    with pytest.raises(ValueError, match=r"^Dense.backward: dy must be .* of shape \(4, 3\), got shape \(1, 3\)$"):
        model.backward(np.ones((1, 3), np.float32))


# -- T4: RandomAffine, download mirrors, batch sizes ---------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"max_rotation": float("nan")}, "RandomAffine: max_rotation must be >= 0 and finite, got nan"),
    ({"max_shift": -1}, "RandomAffine: max_shift must be >= 0 and finite, got -1"),
    ({"max_shear": 90}, "RandomAffine: max_shear must be in [0, 90), got 90"),
    ({"scale": (0, 0)}, "RandomAffine: scale[0] must be > 0 and finite, got 0"),
    ({"scale": (1.1, 0.9)}, "RandomAffine: scale[1] must be >= 1.1 and finite, got 0.9"),
    ({"scale": (0.9,)}, "RandomAffine: scale must be a pair (low, high) of zoom factors, e.g. (0.9, 1.1); "
                        "(1, 1) for no zoom; got (0.9,)"),
    ({"scale": 1.0}, "RandomAffine: scale must be a pair (low, high) of zoom factors"),
])
def test_random_affine_checks_its_arguments_when_made(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        RandomAffine(**kwargs)


def test_one_mirror_as_a_string_is_one_mirror_and_retries_must_be_at_least_one(tmp_path):
    url = "http://127.0.0.1:9/x.gz"                  # the discard port: refused at once
    with pytest.raises(DownloadError) as err:
        datasets.download_file(url, tmp_path / "x.gz", retries=1, backoff=0, progress=False)
    lines = str(err.value).splitlines()
    assert lines[0] == "could not download x.gz; every mirror failed:"
    assert len(lines) == 2 and lines[1].startswith(f"  - {url}: ")
    for bad in (0, -1, 1.5, None):
        with pytest.raises(ValueError, match=re.escape(f"download_file: retries must be a whole number of attempts "
                                                       f"per mirror, >= 1, got {bad!r}")):
            datasets.download_file([url], tmp_path / "x.gz", retries=bad)
    assert os.listdir(tmp_path) == []
    with pytest.raises(DownloadError) as err:
        datasets.load_mnist(data_dir=tmp_path, mirrors="http://127.0.0.1:9/mnist", retries=1, backoff=0,
                            progress=False)
    failed = [line for line in str(err.value).splitlines() if line.startswith("  - ")]
    assert failed and all(line.startswith("  - http://127.0.0.1:9/mnist/") for line in failed), failed


def test_batch_sizes_that_are_not_whole_numbers_are_named(numpy_backend):
    x, y, _ = tiny_data()
    model = tiny_model()
    for bad in (2.5, float("nan"), 0, "8"):
        with pytest.raises(ValueError, match=re.escape(f"predict_proba: batch_size must be a whole number >= 1, "
                                                       f"got {bad!r}")):
            model.predict_proba(x, batch_size=bad)
    with pytest.raises(ValueError, match=r"^evaluate: batch_size must be a whole number >= 1, got 2.5$"):
        train.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=2.5)
    assert model.predict_proba(x, batch_size=np.int32(7)).shape == (40, 3)
