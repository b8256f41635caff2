"""The trainer on small slices of real-shaped data: learning, determinism, resume after
Ctrl-C, NaN detection, early stopping."""
import os
import re
import signal

import numpy as np
import pytest

import tinycnn
from tinycnn import datasets, fit, optim, schedules
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.models import convnet, lenet5


@pytest.fixture(scope="module")
def digits():
    (x, y), (xt, yt) = datasets.load_digits(image_size=28)
    prep = lambda a: datasets.add_channel_axis(datasets.standardize(datasets.to_float(a), 0.1, 0.3)[0])
    return prep(x[:384]), y[:384], prep(xt[:200]), yt[:200]


def weights(model):
    return [p.copy() for _, _, p, _ in model.parameters()]


def train(data, epochs=2, seed=0, **kw):
    x, y, xv, yv = data
    model = lenet5(seed=seed)
    opt = optim.Adam(model, lr=2e-3)
    hist = fit(model, SoftmaxCrossEntropy(), opt, x, y, epochs=epochs, batch_size=32,
               validation=(xv, yv), seed=seed, progress=False, log=None, **kw)
    return model, hist


def test_loss_falls_and_accuracy_rises(digits):
    model, hist = train(digits, epochs=3)
    assert hist["train_loss"][-1] < hist["train_loss"][0] * 0.5
    assert hist["val_acc"][-1] > 0.6                     # chance is 0.1
    assert set(hist) >= {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds", "images_per_second"}
    assert len(hist["epoch"]) == 3 and all(s > 0 for s in hist["seconds"])


def test_same_seed_same_curve_and_weights(digits):
    a, ha = train(digits, epochs=1, seed=3)
    b, hb = train(digits, epochs=1, seed=3)
    assert ha["train_loss"] == hb["train_loss"]
    for wa, wb in zip(weights(a), weights(b)):
        np.testing.assert_array_equal(wa, wb)


def test_ctrl_c_saves_and_resume_equals_uninterrupted(digits, tmp_path):
    x, y, xv, yv = digits
    sched = schedules.OneCycle(3e-3)
    common = dict(epochs=2, batch_size=32, validation=(xv, yv), seed=5, progress=False, log=None,
                  schedule=sched)

    def dropout_model():
        return convnet(seed=5)

    ref = dropout_model()
    fit(ref, SoftmaxCrossEntropy(), optim.Adam(ref), x, y, **common)

    calls = {"n": 0}

    def press_ctrl_c_at_step_17(xb, rng):
        calls["n"] += 1
        if calls["n"] == 17:                     # mid-way through epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return xb

    model = dropout_model()
    ckpt = tmp_path / "ckpt.npz"
    with pytest.raises(tinycnn.TrainingInterrupted, match="interrupted at epoch 2, step 5") as err:
        fit(model, SoftmaxCrossEntropy(), optim.Adam(model), x, y, checkpoint=str(ckpt),
            augment=press_ctrl_c_at_step_17, **common)
    assert err.value.checkpoint == str(ckpt) and ckpt.exists()
    assert "resume=" in str(err.value)

    resumed = dropout_model()
    hist = fit(resumed, SoftmaxCrossEntropy(), optim.Adam(resumed), x, y, resume=str(ckpt), **common)
    for wa, wb in zip(weights(ref), weights(resumed)):
        np.testing.assert_array_equal(wa, wb)
    assert len(hist["epoch"]) == 2


def test_nan_stops_at_once_and_keeps_last_good_checkpoint(digits, tmp_path):
    steps_per_epoch = len(digits[0]) // 32
    calls = {"n": 0}

    def poison_in_epoch_2(xb, rng):
        calls["n"] += 1
        return xb * np.float32(np.inf) if calls["n"] == steps_per_epoch + 3 else xb

    ckpt = tmp_path / "last.npz"
    with pytest.raises(tinycnn.TrainingDiverged, match=r"loss became nan at epoch 2, step 3 .*lower "
                                                       r"learning rate.*last good checkpoint is .*last.npz"):
        train(digits, epochs=3, augment=poison_in_epoch_2, checkpoint=str(ckpt))
    model, _, state = tinycnn.io.load_checkpoint(ckpt)
    assert state["epoch"] == 1
    assert all(np.isfinite(p).all() for _, _, p, _ in model.parameters())


def test_early_stopping_and_keep_best(digits):
    x, y, xv, yv = digits
    model = lenet5(seed=0)
    lines = []
    # A validation set whose labels are shuffled: its loss cannot keep improving.
    wrong = np.random.default_rng(0).permutation(yv)
    hist = fit(model, SoftmaxCrossEntropy(), optim.Adam(model, 3e-3), x, y, epochs=30, batch_size=32,
               validation=(xv, wrong), early_stopping=2, keep_best=True, progress=False, log=lines.append)
    assert len(hist["epoch"]) < 30
    assert any("early stopping" in line for line in lines)
    best = int(np.argmin(hist["val_loss"]))
    assert hist["val_loss"][best] == min(hist["val_loss"])
    loss, _ = tinycnn.evaluate(model, SoftmaxCrossEntropy(), xv, wrong)
    assert loss == pytest.approx(hist["val_loss"][best], rel=1e-5)


def test_bad_fit_arguments(digits):
    x, y, _, _ = digits
    model = lenet5()
    with pytest.raises(ValueError, match="384 inputs but 10 labels"):
        fit(model, SoftmaxCrossEntropy(), optim.Adam(model), x, y[:10])
    with pytest.raises(ValueError, match="early_stopping and keep_best need validation"):
        fit(model, SoftmaxCrossEntropy(), optim.Adam(model), x, y, keep_best=True)
    with pytest.raises(ValueError, match=r"epochs and batch_size must be whole numbers, got 1, 16.5"):
        fit(model, SoftmaxCrossEntropy(), optim.Adam(model), x, y, batch_size=16.5)
    with pytest.raises(ValueError, match=r"whole numbers, got 1.5, 128"):
        fit(model, SoftmaxCrossEntropy(), optim.Adam(model), x, y, epochs=1.5)


def _tiny_run():
    """(x, y, a new model): 40 images of 4x4, 3 classes, a one-layer model."""
    from tinycnn.layers import Dense, Flatten
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 40)
    return x, y, lambda: tinycnn.Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)


def _checkpoint_edited(tmp_path, edit):
    """A one-epoch checkpoint of _tiny_run (5 steps of 8), its training state (the JSON in
    __train__) changed by edit(state), saved as edited.npz; returns that path."""
    import json
    x, y, model = _tiny_run()
    first = model()
    fit(first, SoftmaxCrossEntropy(), optim.Adam(first), x, y, epochs=1, batch_size=8,
        checkpoint=tmp_path / "ck.npz", log=None)
    with np.load(tmp_path / "ck.npz") as data:
        arrays = {k: data[k] for k in data.files}
    state = json.loads(str(arrays["__train__"]))
    edit(state)
    arrays["__train__"] = np.array(json.dumps(state))
    np.savez(tmp_path / "edited.npz", **arrays)
    return tmp_path / "edited.npz"


@pytest.mark.parametrize("field, value, why", [
    ("epoch", 0.5, "TypeError: history, sums, epoch or step out of shape"),        # was a TypeError later
    ("step", "3", "TypeError: history, sums, epoch or step out of shape"),
    ("epoch_rng", {"bit_generator": "MT19937"}, "ValueError: state must be for a PCG64 RNG"),
    ("steps_per_epoch", None, "KeyError: 'steps_per_epoch'"),                    # was a KeyError escaping
    ("optimizer.betas", "ab", "ValueError: Adam: betas must be a pair of numbers, got 'ab'"),
    ("optimizer.eps", -1e-8, "ValueError: Adam: eps must be > 0 and finite, got -1e-08"),
])
def test_resume_from_a_damaged_training_state_names_the_checkpoint(tmp_path, field, value, why):
    """__train__ is JSON in the checkpoint: a wrong type in it is the file's fault, reported
    with the file's name (a ValueError: one line from `tinycnn train --resume`)."""
    def damage(state):
        state["epochs"] = 2
        if field.startswith("optimizer."):
            state["optimizer"][field.split(".")[1]] = value
        elif value is None:
            del state[field]
        else:
            state[field] = value
    path = _checkpoint_edited(tmp_path, damage)
    x, y, model = _tiny_run()
    again = model()
    with pytest.raises(ValueError) as err:
        fit(again, SoftmaxCrossEntropy(), optim.Adam(again), x, y, epochs=2, batch_size=8, resume=path, log=None)
    assert str(err.value) == f"fit: checkpoint {path}: its training state is incomplete or damaged ({why})"


def test_resume_on_other_data_says_so_not_that_the_checkpoint_is_damaged(tmp_path):
    """A checkpoint made mid-epoch on more data (step 4 of 5) resumed on less (2 steps an
    epoch): the step was checked against this run's epoch and the file called damaged."""
    def mid_epoch(state):
        state["epoch"], state["step"] = 0, 4                   # as a Ctrl-C at step 4 leaves it
    path = _checkpoint_edited(tmp_path, mid_epoch)
    x, y, model = _tiny_run()
    again = model()
    with pytest.raises(ValueError) as err:
        fit(again, SoftmaxCrossEntropy(), optim.Adam(again), x[:16], y[:16], epochs=1, batch_size=8,
            resume=path, log=None)
    assert str(err.value) == (f"fit: checkpoint {path} was made with 1 epoch of 5 steps, this run has 1 of 2; "
                              "resume finishes an interrupted run, with the same data, epochs and batch size. "
                              + tinycnn.train.TRAIN_FURTHER)


def test_nan_inputs_and_labels_past_the_outputs_are_refused_before_training():
    """Found up front, named with where they are: before, a NaN ended as 'loss became nan,
    try a lower learning rate' (or a silent NaN validation loss), and a bad label in a late
    batch or in the validation set was found only after the model had been updated."""
    from tinycnn.layers import Dense, Flatten
    from tinycnn.train import evaluate
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 40)
    model = tinycnn.Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)
    before = model.layers[1].params["W"].copy()
    bad_x = x.copy()
    bad_x[7, 0, 1, 2] = np.nan
    bad_x[30, 0, 0, 0] = np.inf
    cases = [
        ((bad_x, y), {}, "fit: training data has NaN or infinite values (2 examples, the first at index 7)"),
        ((x, y), {"validation": (bad_x, y)}, "fit: validation data has NaN or infinite values (2 examples"),
        ((x, np.r_[y[:-1], 5]), {}, "fit: training data labels: label 5 at index 39 is not one of the classes "
                                    "0..2 (the model's 3 outputs)"),
        ((x, y), {"validation": (x, np.r_[3, y[1:]])}, "fit: validation data labels: label 3 at index 0"),
    ]
    for (xs, ys), extra, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            fit(model, SoftmaxCrossEntropy(), optim.Adam(model), xs, ys, epochs=1, batch_size=8, log=None, **extra)
    assert np.array_equal(model.layers[1].params["W"], before)
    with pytest.raises(ValueError, match="evaluate: x has NaN or infinite values"):
        evaluate(model, SoftmaxCrossEntropy(), bad_x, y)
