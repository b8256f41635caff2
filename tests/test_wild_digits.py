"""Digits from outside MNIST: preprocessing, prediction from files and the command line."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import tinycnn
from tinycnn import datasets, sketch
from tinycnn.cli import predict_images
from tinycnn.preprocess import to_mnist

from httpserver import FileServer

ROOT = Path(__file__).resolve().parents[1]


def centre_of_mass(a):
    ys, xs = np.indices(a.shape)
    return (ys * a).sum() / a.sum(), (xs * a).sum() / a.sum()


def paper_digit(mode="RGB"):
    """A tall dark '1'-like stroke, off-centre on a large white canvas."""
    img = Image.new(mode, (600, 800), "white" if mode != "RGBA" else (255, 255, 255, 0))
    d = ImageDraw.Draw(img)
    d.line([(420, 150), (440, 550)], fill="black", width=40)
    d.line([(440, 150), (360, 250)], fill="black", width=30)
    return img


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_dark_on_light_off_centre_comes_out_mnist_like(mode):
    out = to_mnist(paper_digit(mode))
    assert out.shape == (28, 28) and out.dtype == np.float32
    assert out.max() == pytest.approx(1.0) and out[0].max() < 0.05 and out[:, 0].max() < 0.05  # bright ink, black frame
    rows = np.flatnonzero(out.max(axis=1) > 0.1)
    assert 19 <= rows[-1] - rows[0] + 1 <= 21                       # 20 pixels tall
    cy, cx = centre_of_mass(out)
    assert abs(cy - 13.5) < 0.5 and abs(cx - 13.5) < 0.5


def test_inverted_and_array_inputs_agree():
    rgb = np.asarray(paper_digit("RGB"))
    from_light = to_mnist(rgb)
    from_dark = to_mnist(255 - rgb)                                  # bright ink on black
    from_float = to_mnist(rgb.astype(np.float32) / 255)
    np.testing.assert_allclose(from_light, from_dark, atol=0.02)
    np.testing.assert_allclose(from_light, from_float, atol=0.02)


def test_light_ink_on_a_transparent_sheet_is_read_as_ink():
    """A white digit on a transparent sheet (as a drawing app's dark mode exports it):
    composited on white, it vanished ('the image looks blank')."""
    img = Image.new("RGBA", (600, 800), (255, 255, 255, 0))
    d = ImageDraw.Draw(img)
    d.line([(420, 150), (440, 550)], fill=(255, 255, 255, 255), width=40)
    d.line([(440, 150), (360, 250)], fill=(255, 255, 255, 255), width=30)
    np.testing.assert_allclose(to_mnist(img), to_mnist(paper_digit("RGB")), atol=0.02)
    np.testing.assert_allclose(to_mnist(np.asarray(img)), to_mnist(paper_digit("RGB")), atol=0.02)
    # Dark ink on a white card with a transparent margin is still dark ink on white (a first
    # version of the rule composited the margin on black, and read the card as the ink).
    card = Image.new("RGBA", (640, 840), (0, 0, 0, 0))
    card.paste(paper_digit("RGB").convert("RGBA"), (20, 20))
    np.testing.assert_allclose(to_mnist(card), to_mnist(paper_digit("RGB")), atol=0.02)


@pytest.mark.parametrize("image", [np.full((100, 80), 255, np.uint8), np.zeros((50, 50)),
                                   np.full((40, 40, 3), 0.7, np.float32)])
def test_blank_image_is_refused(image):
    with pytest.raises(ValueError, match="looks blank"):
        to_mnist(image)


def test_mnist_form_passes_unchanged(mnist_dir):
    _, (xt, _) = datasets.load_mnist(data_dir=mnist_dir, download=False)
    for a in xt[:50]:
        np.testing.assert_array_equal(to_mnist(a), a.astype(np.float32) / 255)


def test_read_digit_notes_dots_and_tiny_digits_but_not_digits(mnist_dir):
    """read_digit's note: none for pen-drawn digits or for MNIST digits enlarged 4x on a
    larger sheet; one for a dot, and for a digit under 20 px."""
    from tinycnn.preprocess import read_digit
    rng = np.random.default_rng(3)
    for digit in range(10):
        for _ in range(3):
            picture = sketch.render(sketch.digit_strokes(digit, rng), rng)
            frame, note = read_digit(picture)
            assert note is None, (digit, note)
            np.testing.assert_array_equal(frame, to_mnist(picture))
    _, (xt, _) = datasets.load_mnist(data_dir=mnist_dir, download=False)
    notes = [read_digit(np.pad(np.kron(a, np.ones((4, 4), np.uint8)), 20))[1] for a in xt[:200]]
    assert notes.count(None) == 200, [n for n in notes if n]
    dot = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(dot).ellipse([100, 100, 122, 122], fill=0)
    assert read_digit(dot)[1].startswith("its ink is one solid blob (")
    half = Image.fromarray(np.asarray(paper_digit("L"))[::25, ::25])      # the "1", 17 px tall
    assert read_digit(half)[1].startswith("the digit is ")
    assert "x17 pixels, enlarged to the 20x20 box" in read_digit(half)[1]


def test_noise_is_ignored():
    rng = np.random.default_rng(0)
    rgb = np.asarray(paper_digit("L")).astype(np.float32)
    noisy = np.clip(rgb + rng.normal(0, 12, rgb.shape), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(to_mnist(noisy), to_mnist(rgb.astype(np.uint8)), atol=0.2)


# -- with a model trained on real MNIST ------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    mnist = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
    if not (mnist / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {mnist}")
    (x, y), (xt, yt) = datasets.load_mnist(data_dir=mnist, download=False)
    model = tinycnn.models.fastnet(seed=0)
    model.preprocessing = {"scale": 1 / 255, "mean": 0.1307, "std": 0.3081}
    model.class_names = [str(d) for d in range(10)]
    tinycnn.fit(model, tinycnn.losses.SoftmaxCrossEntropy(), tinycnn.optim.Adam(model, 0.01, (0.7, 0.9)),
                model.preprocess(x[:20000]), y[:20000], epochs=1, batch_size=256,
                schedule=tinycnn.schedules.OneCycle(0.01), progress=False, log=None)
    path = tmp_path_factory.mktemp("model") / "model.npz"
    model.save(path)
    return model, str(path), xt[:300], yt[:300]


def write_pngs(folder, images, transform=lambda a: a):
    folder.mkdir()
    paths = []
    for i, a in enumerate(images):
        p = folder / f"{i:03d}.png"
        Image.fromarray(transform(a, i)).save(p)
        paths.append(str(p))
    return paths


def test_png_files_get_the_labels_the_arrays_get(trained, tmp_path):
    model, path, xt, yt = trained
    write_pngs(tmp_path / "png", xt[:100], lambda a, i: a)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "predict_digit.py"), "--model", path,
                          str(tmp_path / "png")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    from_files = [int(line.split(": ")[1].split()[0]) for line in out.stdout.splitlines()]
    from_arrays = model.predict(model.preprocess(xt[:100]))
    assert len(from_files) == 100
    np.testing.assert_array_equal(from_files, from_arrays)


def test_big_inverted_off_centre_keeps_accuracy(trained, tmp_path):
    model, _, xt, yt = trained
    rng = np.random.default_rng(1)

    def paperlike(a, i):                                           # 200x200, dark on light, shifted
        big = 255 - np.asarray(Image.fromarray(a).resize((200, 200), Image.BICUBIC))
        canvas = np.full((320, 320), 255, np.uint8)
        y0, x0 = rng.integers(0, 120, 2)
        canvas[y0:y0 + 200, x0:x0 + 200] = big
        return canvas
    paths = write_pngs(tmp_path / "paper", xt, paperlike)
    results, failures = predict_images(model, paths)
    assert not failures
    acc_files = np.mean([int(r["digit"]) == t for r, t in zip(results, yt)])
    acc_arrays = np.mean(model.predict(model.preprocess(xt)) == yt)
    assert acc_files >= 0.95 * acc_arrays, (acc_files, acc_arrays)


# -- the command line ------------------------------------------------------------------------

def cli(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "tinycnn", *map(str, args)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, MPLBACKEND="Agg", **(env or {})), cwd=cwd)


def test_cli_train_evaluate_summary_predict_bench(tmp_path):
    out = cli("train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--quiet", "--no-plots",
              "--out", tmp_path / "run")
    assert out.returncode == 0, out.stderr
    model = tmp_path / "run" / "model.npz"
    ev = cli("evaluate", model, "--dataset", "digits", "--out", tmp_path / "ev")
    assert ev.returncode == 0 and "digits test set, 360 images: accuracy" in ev.stdout, ev.stderr
    assert (tmp_path / "ev" / "confusion_matrix.png").exists()
    sm = cli("summary", model)
    assert sm.returncode == 0 and "Total params: 61,706" in sm.stdout
    img = tmp_path / "seven.png"
    sketch.render(sketch.digit_strokes(7, np.random.default_rng(0)), np.random.default_rng(0)).save(img)
    pr = cli("predict", model, img, tmp_path / "missing.png", "--show", tmp_path / "figs")
    assert pr.returncode == 1                                       # one file failed
    assert pr.stdout.startswith(f"{img}: ") and "top 3:" in pr.stdout
    assert "missing.png: skipped" in pr.stderr and "Traceback" not in pr.stderr
    assert (tmp_path / "figs" / "seven-prediction.png").exists()
    bench = cli("bench", "--arch", "lenet5", "--steps", "2", "--batch-size", "16")
    assert bench.returncode == 0 and "images/s" in bench.stdout


def test_cli_download_from_local_mirror(tmp_path):
    info = datasets.DATASETS["mnist"]
    mnist = ROOT.parent / "shared" / "data" / "mnist"
    if not (mnist / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST not found")
    files = {p.name: p.read_bytes() for p in mnist.glob("*.gz")}
    with FileServer(files) as server:
        out = cli("download", "mnist", env={"TINYCNN_MNIST_MIRRORS": server.mirror("ok"),
                                            "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    assert "all files present and verified" in out.stdout
    assert sorted(os.listdir(tmp_path / "cache" / "tinycnn" / "mnist")) == sorted(f.filename for f in info.files.values())


@pytest.mark.parametrize("args, message", [
    (["summary", "nope.npz"], "nope.npz: no such model file"),
    (["predict", "nope.npz", "x.png"], "nope.npz: no such model file"),
    (["evaluate"], "the following arguments are required: model"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["download", "mnist"], "could not download"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    out = cli(*args, cwd=tmp_path, env={"TINYCNN_MNIST_MIRRORS": "http://127.0.0.1:9/",
                                        "XDG_CACHE_HOME": str(tmp_path / "c")})
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    if args[0] == "download":      # one line per mirror tried, then what to do
        assert lines[0].startswith("tinycnn download: error:") and "Connection refused" in lines[1]
    else:
        assert len(lines) == 1, out.stderr


def test_console_script_is_declared():
    from importlib.metadata import entry_points
    assert any(e.name == "tinycnn" and e.value == "tinycnn.cli:main" for e in entry_points(group="console_scripts"))
