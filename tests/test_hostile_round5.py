"""Hostile input, round 5 (session 20): what the first four rounds left open in image
decoding, the gradient check, the exercises checker and the example scripts. (The training
and metrics API's cases are in test_hostile_round5_api.py.)"""
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn
from tinycnn import exercises
from tinycnn.cli import reporting_user_errors
from tinycnn.preprocess import open_image, to_mnist

ROOT = Path(__file__).resolve().parents[1]
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"


def fake_ghostscript(folder):
    """A `gs` that records that it ran: Pillow's EPS plugin runs the real one on the file."""
    marker = folder / "gs-ran"
    gs = folder / "gs"
    gs.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\nexit 0\n")
    gs.chmod(gs.stat().st_mode | stat.S_IEXEC)
    return marker


def test_postscript_is_not_handed_to_ghostscript(tmp_path, monkeypatch):
    """An EPS file (or request body) was passed to Ghostscript, an outside program that runs
    it: a client of `tinycnn serve` could run code or hold the server's lock forever."""
    marker = fake_ghostscript(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "d.eps").write_bytes(EPS)
    with pytest.raises(ValueError) as err:
        open_image(tmp_path / "d.eps")
    assert str(err.value) == f"{tmp_path / 'd.eps'}: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)"
    from tinycnn import serve
    with pytest.raises(serve.BadRequest, match=r"not an image file \(PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM\)$"):
        serve.decode_image(EPS, "application/postscript")
    assert not marker.exists()


def test_the_formats_a_user_sends_still_open(tmp_path):
    from PIL import Image
    seven = np.zeros((40, 40), np.uint8)
    seven[8:12, 10:30] = 255
    seven[12:34, 24:28] = 255
    for suffix in ("png", "jpg", "gif", "bmp", "tif", "webp", "ppm"):
        Image.fromarray(seven).save(tmp_path / f"seven.{suffix}")
        assert to_mnist(tmp_path / f"seven.{suffix}").max() == 1.0, suffix


def test_a_nan_gradient_is_the_worst_error_not_none():
    """A NaN anywhere but the first element passed (NaN > x is False)."""
    class Bad(tinycnn.layers.Sigmoid):
        def backward(self, dy):
            dx = super().backward(dy).copy()
            dx.reshape(-1)[3] = np.nan
            return dx

    result = tinycnn.gradcheck(Bad(), np.random.default_rng(0).standard_normal((2, 5)))
    assert result.max_rel_error == np.inf and result.where == "x[0, 3]"


def exercise_file(tmp_path, body, name="dense_backward"):
    path = tmp_path / f"{name}.py"
    path.write_text("import numpy as np\n\n" + body)
    return path


def check(path, capsys):
    status = exercises.main([str(path)])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


RIGHT = ("def dense_backward(x, W, b, dy):\n"
         "    return dy @ W.T, x.T @ dy, dy.sum(axis=0)\n")


@pytest.mark.parametrize("where", ["module", "function"])
def test_an_exit_in_the_learners_file_is_an_error_not_a_pass(tmp_path, capsys, where):
    """exit() left in the file ended the checker with status 0 before any check."""
    body = RIGHT.replace("    return", "    exit()\n    return") if where == "function" else RIGHT + "exit()\n"
    status, out = check(exercise_file(tmp_path, body), capsys)
    assert status == 1 and "all checks passed" not in out and "Traceback" not in out, out
    assert "exit() or sys.exit() (dense_backward.py, line " in out and ": remove it (the checker calls" in out, out


@pytest.mark.parametrize("returned, says", [
    ("dy @ W.T, x.T @ dy, dy.sum(axis=0) + 1j", "FAIL db: your function returned complex numbers (ndarray)"),
    ("dy @ W.T, x.T @ dy, 'abc'", "FAIL db: your function returned text (str)"),
    ("dy @ W.T, x.T @ dy, [[1, 2], [3]]", "FAIL db: your function returned something that is not an array of "
                                          "numbers (ragged lists, or objects) (list)"),
])
def test_a_result_that_is_not_real_numbers_fails_by_name(tmp_path, capsys, returned, says):
    """A complex result passed (float64 kept its real part); text or ragged lists gave a traceback."""
    path = exercise_file(tmp_path, f"def dense_backward(x, W, b, dy):\n    return {returned}\n")
    status, out = check(path, capsys)
    assert status == 1 and says in out and "Traceback" not in out and "all checks passed" not in out, out


def test_ctrl_c_in_the_checker_is_one_line(tmp_path, capsys, monkeypatch):
    """The way out of a learner's endless loop printed a traceback."""
    path = exercise_file(tmp_path, RIGHT)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(exercises, "check", interrupted)
    status, out = check(path, capsys)
    assert status == 130 and out.endswith("\ninterrupted\n") and "Traceback" not in out


def test_the_example_scripts_report_ctrl_c_as_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt
    assert reporting_user_errors("predict_digit.py", interrupted) == 130
    assert capsys.readouterr().err == "\ninterrupted\n"


def test_speedrun_leaves_no_checkpoint_it_cannot_resume(tmp_path, monkeypatch, capsys):
    """Ctrl-C in speedrun.py left interrupted-checkpoint.npz (several MB) in the working
    folder, and a traceback; speedrun has no --resume."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import speedrun
    finally:
        sys.path.remove(str(ROOT / "examples"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(speedrun.datasets, "load_mnist", lambda **kw: (
        (np.zeros((8, 28, 28), np.uint8), np.arange(8) % 2), (np.zeros((4, 28, 28), np.uint8), np.arange(4) % 2)))

    def fit_until_ctrl_c(*args, **kwargs):
        (tmp_path / "interrupted-checkpoint.npz").write_bytes(b"state")      # as fit saves it
        raise tinycnn.TrainingInterrupted("stopped", str(tmp_path / "interrupted-checkpoint.npz"), 1, 1)
    monkeypatch.setattr(speedrun.tinycnn, "fit", fit_until_ctrl_c)
    monkeypatch.setattr(sys, "argv", ["speedrun.py", "--data-dir", str(tmp_path)])
    assert speedrun.main() == 130
    assert capsys.readouterr().err == "\ninterrupted\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("make", [
    lambda g: g.astype(np.float32),                            # a float image on its own scale
    lambda g: np.dstack([g] * 3).astype(np.uint16),            # 16-bit RGB
    lambda g: np.dstack([g * 5] * 3).astype(np.uint16),
    lambda g: np.dstack([g * 5] * 3 + [np.full(g.shape, 65535)]).astype(np.uint16),   # with opaque alpha
])
def test_wide_arrays_are_scaled_by_their_range_not_called_blank(make):
    """Ink 1000 on paper 4000 as a float array, or as 16-bit RGB, was divided by 255, clipped,
    and called blank; a 2-D uint16 array or a PIL "F" image already worked."""
    paper = np.full((60, 60), 4000.0)
    paper[10:50, 28:33] = 1000
    expected = to_mnist(paper.astype(np.uint16))
    np.testing.assert_allclose(to_mnist(make(paper)), expected, atol=1e-5)


def test_images_on_the_usual_scales_read_as_before():
    """uint8, 0-1 floats and 0-255 floats, grey and RGB(A): unchanged by the range rule."""
    g = np.zeros((40, 40), np.uint8)
    g[8:32, 18:23] = 255
    expected = to_mnist(g)
    rgba = np.dstack([g] * 3 + [np.full(g.shape, 255, np.uint8)])
    for a in (g.astype(np.float32) / 255, g.astype(np.float32), np.dstack([g] * 3), rgba,
              np.dstack([g / 255.0] * 3), rgba.astype(np.int64), rgba.astype(np.int32), rgba.astype(np.uint16)):
        np.testing.assert_allclose(to_mnist(a), expected, atol=1e-6)


def test_the_cli_refuses_an_eps_file_in_one_line(tmp_path):
    (tmp_path / "d.eps").write_bytes(EPS)
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "predict", "mnist", str(tmp_path / "d.eps")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (
        1, f"{tmp_path / 'd.eps'}: skipped: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)\n")
