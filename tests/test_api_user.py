"""What a Keras or PyTorch user meets when using tinycnn from Python (a first-time user's
report, session 20): reproducible runs of any model, clear errors for habits from other
libraries, a way to train further, custom layers that save."""
import numpy as np
import pytest

import tinycnn
from tinycnn import layers as L
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.optim import Adam


def small_data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, n)


def dropout_model(seed=None):
    return tinycnn.Sequential([L.Flatten(), L.Dense(64, 16), L.ReLU(), L.Dropout(0.5), L.Dense(16, 3)],
                              input_shape=(1, 8, 8), seed=seed)


def weights(model):
    return [p.copy() for _, _, p, _ in model.parameters()]


def test_the_same_fit_of_a_loaded_model_gives_the_same_weights(numpy_backend, tmp_path):
    """fit's docstring promised it; a model from load_model (or Sequential without a seed)
    drew its dropout masks from an unseeded generator: two runs differed by 0.007."""
    x, y = small_data()
    dropout_model(seed=1).save(tmp_path / "m.npz")
    runs = []
    for _ in range(2):
        model = tinycnn.load_model(tmp_path / "m.npz")
        tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model, 1e-2), x, y, epochs=2, batch_size=16,
                    seed=3, log=None)
        runs.append(weights(model))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    # the masks come from a generator fit made from its seed, shared by model and layer
    model = tinycnn.load_model(tmp_path / "m.npz")
    unseeded = model.rng
    tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model, 1e-2), x, y, epochs=1, batch_size=48,
                seed=4, log=None)
    fresh = np.random.default_rng([4, 2])
    fresh.random((48, 16), dtype=np.float32)           # one training batch's mask (48 x 16 units)
    assert model.rng is not unseeded and model.layers[3].rng is model.rng
    assert model.rng.bit_generator.state == fresh.bit_generator.state


def test_a_seeded_model_keeps_its_own_generator(numpy_backend):
    """A model built with a seed (every built-in one) keeps drawing from its own generator:
    the main job's runs are unchanged."""
    model = dropout_model(seed=5)
    rng = model.rng
    x, y = small_data()
    tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, epochs=1, batch_size=16, log=None)
    assert model.rng is rng and model.layers[3].rng is rng


@pytest.mark.parametrize("args, message", [
    (dict(loss="cross_entropy"), "fit: loss must be an object with forward() and backward() methods, "
                                 "e.g. tinycnn.losses.SoftmaxCrossEntropy(); got str 'cross_entropy'"),
    (dict(optimizer="adam"), "fit: optimizer must be an object with step() method, e.g. "
                             "tinycnn.optim.Adam(model, lr=1e-3); got str 'adam'"),
    (dict(validation=0.1), "fit: validation must be a pair (x_val, y_val), got float 0.1; to hold out "
                           "part of the training data, split it first (tinycnn.datasets.train_val_split)"),
])
def test_habits_from_other_libraries_get_a_message(numpy_backend, args, message):
    model = dropout_model(seed=0)
    x, y = small_data()
    call = dict(loss=SoftmaxCrossEntropy(), optimizer=Adam(model), validation=None) | args
    with pytest.raises(TypeError) as err:
        tinycnn.fit(model, call["loss"], call["optimizer"], x, y, validation=call["validation"], log=None)
    assert str(err.value) == message


def test_an_optimizer_given_the_layers_says_what_it_takes():
    model = dropout_model(seed=0)
    with pytest.raises(TypeError, match=r"must be the model itself \(e.g. Adam\(model\)\), model.parameters\(\) "
                                        r"or \(layer, name, param, grad\) tuples; item 0 is a Flatten"):
        Adam(model.layers)


@pytest.mark.parametrize("shape, fix", [((1, 8, 8), "x[None]"), ((8, 8), "x[None, None]")])
def test_one_example_instead_of_a_batch_is_named(numpy_backend, shape, fix):
    """The message gives the fix for the shape it got, and the fix works."""
    model = dropout_model(seed=0)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with pytest.raises(ValueError) as err:
        model.predict(x)
    assert str(err.value) == (f"the input has shape {shape}: one example of this model's input (1, 8, 8), "
                              f"not a batch of them; pass {fix} (a batch of one)")
    assert model.predict(eval(fix)).shape == (1,)


def test_training_further_from_a_checkpoint(numpy_backend, tmp_path):
    """resume finishes an interrupted run; a finished one says there is nothing left, and a
    resume with more epochs says how to train further, which works."""
    x, y = small_data()
    model = dropout_model(seed=0)
    checkpoint = tmp_path / "ck.npz"
    tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, epochs=2, batch_size=16,
                checkpoint=checkpoint, log=None)
    said = []
    again = dropout_model(seed=0)
    tinycnn.fit(again, SoftmaxCrossEntropy(), Adam(again), x, y, epochs=2, batch_size=16,
                resume=checkpoint, log=said.append)
    assert said[0].startswith(f"{checkpoint}: all 2 epochs of that run are done: nothing left to train. "
                              "To train further, fit the model again as a new run: "
                              "model = tinycnn.load_model(checkpoint)"), said
    with pytest.raises(ValueError, match=r"this run has 4 of 3; resume finishes an interrupted run, with the "
                                         r"same data, epochs and batch size. To train further"):
        tinycnn.fit(again, SoftmaxCrossEntropy(), Adam(again), x, y, epochs=4, batch_size=16,
                    resume=checkpoint, log=None)
    further = tinycnn.load_model(checkpoint)            # as the message says
    before = weights(further)
    history = tinycnn.fit(further, SoftmaxCrossEntropy(), Adam(further), x, y, epochs=1, batch_size=16, log=None)
    assert len(history["epoch"]) == 1 and not np.array_equal(before[0], weights(further)[0])


def test_a_layer_of_ones_own_saves_once_registered(numpy_backend, tmp_path):
    class Square(L.Layer):
        def forward(self, x, training=False):
            self.cache = x
            return x * x

        def backward(self, dy):
            return 2 * self.cache * dy

    model = tinycnn.Sequential([L.Flatten(), L.Dense(64, 3), Square()], input_shape=(1, 8, 8), seed=0)
    with pytest.raises(ValueError, match=r"layer 2 has unknown type 'Square'; known: .* \(a layer class of your "
                                         r"own: register it first, tinycnn.layers.LAYER_TYPES\['Square'\] = Square\)"):
        model.save(tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()
    tinycnn.layers.LAYER_TYPES["Square"] = Square
    try:
        model.save(tmp_path / "m.npz")
        x = small_data()[0]
        np.testing.assert_array_equal(tinycnn.load_model(tmp_path / "m.npz").predict_proba(x),
                                      model.predict_proba(x))
    finally:
        del tinycnn.layers.LAYER_TYPES["Square"]


def test_standardised_training_data_and_preprocessing_travel_together(numpy_backend, tmp_path):
    """As Sequential's and standardize's docstrings say: the numbers go in preprocessing."""
    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8), dtype=np.uint8)
    x, mean, std = tinycnn.datasets.standardize(images / 255)
    model = dropout_model(seed=0)
    model.preprocessing = {"mean": mean, "std": std}
    model.save(tmp_path / "m.npz")
    np.testing.assert_allclose(tinycnn.load_model(tmp_path / "m.npz").preprocess(images), x[:, None],
                               rtol=1e-6, atol=1e-6)


def test_conv2d_takes_same_and_valid_padding_and_names_other_activations():
    """Keras habits: padding="same" was refused as not a number; activation="tanh" said only
    that it must be relu."""
    same = L.Conv2D(1, 4, 5, padding="same")
    assert same.padding == (2, 2) and same.output_shape((1, 28, 28)) == (4, 28, 28)
    assert L.Conv2D(1, 4, (3, 5), padding="same").padding == (1, 2)
    assert L.Conv2D(1, 4, 3, padding="valid").padding == (0, 0)
    assert same.config()["padding"] == (2, 2) or list(same.config()["padding"]) == [2, 2]
    with pytest.raises(ValueError, match=r"padding='same' needs stride 1 and odd kernel sizes, got kernel_size "
                                         r"\(4, 4\), stride \(1, 1\)"):
        L.Conv2D(1, 4, 4, padding="same")
    with pytest.raises(ValueError, match="padding must be a number, a pair, 'same' or 'valid', got 'full'"):
        L.Conv2D(1, 4, 3, padding="full")
    with pytest.raises(ValueError, match=r"got 'tanh' \(for another activation, put its layer after the "
                                         r"Conv2D: tinycnn.layers.Tanh\(\)"):
        L.Conv2D(1, 4, 3, activation="tanh")


# -- a review's findings on the day's checks (session 20) ---------------------------------

def test_a_schedule_may_reach_zero(numpy_backend):
    """A rate of 0 was refused at every step: a linear decay to 0 died at the last step,
    after the model had changed, and a warm-up from 0 at the first."""
    x, y = small_data()
    for schedule in (lambda s, total: 0.1 * (1 - (s + 1) / total), lambda s, total: 0.01 * s / total):
        model = dropout_model(seed=0)
        history = tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, epochs=3, batch_size=16,
                              schedule=schedule, log=None)
        assert len(history["epoch"]) == 3
    model = dropout_model(seed=0)
    with pytest.raises(ValueError, match=r"gave the learning rate -0.1 for epoch 1, step 1 .*a learning rate "
                                         r"must be a finite number >= 0"):
        tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, schedule=lambda s, t: -0.1, log=None)


def test_validation_outputs_that_overflow_in_fit_are_divergence(numpy_backend, tmp_path):
    """Finite but huge weights after the last step: the validation pass overflowed into an
    evaluate FloatingPointError (and a traceback from tinycnn train)."""
    x, y = small_data()
    model = dropout_model(seed=0)
    with np.errstate(over="ignore"), pytest.raises(
            tinycnn.TrainingDiverged, match=r"^fit: validation: the model's output is NaN or infinite "
                                            r".*in epoch 1 \(lr 1e\+25\): try a lower learning rate"):
        tinycnn.fit(model, SoftmaxCrossEntropy(), tinycnn.optim.SGD(model, 0.1), x, y, epochs=1, batch_size=48,
                    schedule=lambda s, t: 1e25, validation=(x, y), log=None)


def test_float16_and_float64_data_are_cast_once_and_train(numpy_backend):
    """float16 data passed the checks, then failed inside augmentation's kernels."""
    x, y = small_data()
    model = dropout_model(seed=0)
    for data in (x.astype(np.float16), x.astype(np.float64)):
        tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), data, y, epochs=1, batch_size=16,
                    augment=tinycnn.augment.RandomAffine(), log=None)


@pytest.mark.parametrize("args, error, message", [
    (dict(seed=None), ValueError, "fit: seed must be a whole number >= 0, got None"),
    (dict(seed=-1), ValueError, "fit: seed must be a whole number >= 0, got -1"),
    (dict(augment="yes"), TypeError, "fit: augment must be a callable (x_batch, rng) -> x_batch"),
])
def test_seed_and_augment_are_checked_before_training(numpy_backend, args, error, message):
    x, y = small_data()
    model = dropout_model(seed=0)
    before = weights(model)
    with pytest.raises(error) as err:
        tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, log=None, **args)
    assert str(err.value).startswith(message)
    assert all(np.array_equal(a, b) for a, b in zip(before, weights(model)))


def test_early_stopping_zero_still_means_off(numpy_backend):
    x, y = small_data()
    model = dropout_model(seed=0)
    history = tinycnn.fit(model, SoftmaxCrossEntropy(), Adam(model, 1e-1), x, y, epochs=4, batch_size=16,
                          validation=(x[:8], y[:8]), early_stopping=0, log=None)
    assert len(history["epoch"]) == 4


def test_the_input_check_of_many_figures_is_not_quadratic(tmp_path):
    """predict --show compared every figure with every input through realpath: 1,000 images
    took 27 s before a single one was read."""
    import time
    from tinycnn.cli import figure_names
    from tinycnn.run import files_in_the_way
    paths = [str(tmp_path / f"{i}.png") for i in range(2000)]
    for p in paths[:50]:
        open(p, "wb").close()
    started = time.process_time()
    assert files_in_the_way("--show", str(tmp_path / "figs"), figure_names(paths), True, paths) is None
    assert time.process_time() - started < 2.0                 # (0.1 s here; 106 s before)
    name = figure_names(paths)[0]
    assert files_in_the_way("--show", str(tmp_path), [name], True, paths + [str(tmp_path / name)]) == (
        f"--show {tmp_path}: {name} is also an input, {tmp_path / name}; this would write a figure over it: "
        "give another folder")
