"""Pretrained models shipped inside the package, so a digit can be read with no training step.

    tinycnn.pretrained("mnist")          the model (a Sequential, ready to predict)
    tinycnn.load_model("mnist")          the same: a known name works wherever a file does
    tinycnn.zoo.provenance("mnist")      how it was made: recipe, options, seed, test accuracy,
                                         the command that reproduces it, commit, date

Each model is two files in tinycnn/pretrained/: NAME.npz (an ordinary model file, see io.py)
and NAME.json (its provenance). A name is only a name when no file of that name exists, so
`load_model("mnist")` still loads a file called "mnist" in the working folder if there is one.
"""
import json
import os

PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")

# name -> one line saying what it is (the files say the rest)
PRETRAINED = {
    "mnist": "fastnet trained on all 60,000 MNIST training images with augmentation",
}


def _check_name(name):
    if name not in PRETRAINED:
        raise ValueError(f"no pretrained model called {name!r}; known: {', '.join(sorted(PRETRAINED))}")


def pretrained_path(name="mnist"):
    """The .npz file of a pretrained model."""
    _check_name(name)
    return os.path.join(PRETRAINED_DIR, f"{name}.npz")


def provenance(name="mnist"):
    """The provenance record (a dict) saved beside a pretrained model."""
    _check_name(name)
    with open(os.path.join(PRETRAINED_DIR, f"{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def pretrained(name="mnist"):
    """Load a pretrained model by name (see PRETRAINED)."""
    from .io import load_model
    return load_model(pretrained_path(name))


def is_pretrained_name(arg):
    """True when `arg` means a pretrained model: a known name with no file of that name (a
    folder of that name, MNIST's data say, is no model and does not count)."""
    return isinstance(arg, str) and arg in PRETRAINED and not os.path.isfile(arg)


def resolve(arg, default="mnist"):
    """A command line's model argument -> (path of the model file, pretrained name or None).
    None means the default pretrained model, whatever files the working folder holds."""
    if arg is None or is_pretrained_name(arg):
        name = default if arg is None else arg
        return pretrained_path(name), name
    return arg, None
