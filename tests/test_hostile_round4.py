"""A fourth hostile-input review (session 19): model files that save but would not load,
batch-norm and layer sizes that loaded and then gave constant or failing answers, a server
500 with no reason, float images turned to NaN, and folders left behind by failed commands.
Each is now refused in one line naming the field, before any damage."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import tinycnn
from tinycnn import ModelFormatError, load_model
from tinycnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sigmoid
from tinycnn.preprocess import to_mnist

from test_cli_mistakes import one_error_line
from test_hostile_round2 import run_example
from test_io import rewrite
from test_serve import post_seven_to, seven_png


def bn_model():
    model = tinycnn.Sequential([Conv2D(1, 2, 3), BatchNorm2D(2), ReLU(), MaxPool2D(2), Flatten(),
                                Dense(2 * 13 * 13, 10)], input_shape=(1, 28, 28), seed=0)
    model.preprocessing = {"scale": 1 / 255, "mean": 0.13, "std": 0.31}
    model.class_names = [str(i) for i in range(10)]
    return model


# -- a model that would not load again is not saved, and the file it would replace is kept ---

@pytest.mark.parametrize("change, reason", [
    (lambda m: setattr(m, "class_names", list(range(10))), "__meta__ field class_names must be a list of strings"),
    (lambda m: setattr(m, "class_names", ["x" * 201] + [str(i) for i in range(9)]),
     "__meta__ field class_names must be a list of strings (at most 200 characters each)"),
    (lambda m: setattr(m, "preprocessing", {"mean": 0.1, "std": 0.0}), "__meta__ field preprocessing.std must be > 0"),
    (lambda m: setattr(m, "preprocessing", {"mean": 0.1}), "needs both mean and std, or neither"),
    (lambda m: setattr(m, "preprocessing", {"mean": 0.1, "std": float("nan")}), "NaN is not a number JSON allows"),
    (lambda m: m.layers[0].params["W"].__setitem__((0, 0, 0, 0), np.nan),
     "param/conv2d_0/W holds 1 NaN or infinite values"),
    (lambda m: setattr(m.layers[0], "stride", (2**64 + 1, 2**64 + 1)),
     "layer 0 (Conv2D) has bad arguments: Conv2D stride must be at most 16,777,216"),
    (lambda m: m.layers[1].state["running_var"].__setitem__(0, -1),
     "state/batchnorm2d_1/running_var holds 1 negative values; a variance cannot be negative"),
])
def test_a_model_load_would_refuse_is_not_saved_and_the_old_file_is_kept(tmp_path, change, reason):
    """All of these were written (replacing a good model.npz) and refused only when loaded."""
    good = bn_model().save(tmp_path / "model.npz")
    before = (tmp_path / "model.npz").read_bytes()
    model = load_model(good)
    change(model)
    with pytest.raises(ValueError) as err:
        model.save(good)
    assert str(err.value).startswith(f"{good}: not saved: it would not load again: ")
    assert reason in str(err.value)
    assert (tmp_path / "model.npz").read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]                       # no temporary file left


def test_numpy_numbers_in_preprocessing_are_saved_as_numbers(tmp_path):
    """Was TypeError: Object of type float32 is not JSON serializable."""
    model = bn_model()
    model.preprocessing = {"mean": np.float32(0.25), "std": np.float64(0.5), "scale": np.float32(1 / 255)}
    loaded = load_model(model.save(tmp_path / "m.npz"))
    assert loaded.preprocessing == {"mean": 0.25, "std": 0.5, "scale": float(np.float32(1 / 255))}


# -- batch norm and layer sizes from a file ---------------------------------------------------

@pytest.mark.parametrize("meta, message", [
    (lambda c: c.update(eps=1e300), r"BatchNorm2D: eps must be a number in \[1.2e-38, 1\], got 1e\+300"),
    (lambda c: c.update(eps=1e-300), r"BatchNorm2D: eps must be a number in \[1.2e-38, 1\], got 1e-300"),
    (lambda c: c.update(eps=-1), r"BatchNorm2D: eps must be a number in \[1.2e-38, 1\], got -1"),
    (lambda c: c.update(momentum=True), r"BatchNorm2D: momentum must be a number in \[0, 1\], got True"),
    (lambda c: c.update(momentum=2), r"BatchNorm2D: momentum must be a number in \[0, 1\], got 2"),
])
def test_batchnorm_settings_that_break_every_answer_are_refused(tmp_path, meta, message):
    """eps 1e300 is inf in float32: every prediction was the same 10% for each class."""
    good = bn_model().save(tmp_path / "m.npz")
    bad = rewrite(good, tmp_path / "bad.npz", meta_change=lambda m: meta(m["architecture"][1]["config"]))
    with pytest.raises(ModelFormatError, match=rf"^{bad}: layer 1 \(BatchNorm2D\) has bad arguments: {message}$"):
        load_model(bad)


def test_a_negative_running_variance_is_refused_on_load(tmp_path):
    """Was loaded; predict then printed NumPy warnings and a message naming no layer."""
    good = bn_model().save(tmp_path / "m.npz")
    bad = rewrite(good, tmp_path / "bad.npz", arrays_change=lambda a: a["state/batchnorm2d_1/running_var"].__setitem__(
        slice(None), -0.5))
    with pytest.raises(ModelFormatError, match=r"state/batchnorm2d_1/running_var holds 2 negative values"):
        load_model(bad)
    assert one_error_line("predict", str(bad), "x.png", cwd=tmp_path) == (
        1, f"tinycnn predict: error: {bad}: state/batchnorm2d_1/running_var holds 2 negative values; "
           "a variance cannot be negative")


@pytest.mark.parametrize("layer, field", [(0, "stride"), (0, "padding"), (0, "kernel_size"), (2, "stride")])
def test_sizes_beyond_any_image_are_refused_on_load(tmp_path, field, layer):
    """A stride of 2**64 + 1 loaded; the fast kernels then failed with "Int value is too large"."""
    model = tinycnn.Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2 * 13 * 13, 10)])
    path = model.save(tmp_path / "m.npz")        # no input shape: nothing else would catch it
    bad = rewrite(path, tmp_path / "bad.npz", meta_change=lambda m: m["architecture"][layer]["config"].update(
        {field: [2**64 + 1, 1]}))
    kind = "Conv2D" if layer == 0 else "MaxPool2D"
    with pytest.raises(ModelFormatError, match=rf"^{bad}: layer {layer} \({kind}\)(: | has bad arguments: {kind} )"
                                               rf"{field} must be at most 16,777,216, got \[18446744073709551617, 1\]$"):
        load_model(bad)
    with pytest.raises(ValueError, match="Conv2D stride must be at most 16,777,216"):
        Conv2D(1, 2, 3, stride=2**24 + 1)


def test_big_endian_weights_are_named_as_such(tmp_path):
    """The message said the array had the right shape but the wrong dtype, '>f4' against floats."""
    good = bn_model().save(tmp_path / "m.npz")
    bad = rewrite(good, tmp_path / "be.npz", arrays_change=lambda a: a.update(
        {"param/conv2d_0/W": a["param/conv2d_0/W"].astype(">f4")}))
    with pytest.raises(ModelFormatError) as err:
        load_model(bad)
    assert str(err.value) == (f"{bad}: param/conv2d_0/W holds float32 in the other byte order (>f4); tinycnn "
                              "reads the machine's own (<f4): convert it with "
                              "array.astype(array.dtype.newbyteorder('='))")


# -- the server: overflow inside the network ---------------------------------------------------

def test_feature_maps_that_overflow_are_a_500_naming_the_layer():
    """Finite output, infinite feature maps: the page's scale was inf, the JSON encoder refused
    it, and the answer was "internal error" after four RuntimeWarnings."""
    model = tinycnn.Sequential([Conv2D(1, 2, 3), Sigmoid(), Flatten(), Dense(2 * 26 * 26, 10)],
                               input_shape=(1, 28, 28), seed=0)
    model.layers[0].params["W"][0] = 3e38
    model.layers[0].params["W"][1] = -3e38
    model.preprocessing = {"mean": 0.1, "std": 0.3}
    status, answer = post_seven_to(model)
    assert status == 500 and answer == {"error": "layer conv2d_0's feature maps is NaN or infinite for this "
                                                 "image; the model's weights are broken"}


# -- images --------------------------------------------------------------------------------------

def test_a_float_image_spanning_float32s_range_is_read_not_called_blank():
    """(max - min) overflowed float32: NaN pixels, three warnings, then "looks blank"."""
    _, im = seven_png()
    ink = np.asarray(im) < 128
    huge = Image.fromarray(np.where(ink, -3e38, 3e38).astype(np.float32), mode="F")
    plain = Image.fromarray(np.where(ink, 0, 255).astype(np.float32), mode="F")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(to_mnist(huge), to_mnist(plain))


def test_a_colour_mode_pillow_cannot_turn_grey_is_named(tmp_path):
    _, im = seven_png()
    im.convert("RGB").convert("LAB").save(tmp_path / "lab.tif")
    with pytest.raises(ValueError, match=r"^to_mnist: colour mode LAB is not supported; save the image as RGB "
                                         r"or greyscale$"):
        to_mnist(str(tmp_path / "lab.tif"))


# -- failed commands leave no new folders; the example's --show works -----------------------------

@pytest.mark.parametrize("argv", [("predict", "nope.npz", "d.png", "--show", "new/figs"),
                                  ("evaluate", "nope.npz", "--out", "new/figs")])
def test_a_failed_command_leaves_no_new_folder(tmp_path, argv):
    status, line = one_error_line(*argv, cwd=tmp_path)
    assert status == 1 and line.endswith("nope.npz: no such model file (pretrained models by name: mnist)")
    assert os.listdir(tmp_path) == []


def test_an_output_folder_under_a_file_is_refused_first(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    assert one_error_line("predict", "nope.npz", "d.png", "--show", "f/figs", cwd=tmp_path) == (
        1, f"tinycnn predict: error: --show f/figs: cannot create this folder ({tmp_path / 'f'} is not a folder)")


def test_the_predict_example_draws_its_figures(tmp_path):
    """`--show` raised AttributeError: the example's arguments had no --overwrite."""
    seven_png()[1].save(tmp_path / "seven.png")
    proc = run_example("predict_digit.py", "--model", "mnist", "seven.png", "--show", "figs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("seven.png: 7 ")
    assert os.listdir(tmp_path / "figs") == ["seven-prediction.png"]
    proc = run_example("predict_digit.py", "--model", "mnist", "seven.png", "--show", "figs", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "predict_digit.py: error: --show figs: already holds seven-prediction.png, "
                                                 "which this would replace; give a new folder, or add --overwrite\n")
    proc = run_example("predict_digit.py", "--model", "mnist", "seven.png", "--show", "figs", "--overwrite",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


# -- first contact: a mistyped model name -------------------------------------------------------

@pytest.mark.parametrize("name, line", [
    ("mnsit", "mnsit: no such file or pretrained model; did you mean mnist?"),
    ("MNIST", "MNIST: no such file or pretrained model; did you mean mnist?"),
    ("fastnet", "fastnet is an architecture, not a trained model: train one with tinycnn train --arch fastnet, "
                "or give a model.npz (pretrained: mnist)"),
])
def test_a_mistyped_model_name_is_not_read_as_an_image(tmp_path, name, line):
    """Was "mnsit: skipped: cannot read this image", then an answer from the default model."""
    seven_png()[1].save(tmp_path / "seven.png")
    assert one_error_line("predict", name, "seven.png", cwd=tmp_path) == (1, f"tinycnn predict: error: {line}")
