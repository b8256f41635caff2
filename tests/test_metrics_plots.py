"""Metrics against hand-counted values; every plot renders headless to a non-empty PNG."""
import numpy as np
import pytest

from tinycnn import metrics, plotting
from tinycnn.models import convnet


def test_metrics_by_hand():
    y = np.array([0, 1, 2, 2, 1])
    proba = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4], [0.7, 0.1, 0.2]])
    pred = proba.argmax(1)
    assert metrics.accuracy(y, pred) == pytest.approx(3 / 5)
    assert metrics.top_k_accuracy(y, proba, 2) == pytest.approx(4 / 5)
    assert metrics.confusion_matrix(y, pred, 3).tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    wrong = metrics.misclassified(y, proba)
    assert [(m["index"], m["predicted"], m["true"]) for m in wrong] == [(4, 0, 1), (2, 1, 2)]
    assert wrong[0]["confidence"] == pytest.approx(0.7)
    report = metrics.classification_report(y, pred, ["zero", "one", "two"], as_dict=True)
    assert report["one"]["recall"] == pytest.approx(0.5) and report["zero"]["precision"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ"):
        metrics.accuracy(y, pred[:3])


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    y = np.arange(40) % 10
    proba = rng.dirichlet(np.ones(10), 40)
    model = convnet()
    history = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [0.9, 0.6], "train_acc": [0.6, 0.8],
               "val_acc": [0.65, 0.78]}
    calls = {
        "curves": lambda p: plotting.plot_history(history, path=p),
        "cm": lambda p: plotting.plot_confusion_matrix(metrics.confusion_matrix(y, proba.argmax(1), 10), path=p),
        "pred": lambda p: plotting.plot_predictions(images, y, proba, path=p),
        "mistakes": lambda p: plotting.plot_mistakes(images, y, proba, path=p),
        "filters": lambda p: plotting.plot_filters(model, path=p),
        "maps": lambda p: plotting.plot_feature_maps(model, images[0].astype(np.float32) / 255, path=p),
        "samples": lambda p: plotting.plot_samples(images, y, path=p),
    }
    for name, make in calls.items():
        path = tmp_path / f"{name}.png"
        fig = make(path)
        assert fig is not None and path.stat().st_size > 5000, name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("wrong", [1, 16])
def test_the_mistakes_title_does_not_overlap_the_images_titles(wrong, tmp_path):
    """With a single mistake the figure is one image wide: its title once sat on the image's
    own "pred / true" title (seen in a run on the digits)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    rng = np.random.default_rng(0)
    y = np.arange(20) % 10
    proba = np.full((20, 10), 0.01)
    proba[np.arange(20), (y + (np.arange(20) < wrong)) % 10] = 0.9
    fig = plotting.plot_mistakes(rng.random((20, 28, 28)), y, proba, path=tmp_path / "m.png")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    top = fig._suptitle.get_window_extent(renderer)
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert len(titles) == wrong and not any(top.overlaps(t) for t in titles)


def test_a_failed_figure_write_leaves_the_previous_file_whole(tmp_path):
    """The disk fills up (here: a 2,000-byte file size limit, RLIMIT_FSIZE) while a figure is
    written over an older one. savefig(path) truncated it and left 2,000 bytes of PNG."""
    import os
    import subprocess
    import sys
    (tmp_path / "run").mkdir()
    target = tmp_path / "run" / "confusion_matrix.png"
    target.write_bytes(b"the previous run's figure")
    code = ("import resource, signal, sys\n"
            "import numpy as np\n"
            "from tinycnn import plotting\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # EFBIG instead of the signal\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
            "try:\n"
            "    plotting.plot_confusion_matrix(np.eye(10, dtype=int) * 5, list('0123456789'), path=sys.argv[1])\n"
            "except OSError as err:\n"
            "    print('OSError', err.errno)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=root, MPLBACKEND="Agg"), timeout=120)
    assert child.stdout.split() == ["OSError", "27"], child.stderr            # EFBIG
    assert target.read_bytes() == b"the previous run's figure"
    assert os.listdir(tmp_path / "run") == ["confusion_matrix.png"]                  # no temporary file left


def test_colour_images_are_drawn_in_colour_and_channels_last_is_refused(tmp_path):
    """A 3-channel dataset was drawn as its first channel in grey (a blue square looked like
    noise), and channels-last images as strips a pixel wide, without a word."""
    rng = np.random.default_rng(0)
    images = np.zeros((6, 3, 16, 16), np.float32)
    for i in range(6):
        images[i, i % 3, 4:12, 4:12] = 1.0              # a red, green or blue square
    images = (images - 0.2) / 0.4                       # standardised: negative values too
    y = np.arange(6) % 3
    proba = np.eye(3)[y]
    fig = plotting.plot_predictions(images, y, proba, path=tmp_path / "rgb.png", what="training images")
    shown = fig.axes[0].images[0].get_array()
    assert shown.shape == (16, 16, 3) and shown.min() == 0 and shown.max() == 1
    first = np.asarray(shown)
    assert fig._suptitle.get_text() == "Predictions on random training images: 6/6 right"
    assert (first[8, 8] == 1).sum() == 1 and first[0, 0].tolist() == [0, 0, 0]    # one colour, on black
    with pytest.raises(ValueError, match=r"got shape \(6, 16, 16, 3\) \(channels last\? np.moveaxis\(x, -1, 1\)"):
        plotting.plot_predictions(np.moveaxis(images, 1, -1), y, proba)


def test_feature_maps_of_uint8_pixels_go_through_preprocess():
    """plot_feature_maps cast 0-255 pixels straight to float: maps of a 255x brighter input."""
    model = convnet()
    model.preprocessing = {"mean": 0.1307, "std": 0.3081}
    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    from_uint8 = plotting.plot_feature_maps(model, image)
    from_float = plotting.plot_feature_maps(model, model.preprocess(image[None])[0])
    for a, b in zip(from_uint8.axes, from_float.axes):
        np.testing.assert_array_equal(a.images[0].get_array(), b.images[0].get_array())
