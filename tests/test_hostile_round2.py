"""A second hostile-input probe: what an attacker's file or a careless user's command line
does to tinycnn. Each test holds one fix; the probes that were already fine are listed in
the session report. Small models and the NumPy kernels throughout (nothing to compile)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinycnn
from tinycnn import cli, layers as L
from tinycnn.io import ModelFormatError, load_model
from tinycnn.model import Sequential

from test_cli_mistakes import cli_env, one_error_line


@pytest.fixture(autouse=True)
def numpy_kernels():
    before = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    yield
    tinycnn.set_backend(before)


def run_cli(capsys, *argv):
    """tinycnn ARGV in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return status, out, err


# -- model files --------------------------------------------------------------------------

def padded_model(padding, input_shape=(1, 28, 28)):
    """A 3 KB model whose first convolution pads a 28x28 picture by `padding` on each side,
    and whose pooling then shrinks it back to 1x1, so every layer fits the next."""
    side = 28 + 2 * padding - 2
    return Sequential([L.Conv2D(1, 2, 3, padding=padding), L.MaxPool2D(side), L.ReLU(),
                       L.Flatten(), L.Dense(2, 10)], input_shape=input_shape, seed=0)


def test_huge_padding_in_a_model_file_is_refused_at_load(tmp_path):
    path = tmp_path / "padded.npz"
    padded_model(8000).save(path)
    assert os.path.getsize(path) < 5000
    # Before the fix this loaded, and one prediction asked for 2 x 16026 x 16026 floats
    # (and 8.6 GB of columns) before failing or swapping.
    with pytest.raises(ModelFormatError, match=r"padded.npz: layer conv2d_0 would need padded input "
                       r"of shape \(1, 16028, 16028\) \(256,896,784 values\) for one input of shape "
                       r"\(1, 28, 28\); at most 16,777,216"):
        load_model(path)


def test_huge_padding_cli_predict_is_one_line(tmp_path, capsys):
    padded_model(8000).save(tmp_path / "padded.npz")
    image = tmp_path / "d.png"
    from PIL import Image
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
    status, out, err = run_cli(capsys, "predict", tmp_path / "padded.npz", image)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "layer conv2d_0 would need padded input of shape (1, 16028, 16028)" in err


def test_model_saved_without_input_shape_is_checked_where_it_is_used(tmp_path):
    model = padded_model(8000)
    model.input_shape = None                 # loads: nothing says what it will be given
    model.save(tmp_path / "padded.npz")
    loaded = load_model(tmp_path / "padded.npz")
    with pytest.raises(ModelFormatError, match="layer conv2d_0 would need padded input"):
        from tinycnn.modelcheck import check_activations
        check_activations("padded.npz", loaded, (1, 28, 28))


def test_ordinary_models_pass_the_activation_check():
    from tinycnn import models
    from tinycnn.modelcheck import check_activations
    for name, build in models.ARCHITECTURES.items():
        model = build()
        check_activations(name, model, model.input_shape)    # raises if any is refused
