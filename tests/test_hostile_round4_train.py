"""Round 4 of hostile input, the trainer's part: a Ctrl-C with no checkpoint path must not
replace a file; a damaged or hand-edited checkpoint __train__ is refused before any work,
naming the field; text from a checkpoint reaches the terminal escaped."""
import json
import os
import signal

import numpy as np
import pytest

import tinycnn
from tinycnn import optim, run, train
from tinycnn.io import load_checkpoint
from tinycnn.layers import Dense, Flatten
from tinycnn.losses import SoftmaxCrossEntropy

STEPS = 5           # 40 images in batches of 8


def tiny_data():
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 50)
    return x[:40], y[:40], (x[40:], y[40:])


def tiny_model():
    return tinycnn.Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)


def tiny_fit(model, optimizer=None, **kw):
    """Two epochs of 5 steps, with validation (so best_val_loss is a number)."""
    x, y, validation = tiny_data()
    optimizer = optimizer or optim.Adam(model, lr=1e-2)
    return train.fit(model, SoftmaxCrossEntropy(), optimizer, x, y, epochs=2, batch_size=8,
                     validation=validation, progress=False, log=None, **kw)


def ctrl_c_at(n):
    """An augment callback that presses Ctrl-C during the n-th step (from 1): fit saves
    after that step, at (epoch, step) = divmod(n, STEPS)."""
    calls = {"n": 0}

    def augment(xb, rng):
        calls["n"] += 1
        if calls["n"] == n:
            signal.raise_signal(signal.SIGINT)      # delivered now, to fit's handler
        return xb
    return augment


def weights(model):
    return [p.copy() for _, _, p, _ in model.parameters()]


# -- 1. Ctrl-C with no checkpoint path ----------------------------------------------------
def test_ctrl_c_without_a_checkpoint_path_never_replaces_a_file(tmp_path, monkeypatch):
    """fit() saved to ./interrupted-checkpoint.npz whatever was there: a user's file, or the
    checkpoint of an earlier interrupted run. Now it takes the first free name."""
    monkeypatch.chdir(tmp_path)
    notes = b"my precious notes\n"
    (tmp_path / "interrupted-checkpoint.npz").write_bytes(notes)
    os.symlink("elsewhere.npz", "interrupted-checkpoint-2.npz")      # dangling: not followed either
    with pytest.raises(tinycnn.TrainingInterrupted) as err:
        tiny_fit(tiny_model(), augment=ctrl_c_at(3))
    assert err.value.checkpoint == "interrupted-checkpoint-3.npz"
    assert "checkpoint saved to interrupted-checkpoint-3.npz" in str(err.value)
    assert "resume='interrupted-checkpoint-3.npz'" in str(err.value)
    assert (tmp_path / "interrupted-checkpoint.npz").read_bytes() == notes
    assert os.readlink("interrupted-checkpoint-2.npz") == "elsewhere.npz"
    assert not os.path.lexists("elsewhere.npz")
    _, _, state = load_checkpoint("interrupted-checkpoint-3.npz")
    assert (state["epoch"], state["step"]) == (0, 3)
    # A second interrupted run keeps the first one's checkpoint too.
    with pytest.raises(tinycnn.TrainingInterrupted) as err:
        tiny_fit(tiny_model(), augment=ctrl_c_at(7))
    assert err.value.checkpoint == "interrupted-checkpoint-4.npz"
    assert load_checkpoint("interrupted-checkpoint-3.npz")[2]["step"] == 3
    assert load_checkpoint("interrupted-checkpoint-4.npz")[2]["step"] == 2
    assert (tmp_path / "interrupted-checkpoint.npz").read_bytes() == notes


def test_a_failed_interrupt_save_leaves_no_empty_file(tmp_path, monkeypatch):
    """The free name is reserved by creating it empty; a save that fails removes it again."""
    monkeypatch.chdir(tmp_path)

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(train, "save_checkpoint", full_disk)
    with pytest.raises(OSError, match="No space left"):
        tiny_fit(tiny_model(), augment=ctrl_c_at(2))
    assert os.listdir(tmp_path) == []


# -- 2. A damaged training state: refused before any work, naming the field ---------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{"mid": Ctrl-C at epoch 2, step 3; "last": Ctrl-C after epoch 1's last step (step ==
    steps_per_epoch, as the saver writes it); "end": the finished run}, and the finished
    run's weights."""
    folder = tmp_path_factory.mktemp("checkpoints")
    paths = {name: folder / f"{name}.npz" for name in ("mid", "last", "end")}
    for name, n in (("mid", STEPS + 3), ("last", STEPS)):
        with pytest.raises(tinycnn.TrainingInterrupted, match=f"step {n - STEPS * (n > STEPS)}"):
            tiny_fit(tiny_model(), checkpoint=paths[name], augment=ctrl_c_at(n))
    reference = tiny_model()
    tiny_fit(reference, checkpoint=paths["end"])
    return paths, weights(reference)


def test_a_checkpoint_from_an_epochs_last_step_resumes_exactly(checkpoints):
    """Why step == steps_per_epoch stays allowed: a Ctrl-C at an epoch's last step saves it,
    and the resumed run still reaches the uninterrupted run's weights bit for bit."""
    paths, reference = checkpoints
    state = load_checkpoint(paths["last"])[2]
    assert (state["epoch"], state["step"], state["steps_per_epoch"]) == (0, STEPS, STEPS)
    for name in ("last", "mid"):
        model = tiny_model()
        history = tiny_fit(model, resume=paths[name])
        assert history["epoch"] == [1, 2] and len(history["grad_norm"]["dense_1"]) == 2
        for got, want in zip(weights(model), reference):
            np.testing.assert_array_equal(got, want)


DELETE = object()


def edited(source, target, field, value, *more):
    """A copy of checkpoint `source` at `target` with __train__ field `field` (dotted: a
    nested one) set to `value` (DELETE: removed), and so on for each further pair in `more`."""
    with np.load(source) as data:
        arrays = {k: data[k] for k in data.files}
    state = json.loads(str(arrays["__train__"]))
    for field, value in zip((field, *more[::2]), (value, *more[1::2])):
        *parents, last = field.split(".")
        where = state
        for key in parents:
            where = where[key]
        if value is DELETE:
            del where[last]
        else:
            where[last] = value
    arrays["__train__"] = np.array(json.dumps(state))
    np.savez(target, **arrays)
    return target


def test_an_old_checkpoint_from_an_epochs_last_step_still_resumes(checkpoints, tmp_path):
    """A checkpoint from before the gradient norms were recorded has no sums.steps: resumed
    after an epoch's last step, that epoch's mean norm is left out (it divided by 0)."""
    path = edited(checkpoints[0]["last"], tmp_path / "old.npz", "sums.steps", DELETE, "sums.grad_norm", DELETE,
                  "history.grad_norm", DELETE, "history.grad_norm_steps", DELETE)
    history = tiny_fit(tiny_model(), resume=path)
    assert history["epoch"] == [1, 2] and len(history["grad_norm"]["dense_1"]) == 1


@pytest.mark.parametrize("base, field, value, why", [
    # the report's cases A-D, on real checkpoints:
    ("last", "sums.seen", 0, "sums.seen is 0 at step 5"),                       # was a ZeroDivisionError
    ("mid", "sums.grad_norm", [], "sums.grad_norm must have one entry per layer with parameters "
                                  "(dense_1), got []"),                        # TypeError after 2 steps
    ("mid", "best_val_loss", "x", "best_val_loss must be a number, got 'x'"),    # TypeError after the epoch
    ("mid", "history.seconds", [], "history.seconds must have one entry per epoch done (1), got 0"),
    # and the other fields fit() or the run's summary and figures read:
    ("mid", "history.seconds", [0.0], "history.seconds must be > 0 and finite, got [0.0]"),
    ("mid", "history.val_loss", [1.0, 2.0], "history.val_loss must have one entry per epoch done (1), got 2"),
    ("mid", "history.epoch", [2], "history.epoch must count the epochs done (1 to 1), got [2]"),
    ("mid", "history.train_acc", ["x"], "history.train_acc must hold numbers, got 'x'"),
    ("mid", "history.grad_norm", [], "history.grad_norm must have one entry per layer with parameters"),
    ("mid", "history.grad_norm.dense_1", 0.5, "history.grad_norm.dense_1 must be a list, got 0.5"),
    ("mid", "history.grad_norm.dense_1", [1, 2, 3], "history.grad_norm.dense_1 has 3 entries for 1 epochs"),
    ("mid", "history.grad_norm_steps.epoch", [], "history.grad_norm_steps: its lists differ in length"),
    ("mid", "history.grad_norm_steps", {"epoch": []}, "history.grad_norm_steps must have one entry per layer"),
    ("mid", "sums.seen", 2.5, "sums.seen must be a whole number >= 0, got 2.5"),
    ("mid", "sums.correct", 10**6, "sums.correct (1000000) must be at most sums.seen (24)"),
    ("mid", "sums.steps", 0, "sums.steps is 0 at step 3"),
    ("mid", "sums.steps", 4, "sums.steps must be at most step (3), got 4"),
    ("mid", "sums.seconds", 0, "sums.seconds is 0 at step 3"),
    ("mid", "sums.loss", float("inf"), "sums.loss must be a finite number, got inf"),
    ("mid", "sums.grad_norm.dense_1", "1", "sums.grad_norm.dense_1 must be a finite number >= 0, got '1'"),
    ("mid", "best_val_loss", float("nan"), "best_val_loss must be a number, got nan"),
    ("mid", "best_epoch", 5, "best_epoch must be -1 to 1, got 5"),
    ("mid", "bad_epochs", "1", "bad_epochs must be a whole number, got '1'"),
    ("mid", "step", True, "step must be a whole number, got True"),
    ("end", "step", 2, "step must be 0 after the last epoch (2), got 2"),
])
def test_a_damaged_training_state_is_refused_before_any_work(checkpoints, tmp_path, monkeypatch,
                                                             base, field, value, why):
    path = edited(checkpoints[0][base], tmp_path / "damaged.npz", field, value)

    def no_work(*args, **kwargs):
        raise AssertionError("compiling or training started")
    monkeypatch.setattr(train.warmup, "compile_for", no_work)
    model = tiny_model()
    optimizer = optim.Adam(model, lr=1e-2)
    before, rng_before = weights(model), model.rng.bit_generator.state
    with pytest.raises(ValueError) as err:
        tiny_fit(model, optimizer, resume=path, augment=no_work)
    assert str(err.value).startswith(f"fit: checkpoint {path}: its training state is incomplete or "
                                     f"damaged (ValueError: {why}"), str(err.value)
    # nothing of the caller's changed: weights, optimiser, random generator
    for got, want in zip(weights(model), before):
        np.testing.assert_array_equal(got, want)
    assert optimizer.steps == 0 and optimizer.lr == 1e-2
    assert all(not b.any() for st in optimizer.state.values() for b in st.values())
    assert model.rng.bit_generator.state == rng_before


def test_a_damaged_optimizer_state_changes_nothing_either(checkpoints, tmp_path):
    """The optimiser's state is loaded last, once everything else has passed, and its own
    check comes before it changes anything: a bad RNG state no longer leaves a loaded
    optimiser behind, nor a bad optimiser state a changed model RNG."""
    for field, value in (("model_rng.state.state", "x"), ("optimizer.eps", -1.0)):
        path = edited(checkpoints[0]["mid"], tmp_path / "damaged.npz", field, value)
        model = tiny_model()
        optimizer = optim.Adam(model, lr=1e-2)
        rng_before = model.rng.bit_generator.state
        with pytest.raises(ValueError, match="its training state is incomplete or damaged"):
            tiny_fit(model, optimizer, resume=path)
        assert optimizer.steps == 0 and model.rng.bit_generator.state == rng_before


# -- 2 and 3 from the command line ---------------------------------------------------------
TRAIN = ("--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--batch-size", "256", "--no-augment",
         "--no-plots", "--quiet")


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    """checkpoint.npz of a real one-epoch `tinycnn train` run (NumPy kernels)."""
    from tinycnn import run
    folder = tmp_path_factory.mktemp("run")
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    try:
        assert run.main([*TRAIN, "--out", str(folder / "run1")]) == 0
    finally:
        tinycnn.set_backend(previous)
    return folder / "run1" / "checkpoint.npz"


def train_resume(checkpoint, out, capsys):
    """(exit status, stderr) of `tinycnn train ... --resume CHECKPOINT --out OUT`."""
    from tinycnn import run
    capsys.readouterr()
    try:
        code = run.main([*TRAIN, "--resume", str(checkpoint), "--out", str(out)], prog="tinycnn train")
    except SystemExit as exit_:         # (argparse's errors: status 2)
        code = exit_.code
    return code, capsys.readouterr().err


def test_cli_resume_from_a_damaged_history_is_one_line_before_training(numpy_backend, run_checkpoint,
                                                                        tmp_path, capsys):
    """The report's case D: a traceback from run.py's summary, after the test evaluation."""
    path = edited(run_checkpoint, tmp_path / "ck_D.npz", "history.seconds", [])
    code, err = train_resume(path, tmp_path / "out", capsys)
    assert code == 1 and "Traceback" not in err
    assert err.splitlines() == [f"tinycnn train: error: fit: checkpoint {path}: its training state is incomplete or damaged "
                                "(ValueError: history.seconds must have one entry per epoch done (1), got 0)"]
    assert not (tmp_path / "out").exists()           # the folder the run made is not left behind
    (tmp_path / "mine").mkdir()                       # one that was there before is kept
    assert train_resume(path, tmp_path / "mine", capsys)[0] == 1 and (tmp_path / "mine").is_dir()


def test_cli_prints_text_from_a_checkpoint_escaped(numpy_backend, run_checkpoint, tmp_path, capsys):
    """A checkpoint's optimizer type reached the terminal raw: it could clear the screen,
    recolour it, or forge an extra 'error:' line."""
    hostile = "\x1b[2J\x1b[31mFAKE\nerror: totally different line"
    path = edited(run_checkpoint, tmp_path / "ck_esc.npz", "optimizer.type", hostile)
    code, err = train_resume(path, tmp_path / "out", capsys)
    assert code == 1 and "\x1b" not in err and len(err.splitlines()) == 1, err
    assert r"(ValueError: state is for '\x1b[2J\x1b[31mFAKE\nerror: totally different line', not Adam)" in err
    # and argparse's one-line errors, which quote file names
    code, err = train_resume(tmp_path / "\x1b[2Jgone\n.npz", tmp_path / "out", capsys)
    assert code == 2 and "\x1b" not in err and len(err.splitlines()) == 1, err
    assert r"\x1b[2Jgone\n.npz: no such file" in err


def test_optimizer_state_type_is_shown_escaped():
    p, g = np.zeros(3, np.float32), np.zeros(3, np.float32)
    state = optim.Adam([("l", "W", p, g)]).state_dict()
    state["type"] = "Adam\x1b[0m"
    with pytest.raises(ValueError) as err:
        optim.Adam([("l", "W", p, g)]).load_state_dict(state)
    assert str(err.value) == r"state is for 'Adam\x1b[0m', not Adam"
    with pytest.raises(ValueError, match=r"^state is for SGD, not Adam$"):     # a plain name stays plain
        optim.Adam([("l", "W", p, g)]).load_state_dict(dict(state, type="SGD"))
