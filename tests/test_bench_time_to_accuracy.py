"""benchmarks/bench_time_to_accuracy.py: its clock, its verdict and its claim that tinycnn and
PyTorch train with the same recipe. Small data, no MNIST, no torch needed (the PyTorch test
is skipped without it)."""
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinycnn import run, schedules
from tinycnn.augment import RandomAffine
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.train import fit

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import bench_time_to_accuracy as bench  # noqa: E402


def small_data(n_train=48, n_test=40, seed=0):
    """Random standardised-looking 28x28 images with random labels (x_train, y_train, x_test, y_test)."""
    rng = np.random.default_rng(seed)
    images = lambda n: rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
    return images(n_train), rng.integers(0, 10, n_train), images(n_test), rng.integers(0, 10, n_test)


def test_eval_time_is_outside_the_training_clock_and_lr_follows_the_schedule():
    data = small_data()
    rec = bench.recipe("fastnet", len(data[0]))        # 48 images: batch 16, 3 steps an epoch
    steps = bench.total_steps(len(data[0]), rec.batch_size, 2)
    schedule = run.make_optimizer(rec, run.build_model(rec, (1, 28, 28), 10), steps)[1]
    seen = []

    def train_step(xb, yb, lr):
        seen.append((lr, yb.copy()))
        time.sleep(0.01)
        return 0.0

    def accuracy(x, y):
        time.sleep(0.15)
        return 0.0

    result = bench.train_to_target(train_step, accuracy, data, rec.batch_size, steps, schedule, rec.seed, None,
                                   eval_every=2, target=0.99)
    assert (rec.batch_size, steps, result["evaluations"]) == (16, 6, 3)
    assert result["eval_seconds"] >= 3 * 0.15
    assert 6 * 0.01 <= result["train_seconds"] < 0.15            # not one evaluation's sleep in it
    assert result["time_to_target"] is None and result["steps_to_target"] is None
    # The learning rate of every step is tinycnn's one cycle, rising to the recipe's lr and falling.
    lrs = [lr for lr, _ in seen]
    assert lrs == [schedules.OneCycle(rec.lr)(s, steps) for s in range(steps)]
    assert max(lrs) == pytest.approx(rec.lr) and lrs[0] < rec.lr / 20 and lrs[-1] < rec.lr / 1000
    # Each epoch visits every training image once, in a new order.
    epochs = [np.concatenate([yb for _, yb in seen[e * 3:(e + 1) * 3]]) for e in range(2)]
    for labels in epochs:
        assert sorted(labels) == sorted(data[1])
    assert not np.array_equal(epochs[0], epochs[1])


def test_time_to_target_is_the_first_evaluation_reaching_it():
    data = small_data()
    scripted = iter([0.5, 0.95, 0.93, 0.97])
    result = bench.train_to_target(lambda xb, yb, lr: 0.0, lambda x, y: next(scripted), data, 12, 8,
                                   lambda s, n: 1e-3, 0, None, eval_every=2, target=0.94)
    assert [c["step"] for c in result["curve"]] == [2, 4, 6, 8]
    assert result["steps_to_target"] == 4
    assert result["time_to_target"] == result["curve"][1]["train_seconds"]
    assert result["final_accuracy"] == 0.97
    assert result["images_per_second"] == pytest.approx(8 * 12 / result["train_seconds"])


def test_the_benchmark_trains_exactly_as_the_main_jobs_fit(numpy_backend):
    """Same batches, augmentation, learning rates and initial weights as fit() with the
    recipe: the same weights after two epochs, bit for bit."""
    data = small_data()
    x, y = data[:2]
    rec = bench.recipe("fastnet", len(x))
    steps = bench.total_steps(len(x), rec.batch_size, 2)
    make, model, schedule = bench.build("tinycnn", rec, x.shape[1:], steps)
    bench.train_to_target(*make(model), data, rec.batch_size, steps, schedule, rec.seed, RandomAffine(),
                          eval_every=steps, target=1.0)
    reference = run.build_model(rec, x.shape[1:], 10)
    optimizer, schedule = run.make_optimizer(rec, reference, steps)
    fit(reference, SoftmaxCrossEntropy(), optimizer, x, y, epochs=2, batch_size=rec.batch_size, schedule=schedule,
        seed=rec.seed, augment=RandomAffine(), progress=False, log=None)
    for ours, theirs in zip(model.layers, reference.layers):
        for name in ours.params:
            np.testing.assert_array_equal(ours.params[name], theirs.params[name])
    assert any(not np.array_equal(layer.params["W"], fresh.params["W"])        # it did train
               for layer, fresh in zip(model.layers, run.build_model(rec, x.shape[1:], 10).layers) if layer.params)


def test_worker_reports_not_reached_for_an_unreachable_target(numpy_backend):
    cfg = {"lib": "tinycnn", "arch": "fastnet", "epochs": 1, "eval_every": 2, "target": 1.0}
    result = bench.worker(cfg, data=small_data())      # random labels: 100% on the test set is out of reach
    assert result["time_to_target"] is None and result["steps_to_target"] is None
    assert (result["steps"], result["evaluations"], result["batch_size"]) == (3, 2, 16)
    assert 0 <= result["final_accuracy"] < 1
    assert result["warmup_seconds"] > 0 and result["eval_seconds"] > 0 and result["train_seconds"] > 0
    rows, best = bench.summary([{"tinycnn": result}], ["tinycnn"])
    assert best is None and rows[0]["time to target s"] is None and rows[0]["per round s"] == "not reached"


def test_summary_ratio_is_against_the_fastest_pytorch_setting():
    res = lambda t: {"time_to_target": t, "steps_to_target": t and 10, "final_accuracy": 0.99,
                     "train_seconds": 9.0, "images_per_second": 1.0, "augment_seconds": 0.1, "eval_seconds": 1.0,
                     "warmup_seconds": 1.0, "train_cpu_seconds": 1.0}
    runs = [{"tinycnn": res(4.0), "torch a": res(8.0), "torch b": res(None)},
            {"tinycnn": res(6.0), "torch a": res(4.0), "torch b": res(5.0)}]
    rows, best = bench.summary(runs, ["tinycnn", "torch a", "torch b"])
    assert best["library"] == "torch a" and best["time to target s"] == 6.0
    assert best["tinycnn time x"] == pytest.approx((0.5 + 1.5) / 2)
    assert rows[2]["time to target s"] is None and rows[2]["tinycnn time x per round"] == "- / 1.20"


@pytest.mark.parametrize("argv, message", [
    (["--target", "1.5"], "--target must be a test accuracy in (0, 1], got 1.5"),
    (["--arch", "convnet-bn"], "--arch convnet-bn: choose from convnet, lenet5, fastnet, bnnet"),
    (["--torch", "cl,fast"], "unknown PyTorch setting(s) fast"),
    (["--data-dir", "/nonexistent"], "--data-dir /nonexistent: no MNIST training images there"),
])
def test_bad_arguments_are_one_line_errors(argv, message):
    out = subprocess.run([sys.executable, str(BENCH / "bench_time_to_accuracy.py"), *argv],
                         capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "Traceback" not in out.stderr


def test_pytorch_trains_the_same_steps(numpy_backend):
    """PyTorch's twin, given tinycnn's initial weights, batches and learning rates, computes
    the same loss at every step of a short run (float32 tolerance)."""
    pytest.importorskip("torch")
    data = small_data()
    rec = bench.recipe("fastnet", len(data[0]))
    steps = bench.total_steps(len(data[0]), rec.batch_size, 2)
    losses = {}
    for lib in ("tinycnn", "torch"):
        make, subject, schedule = bench.build(lib, rec, data[0].shape[1:], steps)
        losses[lib] = bench.train_to_target(*make(subject), data, rec.batch_size, steps, schedule, rec.seed,
                                            RandomAffine(), eval_every=steps, target=1.0)["losses"]
    assert len(losses["torch"]) == steps
    # (measured: equal to 2.4e-7 over the 6 steps, on the reference kernels)
    np.testing.assert_allclose(losses["torch"], losses["tinycnn"], rtol=1e-5)
