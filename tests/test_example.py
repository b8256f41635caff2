"""examples/train_mnist.py as a user runs it: end to end on the bundled digits, and every
bad argument refused with one line and exit status 2 before any training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_mnist.py"


def run(*args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_end_to_end_on_digits(tmp_path):
    out = tmp_path / "run"
    proc = run("--dataset", "digits", "--epochs", "2", "--arch", "lenet5", "--out", str(out), "--quiet",
               "--augment")
    assert proc.returncode == 0, proc.stderr
    assert "predictions identical to the trained model" in proc.stdout
    for name in ("model.npz", "metrics.json", "history.json", "checkpoint.npz", "curves.png",
                 "confusion_matrix.png", "predictions.png", "mistakes.png", "filters.png",
                 "feature_maps.png", "samples.png"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "arch", "epochs", "test_accuracy", "test_loss", "train_seconds",
                "seconds_per_epoch", "images_per_second"):
        assert key in m
    assert m["dataset"] == "digits" and m["arch"] == "lenet5" and m["test_accuracy"] > 0.5
    assert m["augment"] is True
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--epochs", "-1"], "--epochs must be >= 1"),
    (["--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    (["--data-dir", "."], "mnist files missing: train-images-idx3-ubyte.gz"),
    (["--data-dir", "/no/such/dir"], "--data-dir /no/such/dir: no such folder"),
    (["--out", "/proc/forbidden"], "--out /proc/forbidden: cannot write there"),
    (["--lr", "0"], "--lr must be > 0"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_help_explains_every_flag():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--arch", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--dataset",
                 "--data-dir", "--out", "--no-plots", "--quiet", "--resume"):
        assert flag in proc.stdout


def test_explicit_mnist_never_falls_back(tmp_path):
    env_mirror = {"TINYCNN_MNIST_MIRRORS": "http://127.0.0.1:9/"}   # nothing listens on port 9
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "mnist", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=dict(os.environ, **env_mirror), timeout=600)
    assert proc.returncode == 1
    assert "could not download" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert "digits" not in proc.stdout
