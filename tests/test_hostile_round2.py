"""A second hostile-input probe: what an attacker's file or a careless user's command line
does to tinycnn. Each test holds one fix; the probes that were already fine are listed in
the session report. Small models and the NumPy kernels throughout (nothing to compile)."""
import os
import subprocess
import sys

import numpy as np
import pytest

import tinycnn
from tinycnn import cli, layers as L
from tinycnn.io import ModelFormatError, load_model
from tinycnn.model import Sequential

from test_cli_mistakes import cli_env


@pytest.fixture(autouse=True)
def numpy_kernels():
    before = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    yield
    tinycnn.set_backend(before)


def run_cli(capsys, *argv):
    """tinycnn ARGV in this process: (exit status, stdout, stderr)."""
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return status, out, err


# -- model files --------------------------------------------------------------------------

def padded_model(padding, input_shape=(1, 28, 28)):
    """A 3 KB model whose first convolution pads a 28x28 picture by `padding` on each side,
    and whose pooling then shrinks it back to 1x1, so every layer fits the next."""
    side = 28 + 2 * padding - 2
    return Sequential([L.Conv2D(1, 2, 3, padding=padding), L.MaxPool2D(side), L.ReLU(),
                       L.Flatten(), L.Dense(2, 10)], input_shape=input_shape, seed=0)


def save_unchecked(model, path):
    """Write `model` as save_model does, but without reading it back first (save_model now
    refuses a model that load_model would refuse): a hostile file made by hand."""
    tinycnn.io.atomic_savez(path, tinycnn.io._model_arrays(model))


def test_huge_padding_in_a_model_file_is_refused_at_load(tmp_path):
    path = tmp_path / "padded.npz"
    save_unchecked(padded_model(8000), path)
    with pytest.raises(ValueError, match=r"refused.npz: not saved: it would not load again: layer conv2d_0 "
                                         r"would need padded input"):
        padded_model(8000).save(tmp_path / "refused.npz")
    assert os.path.getsize(path) < 5000
    # Before the fix this loaded, and one prediction asked for 2 x 16026 x 16026 floats
    # (and 8.6 GB of columns) before failing or swapping.
    with pytest.raises(ModelFormatError, match=r"padded.npz: layer conv2d_0 would need padded input "
                       r"of shape \(1, 16028, 16028\) \(256,896,784 values\) for one input of shape "
                       r"\(1, 28, 28\); at most 16,777,216"):
        load_model(path)


def test_huge_padding_cli_predict_is_one_line(tmp_path, capsys):
    save_unchecked(padded_model(8000), tmp_path / "padded.npz")
    image = tmp_path / "d.png"
    from PIL import Image
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(image)
    status, out, err = run_cli(capsys, "predict", tmp_path / "padded.npz", image)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and "layer conv2d_0 would need padded input of shape (1, 16028, 16028)" in err


def test_model_saved_without_input_shape_is_checked_where_it_is_used(tmp_path):
    model = padded_model(8000)
    model.input_shape = None                 # loads: nothing says what it will be given
    model.save(tmp_path / "padded.npz")
    loaded = load_model(tmp_path / "padded.npz")
    with pytest.raises(ModelFormatError, match="layer conv2d_0 would need padded input"):
        from tinycnn.modelcheck import check_activations
        check_activations("padded.npz", loaded, (1, 28, 28))


# -- environment variables ----------------------------------------------------------------

@pytest.mark.parametrize("variable, value, named", [
    ("NUMBA_NUM_THREADS", "0", "NUMBA_NUM_THREADS='0': Numba's thread count must be a whole number from 1 to 4096"),
    ("NUMBA_NUM_THREADS", "100000", "NUMBA_NUM_THREADS='100000'"),     # was a segmentation fault
    ("TINYCNN_BACKEND", "junk", "TINYCNN_BACKEND='junk' is not a backend; choose one of numba, numpy, loops"),
    ("TINYCNN_WINOGRAD", "maybe", "TINYCNN_WINOGRAD='maybe': expected one of 1, true, yes, on (on) or 0"),
])
def test_bad_environment_is_one_line_from_the_command(tmp_path, variable, value, named):
    env = dict(cli_env(), **{variable: value})
    proc = subprocess.run([sys.executable, "-m", "tinycnn", "summary", "mnist"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2 and proc.stderr == f"tinycnn: error: {proc.stderr[16:]}"
    assert named in proc.stderr and proc.stderr.count("\n") == 1


def test_bad_environment_is_an_exception_naming_it_on_import(tmp_path):
    env = dict(cli_env(), NUMBA_NUM_THREADS="0")
    code = ("import tinycnn\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "tinycnn.environment.EnvironmentVariableError: NUMBA_NUM_THREADS='0': Numba's thread count "
        "must be a whole number from 1 to 4096; unset it to use every core")


@pytest.mark.parametrize("value, on", [("", True), ("1", True), ("on", True), ("TRUE", True),
                                       ("0", False), ("off", False), (" false ", False), ("No", False)])
def test_switches_read_the_usual_words(monkeypatch, value, on):
    from tinycnn.environment import flag
    monkeypatch.setenv("TINYCNN_WINOGRAD", value)
    assert flag("TINYCNN_WINOGRAD") is on     # "false" used to mean on: only "0" was off


def test_a_switch_holding_junk_is_refused(monkeypatch):
    from tinycnn.environment import EnvironmentVariableError, flag, problems
    monkeypatch.setenv("TINYCNN_KEEP_MEMORY", "disable")
    with pytest.raises(EnvironmentVariableError, match="TINYCNN_KEEP_MEMORY='disable': expected one of"):
        flag("TINYCNN_KEEP_MEMORY")
    assert problems() == [str(EnvironmentVariableError(
        "TINYCNN_KEEP_MEMORY='disable': expected one of 1, true, yes, on (on) or 0, false, no, off (off)"))]


# -- command-line numbers -----------------------------------------------------------------

def checked_train_args(tmp_path, *argv):
    from tinycnn import run as main_job
    parser = main_job.build_parser()
    args = parser.parse_args([*argv, "--out", str(tmp_path)])
    main_job.check_args(args, parser)
    return args


@pytest.mark.parametrize("seed", ["4294967296", "99999999999999999999"])
def test_seed_beyond_32_bits_is_refused_by_name(tmp_path, capsys, seed):
    # It used to pass the check and fail later in scikit-learn, as "error: The 'random_state'
    # parameter of train_test_split must be an int in the range [0, 4294967295]...".
    with pytest.raises(SystemExit) as exit_info:
        checked_train_args(tmp_path, "--seed", seed)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.endswith(f": error: --seed must be from 0 to 4294967295, got {seed} (see --help)\n")


def test_largest_seed_is_accepted(tmp_path):
    assert checked_train_args(tmp_path, "--seed", "4294967295").seed == 2**32 - 1


def test_batch_larger_than_the_training_set_is_cut_and_lr_follows_it(tmp_path):
    from tinycnn import run as main_job
    args = checked_train_args(tmp_path, "--batch-size", str(10**12))
    note = main_job.fit_recipe_to_data(args, 1293, "digits")
    # Before: batch 10**12 kept, lr 0.01 * sqrt(10**12 / 256) = 625, and the run diverged.
    assert args.batch_size == 1293
    assert args.lr == pytest.approx(0.01 * (1293 / 256) ** 0.5)
    assert "batch 1293 (--batch-size cut to the training set)" in note
    args = checked_train_args(tmp_path, "--batch-size", "1293")
    main_job.fit_recipe_to_data(args, 1293, "digits")
    assert args.batch_size == 1293 and "cut" not in main_job.fit_recipe_to_data(args, 1293, "digits")


@pytest.mark.parametrize("alpha", ["nan", "inf", 1e300])
def test_leaky_relu_slope_that_is_not_a_float32_number_is_refused_at_load(tmp_path, alpha):
    import json
    from tinycnn.io import _model_arrays, atomic_savez
    model = Sequential([L.Flatten(), L.Dense(784, 10), L.LeakyReLU()], input_shape=(1, 28, 28), seed=0)
    arrays = _model_arrays(model)
    meta = json.loads(str(arrays["__meta__"]))
    meta["architecture"][2]["config"]["alpha"] = alpha      # "nan" passed float(); outputs were NaN
    arrays["__meta__"] = np.array(json.dumps(meta))
    atomic_savez(tmp_path / "m.npz", arrays)
    with pytest.raises(ModelFormatError, match=r"m.npz: layer 2 \(LeakyReLU\) has bad arguments: LeakyReLU: "
                                               r"alpha must be a finite float32 number, got "):
        load_model(tmp_path / "m.npz")


# -- the examples -------------------------------------------------------------------------

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *argv, cwd):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *map(str, argv)], cwd=cwd,
                          env=cli_env(), capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def overflowing_model(path):
    """A valid file whose finite weights (3e38) overflow float32 at the first layer: NaN out."""
    model = Sequential([L.Flatten(), L.Dense(784, 10)], input_shape=(1, 28, 28), seed=0)
    model.layers[1].params["W"][:] = 3e38
    model.save(path)


def test_predict_digit_example_reports_a_model_giving_nan_in_one_line(tmp_path):
    overflowing_model(tmp_path / "m.npz")
    from PIL import Image
    d = np.zeros((28, 28), np.uint8)
    d[6:22, 12:16] = 255
    Image.fromarray(d).save(tmp_path / "d.png")
    proc = run_example("predict_digit.py", "--model", "m.npz", "d.png", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("predict_digit.py: error: predict_proba: the model's output is NaN")


def test_paper_digits_example_checks_count_and_model_before_drawing(tmp_path):
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "0", "--out", "p", cwd=tmp_path)
    assert proc.returncode == 2 and "paper_digits.py: error: --count must be >= 1, got 0" in proc.stderr
    proc = run_example("paper_digits.py", "--model", "nope.npz", "--count", "3", "--out", "p", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "paper_digits.py: error: nope.npz: no such model file (pretrained models by name: mnist)\n"
    assert not (tmp_path / "p").exists()         # nothing drawn for a model that cannot load
    (tmp_path / "taken").write_text("the user's file")
    proc = run_example("paper_digits.py", "--model", "mnist", "--count", "3", "--out", "taken", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "paper_digits.py: error: --out taken: exists and is not a folder\n"
    assert (tmp_path / "taken").read_text() == "the user's file"


@pytest.mark.parametrize("fraction, parts", [(0.999, "1 for training and 1,296 for validation"),
                                             (0.001, "1,295 for training and 2 for validation")])
def test_validation_split_too_small_for_the_classes_names_the_option(fraction, parts):
    from tinycnn import datasets
    (x, y), _ = datasets.load_digits()
    x, y = x[:1297], y[:1297]
    # Before: scikit-learn's "The train_size = 1 should be greater or equal to the number of
    # classes = 10", after the run folder was made and the data loaded.
    with pytest.raises(ValueError, match=rf"val_fraction={fraction} \(--val-fraction\) splits 1,297 images "
                                         rf"into {parts}; each part needs at least one image of each of the 10"):
        datasets.train_val_split(x, y, fraction)
    (x_tr, _), (x_val, _) = datasets.train_val_split(x, y, 0.1)
    assert (len(x_tr), len(x_val)) == (1167, 130)


# -- the downloader -----------------------------------------------------------------------

from httpserver import FileServer  # noqa: E402

BODY = bytes(range(256)) * 40


def get(server, mode, tmp_path, **options):
    """download_file of /<mode>/f.bin into tmp_path/f.bin, verified against BODY (mode: one
    mode, or a list of them as mirrors tried in order)."""
    from tinycnn.datasets import download_file
    check = lambda p: None if open(p, "rb").read() == BODY else "not the file"
    options = {"max_bytes": 10 * len(BODY), **options}
    mirrors = [server.mirror(m) + "f.bin" for m in ([mode] if isinstance(mode, str) else mode)]
    return download_file(mirrors, tmp_path / "f.bin", verify=check,
                         timeout=(2, 2), retries=3, backoff=0.2, progress=False, **options)


@pytest.mark.parametrize("mode, requests, why", [
    ("loop", 31, "TooManyRedirects: Exceeded 30 redirects."),         # one attempt: 1 + 30
    ("tofile", 1, "InvalidSchema: No connection adapters were found for 'file:///etc/passwd'")])
def test_redirect_loop_or_to_a_file_url_is_not_retried(tmp_path, mode, requests, why):
    from tinycnn.datasets import DownloadError
    with FileServer({"f.bin": BODY}) as server:
        with pytest.raises(DownloadError) as err:
            get(server, mode, tmp_path)
        # Before: retried 3 times with backoff (3 x 31 requests for the loop).
        assert server.counts[f"/{mode}/f.bin"] == requests
    assert f"/{mode}/f.bin: {why}\n" in str(err.value) + "\n"
    assert os.listdir(tmp_path) == []


def test_mistyped_mirror_is_not_retried(tmp_path, monkeypatch):
    from tinycnn.datasets import DownloadError, download_file
    monkeypatch.setattr("time.sleep", lambda s: pytest.fail("slept before a retry"))
    with pytest.raises(DownloadError, match=r"- htp://127.0.0.1/f.bin: InvalidSchema"):
        download_file(["htp://127.0.0.1/f.bin"], tmp_path / "f.bin", retries=3, progress=False)


def test_redirect_to_another_host_is_followed_and_verified(tmp_path):
    with FileServer({"f.bin": BODY}) as server:
        assert get(server, "elsewhere", tmp_path) == str(tmp_path / "f.bin")
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_content_length_that_is_not_ascii_digits_is_a_bad_mirror(tmp_path):
    """"²".isdigit() is True but int("²") raises ValueError, which escaped the mirror loop: the
    whole download failed and the next mirror was never tried."""
    from tinycnn.datasets import DownloadError
    with FileServer({"f.bin": BODY}) as server:
        with pytest.raises(DownloadError) as err:
            get(server, "superscript", tmp_path)
        assert server.counts["/superscript/f.bin"] == 1          # the same answer again: not retried
        assert get(server, ["superscript", "ok"], tmp_path) == str(tmp_path / "f.bin")
    assert str(err.value).endswith("/superscript/f.bin: bad Content-Length '\u00b2'; not downloaded")
    assert (tmp_path / "f.bin").read_bytes() == BODY


def test_gzip_content_encoding_is_not_inflated(tmp_path):
    from tinycnn.datasets import DownloadError
    with FileServer({"f.bin": BODY}) as server:      # 64 MiB of zeros, gzipped to 64 KB
        with pytest.raises(DownloadError, match=r"/inflate/f.bin: not the file"):
            get(server, "inflate", tmp_path, deadline=30, max_bytes=1 << 20)
    # The 64 KB body was saved as sent and failed the check; inflated, it would have run
    # past max_bytes ("body goes on past 1,048,576 bytes").
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("lr", ["1e300", "1e-320"])
def test_learning_rate_outside_float32_is_refused(tmp_path, capsys, lr):
    # 1e300 became inf in the float32 optimiser (loss NaN at step 2, after NumPy's overflow
    # warnings); 1e-320 became 0 and the run "learned nothing", asking "Is --lr too high?".
    with pytest.raises(SystemExit):
        checked_train_args(tmp_path, "--lr", lr)
    assert capsys.readouterr().err.endswith(
        f": error: --lr must be > 0 and a float32 number (1.2e-38 to 3.4e+38), got {float(lr)} (see --help)\n")
    assert checked_train_args(tmp_path, "--lr", "1e-30").lr == 1e-30


# -- images ---------------------------------------------------------------------------------

def test_predict_prints_each_file_as_it_is_done(tmp_path, capsys, monkeypatch):
    """A folder of 10,000 files (or --show, ~0.2 s a figure) printed nothing until the very end."""
    from PIL import Image
    import tinycnn.preprocess as preprocess
    d = np.zeros((28, 28), np.uint8)
    d[6:22, 12:16] = 255
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(d).save(tmp_path / name)
    (tmp_path / "b.png").write_bytes(b"not an image")
    seen, real_open = [], preprocess.open_image

    def open_image(path):                    # what the user saw when each file was opened
        out, err = capsys.readouterr()
        seen.append((os.path.basename(path), out, err))
        sys.stdout.write(out), sys.stderr.write(err)
        return real_open(path)
    monkeypatch.setattr(preprocess, "open_image", open_image)
    status = cli.main(["predict", str(tmp_path)])
    assert status == 1
    assert [name for name, _, _ in seen] == ["a.png", "b.png", "c.png"]
    assert seen[1][1].endswith("a.png: 1 (100.0%)   top 3: 1 100.0%, 7 0.0%, 4 0.0%\n")
    assert seen[2][2].endswith("b.png: skipped: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)\n")


@pytest.mark.parametrize("value, backend", [("", "numpy"), ("  ", "numpy"), ("loops", "loops")])
def test_serve_treats_an_empty_backend_variable_as_unset(monkeypatch, value, backend):
    """TINYCNN_BACKEND="" means the default (environment.backend); serve then picks the NumPy
    kernels for single images, but used to keep Numba's because the variable was set."""
    import tinycnn.serve
    monkeypatch.setenv("TINYCNN_BACKEND", value)
    tinycnn.set_backend("numba" if backend == "numpy" else backend)
    chosen = []
    monkeypatch.setattr(tinycnn.serve, "serve", lambda *a, **k: chosen.append(tinycnn.get_backend()) or 0)
    assert cli.main(["serve", "mnist", "--port", "0"]) == 0
    assert chosen == [backend]


@pytest.mark.parametrize("orig_argv, argv0, command", [
    (["python", "-m", "tinycnn", "predict", "x.png"], "-m", True),
    (["python", "-X", "dev", "-W", "ignore", "-m", "tinycnn.warmup"], "-m", True),
    (["python", "-m", "pytest", "-q", "-m", "tinycnn"], "/p/pytest/__main__.py", False),
    (["python", "-c", "import tinycnn", "-m", "tinycnn"], "-c", False),
    (["python", "train.py", "-m", "tinycnn"], "train.py", False),
    (["/usr/bin/python3", "/usr/local/bin/tinycnn", "predict"], "/usr/local/bin/tinycnn", True),
])
def test_only_the_tinycnn_command_exits_on_a_bad_environment(monkeypatch, orig_argv, argv0, command):
    from tinycnn import environment
    monkeypatch.setattr(sys, "orig_argv", orig_argv)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert environment._is_tinycnn_command() is command


def test_bundled_models_need_at_most_38400_values_per_example(monkeypatch):
    """Every bundled model passes the bound, with the headroom modelcheck.py and the README
    state: at most 38,400 values per example (fastnet)."""
    from tinycnn import models, modelcheck
    monkeypatch.setattr(modelcheck, "MAX_ACTIVATION", 38_400)
    for name, build in models.ARCHITECTURES.items():
        model = build()
        modelcheck.check_activations(name, model, model.input_shape)
    monkeypatch.setattr(modelcheck, "MAX_ACTIVATION", 38_399)
    with pytest.raises(ModelFormatError, match="fastnet: layer .* would need .*38,400 values"):
        modelcheck.check_activations("fastnet", models.fastnet(), models.fastnet().input_shape)


def test_saliency_maps_example_checks_count_and_reports_a_missing_model(tmp_path):
    proc = run_example("saliency_maps.py", "--model", "mnist", "--count", "-5", cwd=tmp_path)
    # images[:-5] had meant "every test image but the last five"
    assert proc.returncode == 2 and "saliency_maps.py: error: --count must be >= 1, got -5" in proc.stderr
    proc = run_example("saliency_maps.py", "--model", "nope.npz", "--data-dir", tmp_path, cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (1, "saliency_maps.py: error: nope.npz: no such model file "
                                                 "(pretrained models by name: mnist)\n")


def test_speedrun_example_checks_numbers_before_loading_and_reports_missing_data(tmp_path):
    proc = run_example("speedrun.py", "--data-dir", tmp_path, "--batch-size", "0", cwd=tmp_path)
    assert proc.returncode == 2          # was fit's ValueError traceback, after loading MNIST
    assert "speedrun.py: error: --epochs and --batch-size must be >= 1, got 1 and 0" in proc.stderr
    proc = run_example("speedrun.py", "--data-dir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"speedrun.py: error: mnist: train-images-idx3-ubyte.gz not found in {tmp_path}")


def test_gradcheck_report_example_refuses_a_negative_seed(tmp_path):
    proc = run_example("gradcheck_report.py", "--backend", "numpy", "--seed", "-1", cwd=tmp_path)
    # was NumPy's "expected non-negative integer" traceback
    assert proc.returncode == 2 and "error: --seed must be from 0 to 4294967295, got -1" in proc.stderr


from test_datasets import FAST, tiny  # noqa: E402,F401  (the "tiny" dataset and its server)


def test_two_downloads_repairing_the_same_cached_file(tiny, monkeypatch, capsys):
    """Two processes find the same damaged file in the cache; the first removes it, and the
    second's os.remove used to fail with FileNotFoundError instead of downloading."""
    from tinycnn import datasets
    from tinycnn.datasets import registry
    server, arrays, files = tiny
    datasets.load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST)
    path = os.path.join(datasets.cache_dir("tiny"), "test-labels-ubyte.gz")
    with open(path, "r+b") as f:
        f.write(b"\xff\xff")
    check = registry._check_readable

    def other_process_removes_it_meanwhile(p, info):
        try:
            return check(p, info)
        except datasets.ChecksumError:
            os.remove(p)
            raise
    monkeypatch.setattr(registry, "_check_readable", other_process_removes_it_meanwhile)
    (_, _), (_, y_test) = datasets.load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST)
    np.testing.assert_array_equal(y_test, arrays["test_labels"])
    assert open(path, "rb").read() == files["test-labels-ubyte.gz"]


def test_a_cache_name_that_is_a_symlink_to_a_users_file_never_writes_through_it(tiny, tmp_path):
    """Already fine, held here: a damaged cache entry is unlinked and the download renamed
    over the name, so the file a symlink pointed at keeps its bytes."""
    from tinycnn import datasets
    server, arrays, files = tiny
    cache = datasets.cache_dir("tiny")
    os.makedirs(cache)
    precious = tmp_path / "notes.txt"
    precious.write_bytes(b"my notes, not a dataset")
    os.symlink(precious, os.path.join(cache, "train-images-ubyte.gz"))
    (x, _), _ = datasets.load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST)
    np.testing.assert_array_equal(x, arrays["train_images"])
    assert precious.read_bytes() == b"my notes, not a dataset"
    assert not os.path.islink(os.path.join(cache, "train-images-ubyte.gz"))
