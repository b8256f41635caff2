"""The pretrained model shipped in the package: its accuracy, its provenance, loading by name,
and `tinycnn predict` without a model."""
import os
import shlex

import numpy as np
import pytest

import tinycnn
from tinycnn import cli, datasets, run, sketch, zoo
from tinycnn.io import ModelFormatError


def test_mnist_test_accuracy_and_provenance_agree(mnist_dir):
    model = tinycnn.pretrained("mnist")
    info = zoo.provenance("mnist")
    _, (x, y) = datasets.load_dataset("mnist", data_dir=mnist_dir, download=False, progress=None)
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    try:
        proba = model.predict_proba(model.preprocess(x))
    finally:
        tinycnn.set_backend(previous)
    acc = float((proba.argmax(1) == y).mean())
    assert acc >= 0.993
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-4)      # the recorded number is this one
    loss = float(-np.log(proba[np.arange(len(y)), y]).mean())
    assert loss == pytest.approx(info["test_loss"], abs=1e-3)


def test_reproduction_command_matches_the_recorded_options():
    info = zoo.provenance("mnist")
    argv = shlex.split(info["command"])
    assert argv[:2] == ["python", "examples/train_mnist.py"]
    parsed = vars(run.build_parser().parse_args(argv[2:]))
    for key, value in info["options"].items():
        assert parsed[key] == value, key
    # Every option that shapes the model is given explicitly, so changed defaults cannot
    # change what the command trains.
    for key in ("recipe", "arch", "epochs", "batch_size", "lr", "optimizer", "schedule", "augment",
                "seed", "dataset", "val_fraction"):
        assert parsed[key] is not None and key in info["options"], key
    assert info["options"]["augment"] is True and info["options"]["val_fraction"] == 0
    # Adam's betas come from the architecture's recipe, not the command line: still the same?
    assert list(run.RECIPES[info["options"]["arch"]]["betas"]) == info["adam_betas"]
    for key in ("tinycnn_commit", "date", "test_accuracy", "test_loss", "recipe"):
        assert info[key], key
    assert info["seed"] == info["options"]["seed"] == 0 and len(info["tinycnn_commit"]) == 40


def test_shipped_file_is_small_float32_and_loads_by_name(tmp_path, monkeypatch):
    path = zoo.pretrained_path("mnist")
    assert os.path.getsize(path) < 1_000_000
    model = tinycnn.load_model("mnist")
    assert model.num_parameters() == zoo.provenance("mnist")["parameters"]
    assert all(p.dtype == np.float32 for _, _, p, _ in model.parameters())
    assert model.class_names == [str(i) for i in range(10)] and "mean" in model.preprocessing
    # A file of that name wins over the shipped model.
    monkeypatch.chdir(tmp_path)
    other = tinycnn.models.lenet5(seed=1)
    other.save("mnist")
    os.rename("mnist.npz" if os.path.exists("mnist.npz") else "mnist", "mnist")
    assert tinycnn.load_model("mnist").num_parameters() == other.num_parameters()


def test_unknown_names_and_missing_files_list_the_known_names():
    with pytest.raises(ModelFormatError, match=r"^nope: no such model file \(pretrained models by name: mnist\)$"):
        tinycnn.load_model("nope")
    with pytest.raises(ValueError, match=r"^no pretrained model called 'mnistt'; known: mnist$"):
        tinycnn.pretrained("mnistt")


@pytest.mark.parametrize("first, rest, expected", [
    (None, ["a.png"], (None, ["a.png"])),                              # argparse: one argument
    ("a.png", ["b.png"], (None, ["a.png", "b.png"])),                  # no model: all images
    ("runs/x/model.npz", ["a.png"], ("runs/x/model.npz", ["a.png"])),  # a .npz path is the model
    ("MODEL.NPZ", ["a.png"], ("MODEL.NPZ", ["a.png"])),
    ("mnist", ["a.png"], ("mnist", ["a.png"])),                        # the pretrained name
    ("photos", ["a.png"], (None, ["photos", "a.png"])),                # a folder of images
])
def test_predict_arguments_model_or_image(first, rest, expected):
    assert cli.split_model_and_images(first, rest) == expected


def test_predict_with_only_a_model_says_so(capsys):
    assert cli.main(["predict", "runs/x/model.npz"]) == 1
    assert capsys.readouterr().err == ("tinycnn predict: error: runs/x/model.npz is a model: "
                                       "give the images to read after it\n")


def test_predict_on_a_run_folder_points_at_its_model(tmp_path, capsys, monkeypatch):
    """`tinycnn predict run1` (train's --out folder) read the run's figures as digits with the
    pretrained model: 'run1/curves.png: 5 (96.4%)', exit 0."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("run1")
    open(os.path.join("run1", "model.npz"), "wb").close()
    open(os.path.join("run1", "curves.png"), "wb").close()
    model = os.path.join("run1", "model.npz")
    for argv in (["run1"], ["run1", "seven.png"]):             # alone, or before the images
        assert cli.main(["predict", *argv]) == 1
        assert capsys.readouterr().err == (f"tinycnn predict: error: run1 holds a trained model: give it and "
                                           f"the images to read, tinycnn predict {model} IMAGE...\n")


def test_predict_with_no_model_uses_the_pretrained_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tinycnn.backend, "_current", "numpy")      # restored afterwards
    paths = []
    for digit in (3, 7):
        paths.append(tmp_path / f"digit{digit}.png")
        rng = np.random.default_rng(digit)
        sketch.render(sketch.digit_strokes(digit, rng), rng).save(paths[-1])
    assert cli.main(["predict", *map(str, paths)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[1][0] for line in out] == ["3", "7"]
    assert cli.main(["predict", "mnist", str(paths[1])]) == 0
    assert capsys.readouterr().out.startswith(f"{paths[1]}: 7 (")
    # A folder named like the pretrained model is a folder of images, read by the default model.
    monkeypatch.chdir(tmp_path)
    os.mkdir("mnist")
    os.rename(paths[0], os.path.join("mnist", "three.png"))
    assert cli.main(["predict", "mnist"]) == 0
    assert capsys.readouterr().out.startswith(os.path.join("mnist", "three.png") + ": 3 (")


def test_a_data_folder_named_mnist_does_not_hide_the_pretrained_model(tmp_path, monkeypatch, capsys):
    """Only a file of that name wins over the shipped model. A folder called mnist (MNIST's data,
    say) made load_model("mnist") and `tinycnn summary mnist` fail: "mnist: not a regular file"."""
    monkeypatch.chdir(tmp_path)
    os.mkdir("mnist")
    model = tinycnn.load_model("mnist")
    assert model.num_parameters() == zoo.provenance("mnist")["parameters"]
    assert cli.main(["summary", "mnist"]) == 0 and capsys.readouterr().err == ""
    assert cli.split_model_and_images("mnist", ["a.png"]) == (None, ["mnist", "a.png"])   # predict: images
