"""Per-layer gradient norms recorded by fit(): equal to a hand computation, kept through a
resume, written to history.json and drawn, with the saliency figures."""
import json
import os
import signal

import numpy as np
import pytest

import tinycnn
from tinycnn import fit, optim, plotting, train
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinycnn.losses import SoftmaxCrossEntropy

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_model():
    """conv 2@3x3 -> ReLU -> pool -> dense 8 -> 3 on (1, 6, 6) inputs: two layers with
    parameters, conv2d_0 and dense_4."""
    return tinycnn.Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(8, 3)],
                              input_shape=(1, 6, 6), seed=0)


def tiny_data(n=12):
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, 1, 6, 6)), rng.integers(0, 3, n)


def test_norms_equal_a_hand_computation(numpy_backend, monkeypatch):
    # Training replayed by hand in float64: plain SGD (p -= lr * g), the same shuffled
    # order, and after every backward pass ||g_layer|| = sqrt(sum of g^2 over W and b).
    monkeypatch.setattr(train, "GRAD_NORM_TRACE_EVERY", 2)
    x, y = tiny_data()
    epochs, batch, lr, seed = 2, 4, 0.1, 3
    model = tiny_model().to(np.float64)
    history = fit(model, SoftmaxCrossEntropy(), optim.SGD(model, lr=lr), x, y, epochs=epochs,
                  batch_size=batch, seed=seed, progress=False, log=None)

    ref, loss = tiny_model().to(np.float64), SoftmaxCrossEntropy()
    order_rng = np.random.default_rng(seed)               # fit's shuffling generator
    per_step = []                                         # [{layer: norm}] for every step
    for _ in range(epochs):
        order = order_rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            loss.forward(ref.forward(x[idx], training=True), y[idx])
            ref.backward(loss.backward())
            per_step.append({name: np.sqrt(sum((g ** 2).sum() for g in layer.grads.values()))
                             for name, layer in zip(ref.names, ref.layers) if layer.grads})
            for _, _, p, g in ref.parameters():
                p -= lr * g

    steps = len(x) // batch
    assert set(history["grad_norm"]) == {"conv2d_0", "dense_4"}
    for name in ("conv2d_0", "dense_4"):
        means = [np.mean([s[name] for s in per_step[e * steps:(e + 1) * steps]]) for e in range(epochs)]
        np.testing.assert_allclose(history["grad_norm"][name], means, rtol=1e-10, err_msg=name)
        np.testing.assert_allclose(history["grad_norm_steps"][name], [s[name] for s in per_step[::2]],
                                   rtol=1e-10, err_msg=name)
    assert history["grad_norm_steps"]["epoch"] == [0.0, round(2 / 3, 4), round(4 / 3, 4)]
    assert all(v > 0 for v in history["grad_norm"]["conv2d_0"])
    json.dumps(history)                                    # history.json can hold it


def test_every_layer_with_parameters_has_one_norm_per_epoch():
    from tinycnn.models import bnnet
    from tinycnn.train import gradient_norms
    names = list(gradient_norms(bnnet()))
    # convolutions, batch norms and dense layers; no ReLU, pooling, flatten or dropout
    assert names == ["conv2d_0", "batchnorm2d_1", "conv2d_4", "batchnorm2d_5", "conv2d_7",
                     "batchnorm2d_8", "dense_12", "batchnorm1d_13", "dense_16"]


def run_tiny(x, y, **kw):
    """Three epochs of 6 steps of Adam on tiny_model."""
    model = tiny_model()
    return fit(model, SoftmaxCrossEntropy(), optim.Adam(model, lr=1e-2), x, y, epochs=3,
               batch_size=4, seed=1, progress=False, log=None, **kw)


def interrupt_in_epoch_2(x, y, ckpt):
    """Run until Ctrl-C at epoch 2, step 3, leaving a checkpoint at `ckpt`."""
    calls = {"n": 0}

    def ctrl_c_at_step_9(xb, rng):
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGINT)
        return xb

    with pytest.raises(tinycnn.TrainingInterrupted, match="epoch 2, step 3"):
        run_tiny(x, y, checkpoint=str(ckpt), augment=ctrl_c_at_step_9)


def test_resume_keeps_the_norms_history(numpy_backend, tmp_path):
    # Ctrl-C in the middle of epoch 2, then resume: the recorded norms (epoch means and the
    # sampled steps) are exactly those of the uninterrupted run, each step counted once.
    x, y = tiny_data(24)
    reference = run_tiny(x, y)
    assert [len(v) for v in reference["grad_norm"].values()] == [3, 3]
    assert reference["grad_norm_steps"]["epoch"] == [0.0, round(10 / 6, 4)]    # steps 0 and 10
    ckpt = tmp_path / "ckpt.npz"
    interrupt_in_epoch_2(x, y, ckpt)
    _, _, state = tinycnn.io.load_checkpoint(ckpt)
    assert [len(v) for v in state["history"]["grad_norm"].values()] == [1, 1]
    assert state["sums"]["steps"] == 3
    resumed = run_tiny(x, y, resume=str(ckpt))
    assert resumed["grad_norm"] == reference["grad_norm"]
    assert resumed["grad_norm_steps"] == reference["grad_norm_steps"]


def test_resume_from_a_checkpoint_without_norms(numpy_backend, tmp_path):
    # A checkpoint written before fit() recorded norms: resuming works, and the norms start
    # at the resumed epoch (epoch 2's mean then covers the steps run after the resume).
    x, y = tiny_data(24)
    ckpt = tmp_path / "old.npz"
    interrupt_in_epoch_2(x, y, ckpt)
    model, opt_state, state = tinycnn.io.load_checkpoint(ckpt)
    for key in ("grad_norm", "grad_norm_steps"):
        del state["history"][key]
    for key in ("grad_norm", "steps"):
        del state["sums"][key]
    opt = optim.Adam(model, lr=1e-2)
    opt.load_state_dict(opt_state)
    tinycnn.io.save_checkpoint(ckpt, model, opt, state)
    history = run_tiny(x, y, resume=str(ckpt))
    assert len(history["train_loss"]) == 3
    assert [len(v) for v in history["grad_norm"].values()] == [2, 2]
    assert all(np.isfinite(v).all() and min(v) > 0 for v in history["grad_norm"].values())


def test_gradient_norm_figure(tmp_path):
    history = {"epoch": [1, 2], "grad_norm": {"conv2d_0": [0.1, 0.05], "dense_4": [1.0, 0.4]},
               "grad_norm_steps": {"epoch": [0.0, 0.5, 1.0, 1.5], "conv2d_0": [0.2, 0.1, 0.07, 0.04],
                                   "dense_4": [2.0, 1.0, 0.5, 0.3]}}
    path = tmp_path / "norms.png"
    fig = plotting.plot_gradient_norms(history, path=path)
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10000
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["conv2d_0", "dense_4"]
    with pytest.raises(ValueError, match="plot_gradient_norms: history has no 'grad_norm'"):
        plotting.plot_gradient_norms({"epoch": [1]})


def test_saliency_figure(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    maps = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    proba = rng.dirichlet(np.ones(10), 3)
    y_true = proba.argmax(1)
    y_true[2] = (y_true[2] + 1) % 10                            # the third one is a mistake
    path = tmp_path / "saliency.png"
    fig = plotting.plot_saliency(images, maps, proba, [str(i) for i in range(10)], y_true, path=path)
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 20000
    assert len(fig.axes) == 9                                   # (input, |S|, S) x 3 images
    titles = [fig.axes[3 * i].title for i in range(3)]
    assert titles[2].get_text() == f"pred {proba[2].argmax()} ({proba[2].max():.1%})\ntrue {y_true[2]}"
    assert [t.get_color() for t in titles] == ["black", "black", "red"]


def test_saliency_examples_pick_one_per_class_and_the_worst_mistake():
    from tinycnn.run import saliency_examples
    y = np.array([3, 0, 1, 0, 2, 1, 3])
    proba = np.eye(4)[y] * 0.9 + 0.025
    proba[5] = [0.05, 0.05, 0.85, 0.05]                          # image 5 (a 1) taken for a 2
    assert saliency_examples(y, proba, n=4) == [1, 2, 4, 5]      # first 0, 1, 2, then the mistake
    proba[5] = np.eye(4)[1] * 0.9 + 0.025
    assert saliency_examples(y, proba, n=3) == [1, 2, 4]         # no mistakes: classes only


def test_main_job_writes_both_figures_and_the_norms(tmp_path):
    from tinycnn import run
    out = tmp_path / "run"
    status = run.main(["--dataset", "digits", "--arch", "lenet5", "--epochs", "2", "--quiet",
                       "--out", str(out)])
    assert status == 0
    for name in ("saliency.png", "gradient_norms.png"):
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 20000, name
    history = json.loads((out / "history.json").read_text())
    layers = ["conv2d_0", "conv2d_2", "dense_5", "dense_7", "dense_9"]
    assert list(history["grad_norm"]) == layers
    assert all(len(v) == 2 and min(v) > 0 for v in history["grad_norm"].values())
    assert list(history["grad_norm_steps"]) == ["epoch"] + layers


def test_predict_show_adds_a_saliency_panel(tmp_path, monkeypatch):
    from tinycnn import sketch
    from tinycnn.cli import predict_images
    from tinycnn.models import fastnet
    from tinycnn.saliency import saliency
    model = fastnet(seed=0)
    img = tmp_path / "seven.png"
    sketch.render(sketch.digit_strokes(7, np.random.default_rng(0)), np.random.default_rng(0)).save(img)
    drawn = []
    real = plotting.plot_prediction
    monkeypatch.setattr(plotting, "plot_prediction",
                        lambda *a, **k: drawn.append((real(*a, **k), k["saliency"])) or drawn[-1][0])
    results, failures = predict_images(model, [str(img)], show_dir=str(tmp_path / "figs"))
    assert not failures and len(drawn) == 1
    figure = tmp_path / "figs" / "seven-prediction.png"
    assert figure.read_bytes()[:8] == PNG and figure.stat().st_size > 10000
    fig, shown = drawn[0]
    assert [ax.get_title() for ax in fig.axes][:3] == ["original", "what the model saw (28x28)",
                                                       f"saliency of {results[0]['digit']}\n|d score / d pixel|"]
    expected, target = saliency(model, model.preprocess(results[0]["input"][None]))
    np.testing.assert_array_equal(shown, expected[0])            # the predicted class's map
    assert str(target[0]) == results[0]["digit"]


@pytest.mark.parametrize("activation", ["Sigmoid", "ReLU"])
def test_vanishing_gradients_show_in_the_norms(numpy_backend, activation):
    # Seven Dense layers of 64 on the bundled digits, one epoch of SGD. Backward, each
    # sigmoid multiplies the gradient by s'(a) = s(1 - s) <= 1/4, so the norm shrinks layer
    # by layer (measured: 0.52 at the last layer, 0.0016 at the first, and the loss barely
    # moves); with ReLU (derivative 1 where active) every layer gets a norm of the same order.
    from tinycnn import datasets, layers as L
    (x, y), _ = datasets.load_digits(image_size=28)
    x = datasets.add_channel_axis(datasets.to_float(x))
    stack = [L.Flatten(), L.Dense(784, 64), getattr(L, activation)()]
    for _ in range(5):
        stack += [L.Dense(64, 64), getattr(L, activation)()]
    model = tinycnn.Sequential(stack + [L.Dense(64, 10)], input_shape=(1, 28, 28), seed=0)
    history = fit(model, SoftmaxCrossEntropy(), optim.SGD(model, lr=0.1), x, y, epochs=1,
                  batch_size=64, progress=False, log=None)
    norms = [v[0] for v in history["grad_norm"].values()]       # first layer ... last layer
    ratio = norms[-1] / norms[0]
    if activation == "Sigmoid":
        assert ratio > 100, norms
    else:
        assert ratio < 3, norms


def test_saliency_maps_example(mnist_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    from tinycnn.models import fastnet
    model = tmp_path / "model.npz"
    fastnet(seed=0).save(model)                                 # untrained: only the plumbing
    script = Path(__file__).resolve().parents[1] / "examples" / "saliency_maps.py"
    proc = subprocess.run([sys.executable, str(script), "--model", str(model), "--data-dir", str(mnist_dir),
                           "--count", "200", "--out", str(tmp_path / "s.png")], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr
    assert "200 test images: " in proc.stdout and "of sum |S| lies in the central 20x20 box" in proc.stdout
    assert (tmp_path / "s.png").read_bytes()[:8] == PNG
