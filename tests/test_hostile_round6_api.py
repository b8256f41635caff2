"""Round 6 of the hostile-input review (items 2, 3, 5, 6, 7 and 8 of its report): pooling
and convolution work in the model check, inference slices bounded in memory, the download
deadline from the connection on, class names drawn literally, escaped server logs and
preprocessing keys, and figure names within the file system's limit. Small models, the NumPy
kernels (nothing to compile) and local servers only."""
import io
import os
import socket
import threading
import time

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

import tinycnn
from tinycnn import layers as L, modelcheck, models, plotting, serve, train
from tinycnn.cli import figure_names
from tinycnn.datasets import DownloadError
from tinycnn.datasets.download import download_file
from tinycnn.io import ModelFormatError, load_model
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.model import Sequential

from httpserver import FileServer
from test_hostile_round2 import numpy_kernels, run_cli, save_unchecked  # noqa: F401  (autouse: the NumPy kernels)


def tiny_model(class_names=None, preprocessing=None):
    """784 -> 2: enough for predict, evaluate and serve to run on 28x28 pictures."""
    model = Sequential([L.Flatten(), L.Dense(784, 10)], input_shape=(1, 28, 28), seed=0)
    model.class_names = class_names
    model.preprocessing = preprocessing or {}
    return model


def digit_png(path):
    """A dark 7 on white, as a photographed digit would be."""
    im = Image.new("L", (56, 56), 255)
    ImageDraw.Draw(im).line([(12, 10), (44, 10), (22, 48)], fill=0, width=5)
    im.save(path)
    return path


# -- 2. pooling windows and convolution work are checked at load -------------------------------

def pool_model(kind, padding=500, window=1000):
    """4 KB: a 28x28 picture padded to 1028x1028, then a window x window pooling at stride 1
    (29x29 outputs of a million taps each), then back to 10 classes."""
    side = 28 + 2 * padding - window + 1
    return Sequential([L.Conv2D(1, 1, 1, padding=padding), kind(window, stride=1), L.MaxPool2D(side),
                       L.Flatten(), L.Dense(1, 10)], input_shape=(1, 28, 28), seed=0)


@pytest.mark.parametrize("kind, name", [(L.MaxPool2D, "maxpool2d_1"), (L.AvgPool2D, "avgpool2d_1")])
def test_pooling_windows_of_a_model_file_are_refused_at_load(tmp_path, kind, name):
    # Before the fix this loaded; one prediction then made 8.4e8 window taps (the report's
    # 1029x1029 version: 1.06e12 taps, 19 min; the NumPy max pooling stacks them: 3.4 GiB)
    save_unchecked(pool_model(kind), tmp_path / "pool.npz")
    assert os.path.getsize(tmp_path / "pool.npz") < 5000
    with pytest.raises(ModelFormatError, match=rf"pool.npz: layer {name} would need pooling windows of "
                                               r"shape \(1000000, 1, 29, 29\) \(841,000,000 values\) for "
                                               r"one input of shape \(1, 28, 28\); at most 16,777,216 "
                                               r"\(tinycnn.modelcheck.MAX_ACTIVATION\)"):
        load_model(tmp_path / "pool.npz")


def test_pooling_model_is_one_line_from_predict(tmp_path, capsys):
    save_unchecked(pool_model(L.MaxPool2D), tmp_path / "pool.npz")
    status, out, err = run_cli(capsys, "predict", tmp_path / "pool.npz", digit_png(tmp_path / "d.png"))
    assert (status, out) == (1, "") and err.count("\n") == 1
    assert err.startswith("tinycnn predict: error: ") and "layer maxpool2d_1 would need pooling windows" in err


def test_a_pooling_window_of_too_many_positions_is_refused(tmp_path):
    """The NumPy kernels make a view per window position, in Python: the report's 4096x4096
    window (2**24 positions, within MAX_ACTIVATION) cost seconds and gigabytes of views per call."""
    model = Sequential([L.Conv2D(1, 1, 1, padding=2034), L.MaxPool2D(4096), L.Flatten(), L.Dense(1, 10)],
                       input_shape=(1, 28, 28), seed=0)
    save_unchecked(model, tmp_path / "wide.npz")
    with pytest.raises(ModelFormatError, match=r"wide.npz: layer maxpool2d_1 has a pooling window of "
                                               r"4096x4096 \(16,777,216 positions\); at most 65,536 "
                                               r"\(tinycnn.modelcheck.MAX_POOL_WINDOW\)"):
        load_model(tmp_path / "wide.npz")
    modelcheck.check_activations("256", pool_model(L.MaxPool2D, padding=114, window=256), (1, 28, 28))


def test_convolution_multiply_adds_are_refused_at_load(tmp_path):
    """Each array within MAX_ACTIVATION (columns 625 x 162 x 162 = 16.4 million), but 128
    filters over them: 2.1e9 multiply-adds for one picture."""
    model = Sequential([L.Conv2D(1, 128, 25, padding=79), L.MaxPool2D(162), L.Flatten(), L.Dense(128, 10)],
                       input_shape=(1, 28, 28), seed=0)
    save_unchecked(model, tmp_path / "conv.npz")
    with pytest.raises(ModelFormatError, match=r"conv.npz: layer conv2d_0 would need 2,099,520,000 "
                                               r"multiply-adds for one input of shape \(1, 28, 28\); at "
                                               r"most 1,073,741,824 in all \(tinycnn.modelcheck.MAX_MULTIPLY_ADDS; raise it before loading a model "
                                               r"you trust\)"):
        load_model(tmp_path / "conv.npz")


def test_work_is_counted_over_all_layers_and_bundled_models_pass_with_room(monkeypatch):
    """The comment's numbers: bnnet needs 4,663,296 multiply-adds (the most of the bundled
    models; the bound is 230 times that) and convnet 28,032 window taps (2,394 times less than
    the bound); each model also fits 256 examples per slice."""
    bnnet, convnet = models.bnnet(), models.convnet()
    monkeypatch.setattr(modelcheck, "MAX_MULTIPLY_ADDS", 4_663_296)
    monkeypatch.setattr(modelcheck, "MAX_WINDOW_TAPS", 28_032)
    modelcheck.check_activations("bnnet", bnnet, bnnet.input_shape)
    modelcheck.check_activations("convnet", convnet, convnet.input_shape)
    monkeypatch.setattr(modelcheck, "MAX_MULTIPLY_ADDS", 4_663_295)
    with pytest.raises(ModelFormatError, match=r"bnnet: layer conv2d_7 would need 2,359,296 multiply-adds "
                                               r"\(4,663,296 with the layers before it\) for one input of "
                                               r"shape \(1, 28, 28\); at most 4,663,295 in all"):
        modelcheck.check_activations("bnnet", bnnet, bnnet.input_shape)
    monkeypatch.setattr(modelcheck, "MAX_WINDOW_TAPS", 28_031)
    with pytest.raises(ModelFormatError, match=r"convnet: layer maxpool2d_3 would need 6,400 window taps "
                                               r"\(28,032 with the layers before it\).*MAX_WINDOW_TAPS"):
        modelcheck.check_activations("convnet", convnet, convnet.input_shape)
    monkeypatch.setattr(modelcheck, "MAX_MULTIPLY_ADDS", 2**30 // 230)
    monkeypatch.setattr(modelcheck, "MAX_WINDOW_TAPS", 2**26 // 2394)
    for name, build in models.ARCHITECTURES.items():
        model = build()
        modelcheck.check_activations(name, model, model.input_shape)
        assert modelcheck.examples_per_slice(model, model.input_shape) >= Sequential.MAX_INFERENCE_SLICE


# -- 3. inference slices shrink for models with large arrays per example ----------------------

def record_slices(model, monkeypatch):
    """Make model.forward record the size of each batch it is given (and compute nothing)."""
    sizes = []

    def forward(x, training=None):
        sizes.append(len(x))
        return np.zeros((len(x), 10), np.float32)
    monkeypatch.setattr(model, "forward", forward)
    return sizes


def test_predict_proba_and_evaluate_slices_fit_the_memory_budget(monkeypatch):
    # A 1024x1024 padded input, columns and output: 2**20 values per example, so a slice of
    # 64 holds 2**26 in each. Before the fix: slices of 256 (1 GiB an array; the report's
    # 2**24 model asked 16 GiB for its first array).
    model = Sequential([L.Conv2D(1, 1, 1, padding=498), L.MaxPool2D(256), L.MaxPool2D(4), L.Flatten(),
                        L.Dense(1, 10)], input_shape=(1, 28, 28), seed=0)
    modelcheck.check_activations("wide", model, model.input_shape)       # a model that loads
    sizes = record_slices(model, monkeypatch)
    x, y = np.zeros((300, 1, 28, 28), np.float32), np.zeros(300, np.int64)
    model.predict_proba(x)
    assert sizes == [64, 64, 64, 64, 44]
    sizes.clear()
    train.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=1000)
    assert sizes == [64, 64, 64, 64, 44]


def test_bundled_models_keep_their_slices(monkeypatch):
    model = models.fastnet()
    sizes = record_slices(model, monkeypatch)
    x, y = np.zeros((300, 1, 28, 28), np.float32), np.zeros(300, np.int64)
    model.predict_proba(x, batch_size=1000)
    assert sizes == [256, 44]
    sizes.clear()
    train.evaluate(model, SoftmaxCrossEntropy(), x, y, batch_size=1000)
    assert sizes == [300]


# -- 5. the download deadline covers the status line and headers ------------------------------

def test_a_mirror_trickling_its_headers_fails_at_the_deadline(tmp_path):
    """The server sends its status line, then a header a byte every 0.1 s (10 s in all): the
    read timeout never fires. Before the fix the 1 s deadline was checked only in the body,
    and this download waited the 10 s and succeeded."""
    with FileServer({"f.bin": b"payload"}, trickle_seconds=0.1) as server:
        started = time.monotonic()
        with pytest.raises(DownloadError) as err:
            download_file([server.mirror("headers") + "f.bin"], tmp_path / "dl" / "f.bin", deadline=1,
                          retries=1, timeout=(5, 5), progress=False)
        seconds = time.monotonic() - started
        assert seconds < 4, seconds
        assert (f"  - {server.mirror('headers')}f.bin: too slow: no complete answer in 1." in str(err.value)
                and "s, past the 1 s deadline for one file (deadline=... or "
                    "TINYCNN_DOWNLOAD_DEADLINE sets it)" in str(err.value))
        assert os.listdir(tmp_path / "dl") == []
        # the next mirror is still tried, and a quick one is not cut short
        done = download_file([server.mirror("headers") + "f.bin", server.mirror("ok") + "f.bin"],
                             tmp_path / "dl" / "f.bin", deadline=1, retries=1, progress=False)
        assert open(done, "rb").read() == b"payload"


# -- 6. class names are drawn as text, never as mathtext ---------------------------------------

MATH_NAMES = ["$\\foo$", "$" + "x^{" * 45 + "x" + "}" * 45 + "$"]     # a parse error; a RecursionError


def names_with(bad):
    return [bad] + [str(i) for i in range(1, 10)]


@pytest.mark.parametrize("bad", MATH_NAMES, ids=["unknown-symbol", "deep"])
@pytest.mark.parametrize("draw", [
    lambda names: plotting.plot_confusion_matrix(np.eye(10, dtype=int), names),
    lambda names: plotting.plot_predictions(np.zeros((4, 8, 8)), [0, 0, 1, 2], np.eye(10)[[0, 1, 1, 2]], names, n=4),
    lambda names: plotting.plot_mistakes(np.zeros((4, 8, 8)), [1, 0, 1, 2], np.eye(10)[[0, 0, 1, 2]], names),
    lambda names: plotting.plot_samples(np.zeros((4, 8, 8)), [0, 0, 1, 1], names, per_class=2),
    lambda names: plotting.plot_prediction(np.zeros((8, 8)), np.zeros((8, 8)), np.eye(10)[0], names,
                                           saliency=np.ones((8, 8))),
    lambda names: plotting.plot_saliency(np.zeros((2, 8, 8)), np.ones((2, 8, 8)), np.eye(10)[[0, 1]], names, [0, 0]),
], ids=["confusion", "predictions", "mistakes", "samples", "prediction", "saliency"])
def test_class_names_with_dollars_are_drawn_literally(draw, bad):
    fig = draw(names_with(bad))
    fig.savefig(io.BytesIO(), format="png")          # was ParseFatalException or RecursionError
    texts = [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]
    drawn = [t for t in texts if "foo" in t or "x^{" in t]
    assert drawn and all(t.count("$") == t.count("\\$") for t in drawn)     # each "$" escaped


def test_a_figure_that_fails_leaves_no_folder_and_no_traceback(tmp_path, capsys, monkeypatch):
    """Any figure failure (RecursionError, before the fix, from a deep mathtext class name)
    is one line, and the --show / --out folder the command would have made is not left
    behind empty."""
    tiny_model().save(tmp_path / "m.npz")
    digit = digit_png(tmp_path / "d.png")

    def fail(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(Figure, "savefig", fail)
    status, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", digit, "--show", tmp_path / "shown")
    assert status == 1 and err.count("\n") == 1
    assert "shown/d-prediction.png: matplotlib could not draw this figure's text (nested too deeply)" in err
    assert not os.path.exists(tmp_path / "shown")
    status, out, err = run_cli(capsys, "evaluate", tmp_path / "m.npz", "--dataset", "digits", "--out",
                               tmp_path / "figures")
    assert status == 1 and err.count("\n") == 1 and "matplotlib could not draw" in err
    assert not os.path.exists(tmp_path / "figures")
    (tmp_path / "mine").mkdir()                      # a folder that was there stays
    run_cli(capsys, "predict", tmp_path / "m.npz", digit, "--show", tmp_path / "mine")
    assert os.path.isdir(tmp_path / "mine")


def test_predict_show_draws_a_mathtext_class_name(tmp_path, capsys):
    tiny_model(names_with(MATH_NAMES[1])).save(tmp_path / "m.npz")
    status, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", digit_png(tmp_path / "d.png"),
                               "--show", tmp_path / "shown")
    assert (status, err) == (0, "") and os.path.isfile(tmp_path / "shown" / "d-prediction.png")


# -- 7. escapes in the server's log and in preprocessing keys --------------------------------

def test_server_log_escapes_the_method_and_path(capsys):
    server = serve.DigitServer(tiny_model(), "m", "127.0.0.1", 0, log=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.url.split("//")[1].rstrip("/").split(":")
        for line in (b"GET /\x1b[2J\x1b[31mx HTTP/1.1", b"\x1b]0;owned\x07 / HTTP/1.1"):
            with socket.create_connection((host, int(port)), timeout=30) as s:
                s.sendall(line + f"\r\nHost: {host}:{port}\r\n\r\n".encode())
                while s.recv(65536):
                    pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err
    assert err == ("tinycnn serve: GET /\\x1b[2J\\x1b[31mx -> 404\n"
                   "tinycnn serve: \\x1b]0;owned\\x07 / -> 501\n")


def test_unknown_preprocessing_keys_are_refused_naming_the_key_escaped(tmp_path, capsys):
    key = "\x1b[2J\x1b[31mtinycnn summary: error: model is malware\x1b[0m\n"
    model = tiny_model(preprocessing={"scale": 1 / 255, "mean": 0.13, "std": 0.31, key: 1})
    save_unchecked(model, tmp_path / "esc.npz")
    with pytest.raises(ModelFormatError, match=r"esc.npz: __meta__ field preprocessing has an unknown key "
                                               r"'\\x1b\[2J\\x1b\[31mtinycnn summary: error: model is malware"
                                               r"\\x1b\[0m\\n'; known: mean, std, scale"):
        load_model(tmp_path / "esc.npz")
    status, out, err = run_cli(capsys, "summary", tmp_path / "esc.npz")
    assert (status, out) == (1, "") and err.count("\n") == 1 and "\x1b" not in err
    with pytest.raises(ValueError, match="not saved: it would not load again: .* unknown key 'note'"):
        tiny_model(preprocessing={"note": "x"}).save(tmp_path / "note.npz")


# -- 8. figure names within the file system's name limit -------------------------------------

def test_long_figure_names_are_shortened_deterministically_and_stay_distinct(tmp_path):
    stems = ["a" * 250, "a" * 249 + "b", "é" * 200, "a" * 250]       # the last one again
    paths = [str(tmp_path / f"{s}.png") for s in stems] + [str(tmp_path / "x" / ("a" * 250 + ".jpg"))]
    names = figure_names(paths, tmp_path)
    assert all(len(os.fsencode(n)) <= 255 for n in names)
    assert len(set(names)) == len(names) and names == figure_names(paths, tmp_path)
    assert names[0].startswith("a" * 200) and names[0].endswith("-prediction.png")
    assert names[3].endswith("-2-prediction.png") and names[4].endswith("-3-prediction.png")
    assert figure_names(["dir/short.png"], tmp_path) == ["short-prediction.png"]


def test_predict_show_with_a_250_character_file_name_writes_every_figure(tmp_path, capsys):
    # Before the fix: "[Errno 36] File name too long" after the first figures, exit 1, and
    # no line for the images after it.
    tiny_model().save(tmp_path / "m.npz")
    (tmp_path / "in").mkdir()
    for name in ("0.png", "a" * 246 + ".png", "b.png", "c" * 230 + ".png"):   # (c: its temporary name)
        digit_png(tmp_path / "in" / name)
    status, out, err = run_cli(capsys, "predict", tmp_path / "m.npz", tmp_path / "in", "--show", tmp_path / "out")
    assert (status, err) == (0, "") and len(out.splitlines()) == 5      # four images, then the folder
    assert len(os.listdir(tmp_path / "out")) == 4
