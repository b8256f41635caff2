"""A third hostile-input review: output files of the examples replaced unasked, a FIFO where a
dataset file belongs reported as missing, and predict --show into a folder that cannot be
written found only after the work. Each is refused in one line, before any work."""
import os

import pytest

from tinycnn import exercises
from tinycnn.cli import CommandError, output_folder
from tinycnn.run import data_dir_problem

from test_cli_mistakes import one_error_line
from test_hostile_round2 import run_example

MNIST_GZ = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
REFUSAL = "which this would replace; give a new folder, or add --overwrite"


# -- the examples keep files already at --out ------------------------------------------------

def test_saliency_maps_example_keeps_an_existing_figure_unless_told(tmp_path):
    (tmp_path / "s.png").write_bytes(b"mine")
    # A model that does not exist: the refusal comes before it is loaded.
    proc = run_example("saliency_maps.py", "--model", "nope.npz", "--out", "s.png", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, f"saliency_maps.py: error: --out .: already holds s.png, {REFUSAL}\n")
    assert (tmp_path / "s.png").read_bytes() == b"mine"
    proc = run_example("saliency_maps.py", "--model", "nope.npz", "--out", "s.png", "--overwrite", cwd=tmp_path)
    assert proc.stderr.startswith("saliency_maps.py: error: nope.npz: no such model file")   # past the check


def test_paper_digits_example_keeps_the_files_of_an_earlier_run_unless_told(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "0001-digit1.jpg").write_bytes(b"mine")
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "3", "--out", "p", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, f"paper_digits.py: error: --out p: already holds 0001-digit1.jpg, "
                                                 f"{REFUSAL}\n")
    assert os.listdir(tmp_path / "p") == ["0001-digit1.jpg"]         # nothing drawn
    assert (tmp_path / "p" / "0001-digit1.jpg").read_bytes() == b"mine"
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "3", "--out", "p", "--overwrite",
                       cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "p" / "0001-digit1.jpg").read_bytes()[:2] == b"\xff\xd8"   # a JPEG now


# -- a FIFO where a file is read ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"])
def test_a_fifo_in_the_data_dir_is_named_not_missing(tmp_path, monkeypatch, name):
    """Was "mnist files missing: t10k-images-idx3-ubyte.gz". Found from its mode: opening a
    FIFO to read it would wait forever for a writer."""
    (tmp_path / "d").mkdir()
    for other in MNIST_GZ[:2] + MNIST_GZ[3:]:
        (tmp_path / "d" / other).write_bytes(b"")
    os.mkfifo(tmp_path / "d" / name)
    why = f"--data-dir d: {name} is a FIFO (named pipe), not a regular file"
    monkeypatch.chdir(tmp_path)
    assert data_dir_problem("d", "mnist") == why
    assert one_error_line("evaluate", "mnist", "--data-dir", "d", cwd=tmp_path) == (1, f"tinycnn evaluate: error: {why}")
    assert one_error_line("train", "--data-dir", "d", cwd=tmp_path) == (2, f"tinycnn train: error: {why} (see --help)")


def test_a_fifo_given_to_resume_or_to_the_exercise_checker_is_named(tmp_path, capsys):
    """Both said "no such file"."""
    os.mkfifo(tmp_path / "checkpoint.npz")
    assert one_error_line("train", "--dataset", "digits", "--resume", "checkpoint.npz", cwd=tmp_path) == (
        2, "tinycnn train: error: --resume checkpoint.npz: is a FIFO (named pipe), not a checkpoint file (see --help)")
    fifo = tmp_path / "dense_backward.py"
    os.mkfifo(fifo)
    assert exercises.main([str(fifo)]) == 2
    assert capsys.readouterr().err == (f"python -m tinycnn.exercises: error: {fifo}: is a FIFO (named pipe), not a Python file (the stub to copy "
                                       "and fill in is docs/exercises/dense_backward.py)\n")


# -- predict --show into a folder that cannot be written ------------------------------------

@pytest.fixture(params=["/sys", "read-only folder"])
def unwritable(request, tmp_path):
    """A folder nothing can be written in: /sys holds out even root (the CI user), for
    whom a chmod'ed folder is writable."""
    if request.param == "/sys":
        if not os.path.isdir("/sys"):
            pytest.skip("no /sys here (not Linux)")
        yield "/sys"
        return
    if os.geteuid() == 0:
        pytest.skip("root writes in a read-only folder")
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o555)
    yield str(folder)
    folder.chmod(0o755)


def test_predict_show_into_a_folder_that_cannot_be_written_is_refused_first(tmp_path, unwritable):
    """Failed at the first figure, after loading the model and reading the first image."""
    with pytest.raises(CommandError, match=rf"^--show {unwritable}: cannot write there \(.+\)$"):
        output_folder(unwritable, "--show")
    # A model that does not exist: the refusal comes before it is loaded.
    status, line = one_error_line("predict", "nope.npz", "d.png", "--show", unwritable, cwd=tmp_path)
    assert status == 1 and line.startswith(f"tinycnn predict: error: --show {unwritable}: cannot write there (")
