"""Digits from outside MNIST: preprocessing, prediction from files and the command line."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

import tinycnn
from tinycnn import datasets, sketch
from tinycnn.cli import predict_images
from tinycnn.preprocess import read_digit, to_mnist

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


# -- photos: tables, shadows, specks, lines; pages with no digit -----------------------------

def on_a_table(picture, rng):
    """A photo of the sheet lying on a dark table: turned a few degrees (dark corners), with
    the table showing along two edges."""
    sheet = picture.rotate(rng.uniform(-8, 8), resample=Image.BICUBIC, fillcolor=(90, 80, 70))
    W, H = sheet.size
    photo = Image.new("RGB", (W, H), (90, 80, 70))
    photo.paste(sheet, (int(rng.integers(40, 90)), int(rng.integers(40, 90))))
    return photo


def under_a_shadow(picture):
    """The left part of the sheet 55% darker (a hand's or a phone's shadow), soft-edged."""
    a = np.asarray(picture, np.float32)
    H, W = a.shape[:2]
    yy, xx = np.mgrid[0:H, 0:W]
    shade = Image.fromarray(((xx + 0.4 * yy < 0.45 * W) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(8))
    a = a * (1 - 0.55 * np.asarray(shade, np.float32)[..., None] / 255)
    return Image.fromarray(a.astype(np.uint8))


def read_as(model, picture):
    frame, note = read_digit(picture)
    return int(np.argmax(model.predict_proba(model.preprocess(frame[None]))[0])), note


@pytest.fixture(scope="module")
def pretrained():
    return tinycnn.pretrained("mnist")


def test_a_table_or_a_shadow_in_the_photo_is_not_read_as_ink(pretrained):
    """Dark table at the photo's edges, or a shadow over the sheet: one global threshold took
    them for ink and cropped to the whole sheet (photos of this kind: 16-22% read right)."""
    rng = np.random.default_rng(5)
    right, notes = [0, 0], [0, 0]
    for i in range(20):
        digit = i % 10
        picture = sketch.render(sketch.digit_strokes(digit, rng), rng, size=(450, 600))
        for k, photo in enumerate((on_a_table(picture, rng), under_a_shadow(picture))):
            answer, note = read_as(pretrained, photo)
            right[k] += answer == digit
            notes[k] += bool(note) and "left out" in note
    assert right[0] >= 18 and right[1] >= 18, right
    assert notes[0] == 20, notes           # the table is said to be left out


def test_specks_away_from_the_digit_are_dropped():
    clean = np.asarray(paper_digit("L")).copy()
    dirty = clean.copy()
    for y, x in ((60, 60), (700, 80), (750, 560), (40, 550)):
        dirty[y:y + 5, x:x + 5] = 0
    np.testing.assert_allclose(to_mnist(dirty), to_mnist(clean), atol=1e-6)


def test_a_digit_that_touches_the_edges_is_kept(pretrained):
    """A digit drawn to the picture's edges (as on the browser's pad) is the digit, not a
    table: nothing is left out, and a 7's separate crossbar stays with it."""
    zero = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(zero).ellipse([-5, -5, 284, 284], outline=0, width=22)
    one = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(one).line([(140, 0), (150, 280)], fill=0, width=22)
    for picture, digit in ((zero, 0), (one, 1)):
        answer, note = read_as(pretrained, picture)
        assert answer == digit and note is None, (digit, answer, note)
    # A 5 drawn large on the pad, its bar along the top edge: its strokes near the rest of
    # the digit stay with it (a first version left the bar and stem out: read as 0).
    five = Image.new("L", (280, 280), 255)
    d = ImageDraw.Draw(five)
    d.line([(70, 8), (230, 8)], fill=0, width=22)
    d.line([(75, 8), (70, 130)], fill=0, width=22)
    d.arc([60, 100, 240, 272], -120, 150, fill=0, width=22)
    assert read_as(pretrained, five) == (5, None)
    seven = Image.new("L", (280, 280), 255)
    d = ImageDraw.Draw(seven)
    d.line([(40, 40), (230, 40), (120, 260)], fill=0, width=18)
    without_bar = to_mnist(seven)
    d.line([(110, 150), (200, 150)], fill=0, width=18)            # crossbar, not touching the 7
    assert np.abs(to_mnist(seven) - without_bar).max() > 0.5        # it is read, not dropped as a speck


def test_two_digits_side_by_side_get_a_note():
    picture = Image.new("L", (400, 240), 255)
    d = ImageDraw.Draw(picture)
    d.line([(80, 40), (90, 200)], fill=0, width=20)                           # a 1
    d.ellipse([200, 40, 330, 200], outline=0, width=20)                       # a 0
    assert "side by side" in read_digit(picture)[1]


def paper(H=600, W=450):
    return np.full((H, W), 235.0)


def ruled(a, level=120):
    a[40::40] = a[41::40] = level
    return a


def squared(a, level=120):
    a[::20] = a[1::20] = level
    a[:, ::20] = a[:, 1::20] = level
    return a


def lit_unevenly(a):
    yy, xx = np.mgrid[0:a.shape[0], 0:a.shape[1]] / max(a.shape)
    return a * (0.45 + 0.55 * (0.7 * xx + 0.3 * yy))


@pytest.mark.parametrize("page", [ruled, squared])
def test_a_page_with_no_digit_is_blank(page):
    """Ruled or squared paper: each was read as a digit, at 100%. (An empty sheet on a dark
    table still is: the table is left out only when something away from the edges remains.)"""
    picture = page(paper())
    with pytest.raises(ValueError, match="looks blank"):
        to_mnist(np.asarray(picture, np.uint8))


def test_faint_ink_is_read_with_a_note(pretrained):
    """Ink under MIN_DARKNESS darker than its paper (light grey, yellow, a dim photo of
    pencil) is read, with a note saying it is faint; so is an unlit corner of an empty page
    (it was read as a 1 at 94%, without a word)."""
    for ink, page in ((200, 255), (140, 170)):
        seven = Image.new("L", (200, 200), page)
        ImageDraw.Draw(seven).line([(40, 40), (160, 40), (90, 170)], fill=ink, width=14)
        answer, note = read_as(pretrained, seven)
        assert answer == 7 and note.startswith("the ink is faint (at most "), (ink, page, answer, note)
    try:
        note = read_digit(lit_unevenly(paper()).astype(np.uint8))[1]
    except ValueError as err:
        note = str(err)
    assert "faint" in note or "looks blank" in note, note


def test_a_digit_on_ruled_or_squared_paper_is_read(pretrained):
    """Lines 25% darker than the paper (light blue ones are, in grey) join a digit written
    across them: the lines' own pixels are thresholded again to find the darker ink. Before,
    the whole grid was dropped with the digit in it: 'looks blank'."""
    rng = np.random.default_rng(2)
    right = 0
    for i in range(10):
        picture = np.asarray(sketch.render(sketch.digit_strokes(i, rng), rng, size=(450, 600)).convert("L"), np.float32)
        for page in (ruled, squared):
            lines = page(np.full_like(picture, 255.0), level=190) / 255
            right += read_as(pretrained, (picture * lines).astype(np.uint8))[0] == i
    assert right >= 16, right


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
