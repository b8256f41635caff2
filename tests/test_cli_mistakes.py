"""Mistakes a first-time user makes on the command line: each gets one line naming what was
wrong, and a non-zero exit status, never a traceback. (More cases, with hostile files, are in
test_hostile_files.py and test_hostile_data.py.)"""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tinycnn import layers as L

ROOT = Path(__file__).resolve().parents[1]
MNIST_FILES = ("train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
               "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")


def cli_env():
    """The environment of a `python -m tinycnn` run: this checkout, the NumPy kernels (nothing to compile)."""
    return dict(os.environ, TINYCNN_BACKEND="numpy",
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def tinycnn_cli(*argv, cwd):
    """Run `python -m tinycnn ARGV` in `cwd`."""
    return subprocess.run([sys.executable, "-m", "tinycnn", *map(str, argv)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def one_error_line(*argv, cwd):
    """Run `python -m tinycnn ARGV` in `cwd`; return (exit status, its single stderr line)."""
    proc = tinycnn_cli(*argv, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return proc.returncode, lines[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    tinycnn.Sequential([L.Flatten(), L.Dense(28 * 28, 10)], input_shape=(1, 28, 28), seed=0).save(path)
    return path


def test_evaluate_with_an_empty_or_missing_data_dir(model_file, tmp_path):
    """Said as `train` says it, in the command line's words (before: '... and download=False')."""
    (tmp_path / "empty").mkdir()
    status, line = one_error_line("evaluate", model_file, "--data-dir", "empty", cwd=tmp_path)
    assert status == 1
    assert line == ("tinycnn evaluate: error: --data-dir empty: mnist files missing: "
                    "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")      # (the test set's only)
    status, line = one_error_line("evaluate", model_file, "--data-dir", "nowhere", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn evaluate: error: --data-dir nowhere: no such folder")


def test_data_dir_naming_the_parent_folder(tmp_path):
    """`--data-dir data` when the files are in data/mnist: the message points there."""
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    status, line = one_error_line("train", "--data-dir", "data", cwd=tmp_path)
    assert status == 2
    assert line == (f"tinycnn train: error: --data-dir data: mnist files missing: {MNIST_FILES} "
                    f"(did you mean --data-dir {os.path.join('data', 'mnist')}?) (see --help)")


def test_train_out_naming_a_file(model_file, tmp_path):
    """--out pointing at the model file by mistake: refused before anything is written."""
    before = model_file.read_bytes()
    status, line = one_error_line("train", "--dataset", "digits", "--epochs", "1", "--out", model_file,
                                  cwd=tmp_path)
    assert status == 2
    assert line == f"tinycnn train: error: --out {model_file}: exists and is not a folder (see --help)"
    assert model_file.read_bytes() == before and os.listdir(tmp_path) == []


def test_predict_with_the_model_given_last(model_file, tmp_path):
    """`predict digit.png model.npz` used to read the model as an image ('skipped: cannot read
    this image (cannot identify image file <_io.BufferedReader name=3>)') after running the
    pretrained model on digit.png."""
    status, line = one_error_line("predict", "digit.png", model_file, cwd=tmp_path)
    assert status == 1
    assert line == (f"tinycnn predict: error: {model_file} is a model, not an image: give the "
                    "model first (tinycnn predict MODEL IMAGE...)")


def test_predict_with_the_pretrained_name_and_no_image(tmp_path):
    status, line = one_error_line("predict", "mnist", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn predict: error: mnist is a model: give the images to read after it")


def test_predict_a_file_that_is_not_an_image(model_file, tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    status, line = one_error_line("predict", model_file, "notes.txt", cwd=tmp_path)
    assert status == 1
    assert line == "notes.txt: skipped: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)"


def test_bench_says_which_kernels_it_timed(tmp_path):
    """Under TINYCNN_BACKEND=numpy it times the reference kernels: the header says so, so that
    a slow number is not read as the fast path's."""
    proc = tinycnn_cli("bench", "--arch", "lenet5", "--steps", "1", "--batch-size", "8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ", numpy kernels (random 28x28 inputs" in proc.stdout.splitlines()[0]


def test_resumed_run_says_its_training_time_counts_the_earlier_epochs(tmp_path):
    """Resuming a finished run trains nothing more: 'training: 3.8s ...; total 0.9s' read as
    a contradiction until the line said where the 3.8 s came from."""
    first = tinycnn_cli("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--no-plots",
                        "--quiet", "--out", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "images/s); total" in first.stdout
    again = tinycnn_cli("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--no-plots",
                        "--quiet", "--out", "b", "--resume", os.path.join("a", "checkpoint.npz"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "images/s, the epochs before --resume included); this command" in again.stdout   # (not "total")
    # no epoch ran, so no checkpoint was written in b (the line listed one all the same)
    assert again.stdout.strip().splitlines()[-1] == f"saved to b/: model.npz, metrics.json, history.json"


def test_output_into_a_closed_pipe_stops_quietly(model_file, tmp_path):
    # `tinycnn summary model.npz | head -0`: the reader has gone, so writing fails with EPIPE.
    # The command stops with status 1 and nothing on stderr, as Unix tools do; no
    # "error: [Errno 32] Broken pipe", no "Exception ignored" from the final flush.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "tinycnn", "summary", str(model_file)], cwd=tmp_path,
                              env=cli_env(), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert (proc.returncode, proc.stderr) == (1, "")


def digit_png(path):
    from PIL import Image
    Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 256).astype(np.uint8)).save(path)


def test_files_already_in_an_output_folder_are_never_replaced_unasked(model_file, tmp_path):
    """predict --show, evaluate --out and train --out refuse, before any work, to replace a
    file of the same name (a user's own a-prediction.png was replaced, even read first as an
    input image); --overwrite says to."""
    (tmp_path / "pics").mkdir()
    digit_png(tmp_path / "pics" / "a.png")
    (tmp_path / "pics" / "a-prediction.png").write_bytes(b"mine")
    status, line = one_error_line("predict", model_file, "pics/a.png", "--show", "pics", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn predict: error: --show pics: already holds a-prediction.png, "
                                 "which this would replace; give a new folder, or add --overwrite")
    assert (tmp_path / "pics" / "a-prediction.png").read_bytes() == b"mine"
    # ... and never, even with --overwrite, when that file is one of the inputs (the folder
    # given as input holds it: it was replaced, then read back as a picture of a digit)
    for extra in ([], ["--overwrite"]):
        status, line = one_error_line("predict", model_file, "pics", "--show", "pics", *extra, cwd=tmp_path)
        assert (status, line) == (1, "tinycnn predict: error: --show pics: a-prediction.png is also an input, "
                                     "pics/a-prediction.png; this would write a figure over it: give another folder")
        assert (tmp_path / "pics" / "a-prediction.png").read_bytes() == b"mine"
    proc = tinycnn_cli("predict", model_file, "pics/a.png", "--show", "pics", "--overwrite", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "pics" / "a-prediction.png").read_bytes()[:4] == b"\x89PNG"

    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "mistakes.png").write_bytes(b"mine")
    status, line = one_error_line("evaluate", model_file, "--dataset", "digits", "--out", "ev", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn evaluate: error: --out ev: already holds mistakes.png, which this "
                                 "would replace; give a new folder, or add --overwrite")
    assert (tmp_path / "ev" / "mistakes.png").read_bytes() == b"mine"

    (tmp_path / "run").mkdir()
    for name in ("model.npz", "metrics.json", "curves.png", "saliency.png", "checkpoint.npz", "history.json"):
        (tmp_path / "run" / name).write_bytes(b"mine")
    status, line = one_error_line("train", "--dataset", "digits", "--epochs", "1", "--out", "run", cwd=tmp_path)
    assert (status, line) == (2, "tinycnn train: error: --out run: already holds model.npz, checkpoint.npz, "
                                 "history.json, metrics.json and 2 more, which this would replace; give a new "
                                 "folder, or add --overwrite (see --help)")
    assert all(p.read_bytes() == b"mine" for p in (tmp_path / "run").iterdir())


def test_a_run_resumed_in_its_own_folder_may_replace_its_files(tmp_path):
    first = tinycnn_cli("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--no-plots",
                        "--quiet", "--out", "a", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    again = tinycnn_cli("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--no-plots",
                        "--quiet", "--out", "a", "--resume", os.path.join("a", "checkpoint.npz"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    status, line = one_error_line("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1",
                                  "--no-plots", "--quiet", "--out", "a", cwd=tmp_path)
    assert status == 2 and "--out a: already holds model.npz" in line


# -- Ctrl-C: one line, and what was saved, wherever it is pressed --------------------------

def train_main(tmp_path, *extra):
    from tinycnn import run
    return run.main(["--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path / "a"), *extra])


def test_ctrl_c_in_an_epoch_names_the_command_that_continues(numpy_backend, tmp_path, monkeypatch, capsys):
    """The hint said only `--resume FILE`; run alone, that trained on other data (the default
    dataset) and the checkpoint was reported damaged. Now it says to repeat the command."""
    from tinycnn import run

    def interrupted(*args, **kwargs):
        raise tinycnn.TrainingInterrupted("interrupted", str(tmp_path / "a" / "checkpoint.npz"), 2, 5)

    monkeypatch.setattr(run, "fit", interrupted)
    assert train_main(tmp_path, "--no-plots") == 130
    checkpoint = tmp_path / "a" / "checkpoint.npz"
    assert capsys.readouterr().err.strip() == (
        f"interrupted at epoch 2, step 5; checkpoint saved to {checkpoint}. To continue, run the same "
        f"command again with --resume {checkpoint} --out {tmp_path / 'a'} (the same data and options)")


def test_ctrl_c_while_compiling_or_drawing_is_one_line_and_the_numbers_are_kept(numpy_backend, tmp_path,
                                                                                 monkeypatch, capsys):
    """Before: a traceback (70 lines from Numba while compiling; matplotlib's while drawing),
    and metrics.json and history.json, written after the figures, were lost."""
    from tinycnn import run

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "draw", ctrl_c)
    assert train_main(tmp_path) == 130
    assert capsys.readouterr().err.strip() == (f"interrupted; saved so far in {tmp_path / 'a'}: model.npz, "
                                               "checkpoint.npz, history.json, metrics.json")
    assert json_file(tmp_path / "a" / "metrics.json")["test_accuracy"] > 0.5
    monkeypatch.setattr(run, "fit", ctrl_c)                           # (as compiling would be)
    assert train_main(tmp_path / "b") == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def json_file(path):
    import json
    return json.loads(path.read_text())


def test_evaluate_needs_only_the_test_files(model_file, mnist_dir, tmp_path):
    """Evaluating reads the test set only: a folder with the two t10k files was refused
    ('mnist files missing: train-images-idx3-ubyte.gz, ...')."""
    (tmp_path / "t10k").mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(os.path.join(mnist_dir, name), tmp_path / "t10k" / name)
    proc = tinycnn_cli("evaluate", model_file, "--data-dir", "t10k", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mnist test set, 10,000 images: accuracy ")
    os.remove(tmp_path / "t10k" / "t10k-labels-idx1-ubyte.gz")
    status, line = one_error_line("evaluate", model_file, "--data-dir", "t10k", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn evaluate: error: --data-dir t10k: mnist files missing: "
                                 "t10k-labels-idx1-ubyte.gz")


def test_another_datasets_folder_is_named_as_such_not_called_corrupt(model_file, mnist_dir, tmp_path):
    """MNIST's folder given for Fashion-MNIST (same file names): a 'checksum mismatch' with
    four digests and the advice to delete the file (a good MNIST file) and download again."""
    status, line = one_error_line("evaluate", model_file, "--dataset", "fashion-mnist", "--data-dir",
                                  mnist_dir, cwd=tmp_path)
    assert (status, line) == (1, f"tinycnn evaluate: error: {mnist_dir / 't10k-images-idx3-ubyte.gz'}: this is "
                                 "mnist's test images file, not the one asked for. This folder holds mnist's "
                                 "files: point --data-dir / data_dir= / TINYCNN_DATA_DIR at a folder of "
                                 "fashion-mnist's")


def test_a_data_dir_that_is_a_file_is_called_a_file(model_file, tmp_path):
    (tmp_path / "notes.txt").write_text("not a folder")
    status, line = one_error_line("evaluate", model_file, "--data-dir", "notes.txt", cwd=tmp_path)
    assert (status, line) == (1, "tinycnn evaluate: error: --data-dir notes.txt: is a file, not a folder")


def test_summary_prints_the_preprocessing_as_numbers(tmp_path):
    model = tinycnn.Sequential([L.Flatten(), L.Dense(4, 2)], input_shape=(1, 2, 2), seed=0)
    model.preprocessing = {"scale": 1 / 255, "mean": 0.1307, "std": 0.3081}
    model.save(tmp_path / "m.npz")
    proc = tinycnn_cli("summary", "m.npz", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "preprocessing: scale 0.003922, mean 0.1307, std 0.3081" \
        in proc.stdout.splitlines()


def test_the_total_time_counts_the_figures(numpy_backend, tmp_path, monkeypatch, capsys):
    """metrics.json is written before the figures (for a Ctrl-C while they are drawn) and
    again after them: its total, and the printed one, include the drawing."""
    import time
    from tinycnn import run

    def slow_figures(*args, **kwargs):
        time.sleep(0.5)
        return []

    monkeypatch.setattr(run, "draw", slow_figures)
    assert train_main(tmp_path) == 0
    total = json_file(tmp_path / "a" / "metrics.json")["total_seconds"]
    assert total >= 0.5 + json_file(tmp_path / "a" / "metrics.json")["train_seconds"]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("training: ")][0]
    assert printed.endswith(f"total {total:.1f}s")


def test_a_digit_smaller_than_a_digits_box_or_a_dot_is_read_with_a_note(model_file, tmp_path):
    """A 5x5 picture was enlarged and read as '7 (95.4%)' with nothing said; a 12-pixel digit
    in a 200x200 picture, and a dot, were read without a word (the note looked at the
    picture's size, not the digit's)."""
    from PIL import Image, ImageDraw
    Image.fromarray(np.eye(5, dtype=np.uint8) * 255).save(tmp_path / "tiny.png")
    corner = Image.new("L", (200, 200), 255)
    corner.paste(Image.fromarray(255 - np.eye(12, dtype=np.uint8) * 255), (20, 30))
    corner.save(tmp_path / "corner.png")
    dot = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(dot).ellipse([120, 120, 150, 150], fill=0)
    dot.save(tmp_path / "dot.png")
    digit_png(tmp_path / "full.png")
    proc = tinycnn_cli("predict", model_file, "tiny.png", "corner.png", "dot.png", "full.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    tiny, corner, dot, full = proc.stdout.splitlines()
    assert tiny.endswith("   (note: the digit is 5x5 pixels, enlarged to the 20x20 box MNIST's digits fill: "
                         "too small to read reliably)")
    assert corner.endswith("   (note: the digit is 12x12 pixels, enlarged to the 20x20 box MNIST's digits fill: "
                           "too small to read reliably)")
    assert re.search(r"   \(note: its ink is one solid blob \(\d\d% of its 3\dx3\d box\), more a dot than "
                     r"a digit's strokes\)$", dot), dot
    assert "too small" not in full and "blob" not in full       # (a sawtooth of grey, not a digit: its
    #                                                             edges may be noted as left out)


def test_ctrl_c_that_surfaces_as_another_error_is_still_one_line(numpy_backend, tmp_path, monkeypatch, capsys):
    """Ctrl-C while a module was being imported ended as a 53-line ImportError traceback, and
    inside Numba's compiler as a RuntimeError: what follows a Ctrl-C is reported as one."""
    import signal
    import time
    from tinycnn import run

    def stopped_mid_import(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            raise ImportError("initialization failed") from None

    monkeypatch.setattr(run, "fit", stopped_mid_import)
    assert train_main(tmp_path) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler      # (restored)


def test_saved_so_far_names_only_this_runs_files(numpy_backend, tmp_path, monkeypatch, capsys):
    """Into an old run's folder with --overwrite, a Ctrl-C before training listed the old
    run's model.npz, checkpoint.npz, ... as saved."""
    from tinycnn import run
    (tmp_path / "a").mkdir()
    for name in ("model.npz", "metrics.json", "curves.png"):
        (tmp_path / "a" / name).write_bytes(b"old")
        os.utime(tmp_path / "a" / name, (1e9, 1e9))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "fit", ctrl_c)
    assert train_main(tmp_path, "--overwrite") == 130
    assert capsys.readouterr().err.strip() == "interrupted"
