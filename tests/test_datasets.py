"""Finding, verifying and downloading datasets; every failure mode against a local server.
No test here touches the internet: every URL is on 127.0.0.1."""
import gzip
import hashlib
import multiprocessing
import os

import numpy as np
import pytest

from tinycnn import datasets
from tinycnn.datasets import (ChecksumError, DatasetInfo, DownloadError, FileInfo, download_file,
                              load_dataset, write_idx)

from httpserver import FileServer

FAST = dict(timeout=(2, 0.5), retries=3, backoff=0.01, progress=False)


def make_tiny(tmp_path):
    """A four-file dataset in IDX form, registered as "tiny": (info, arrays, {name: gz bytes})."""
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (30, 5, 4), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 30).astype(np.uint8),
              "test_images": rng.integers(0, 256, (12, 5, 4), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, 12).astype(np.uint8)}
    src = tmp_path / "src"
    src.mkdir()
    files, infos = {}, {}
    for key, a in arrays.items():
        name = key.replace("_", "-") + "-ubyte.gz"
        path = write_idx(src / name, a)
        gz = open(path, "rb").read()
        files[name] = gz
        infos[key] = FileInfo(name, hashlib.sha256(gz).hexdigest(),
                              hashlib.sha256(gzip.decompress(gz)).hexdigest())
    return DatasetInfo("tiny", infos, mirrors=()), arrays, files


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    info, arrays, files = make_tiny(tmp_path)
    monkeypatch.setitem(datasets.DATASETS, "tiny", info)
    with FileServer(files) as server:
        yield server, arrays, files


def assert_loaded(result, arrays):
    (x_tr, y_tr), (x_te, y_te) = result
    for got, key in ((x_tr, "train_images"), (y_tr, "train_labels"), (x_te, "test_images"),
                     (y_te, "test_labels")):
        np.testing.assert_array_equal(got, arrays[key])


def leftovers(folder):
    return [p for p in os.listdir(folder) if p.endswith(".part")]


def test_download_verify_cache(tiny):
    server, arrays, files = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST), arrays)
    cache = datasets.cache_dir("tiny")
    assert sorted(os.listdir(cache)) == sorted(files)
    assert not leftovers(cache)
    for name, gz in files.items():                  # byte for byte what was served
        assert open(os.path.join(cache, name), "rb").read() == gz
    n = len(server.requests)
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST), arrays)
    assert len(server.requests) == n                 # the second call made no request


def test_404_moves_to_next_mirror(tiny):
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("missing"), server.mirror("ok")],
                               **FAST), arrays)
    assert sum(1 for r in server.requests if r.startswith("/missing/")) == 4   # no retries on 4xx


def test_500_is_retried(tiny):
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("flaky")], **FAST), arrays)
    assert all(server.counts[r] == 3 for r in server.counts)   # two 500s, then success


def test_retries_are_said_when_progress_is_shown(tiny, capsys):
    """Offline, three attempts per mirror were ~10 s of silence in a terminal."""
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("flaky")], **dict(FAST, progress=True)), arrays)
    said = [line for line in capsys.readouterr().err.splitlines() if "trying again" in line]
    assert said[:2] == [f"tinycnn: {server.mirror('flaky')}train-images-ubyte.gz: HTTP 500 Internal Server Error; "
                        f"trying again in "
                        f"{0.01 * 2 ** k:g} s (attempt {k + 2} of 3)" for k in range(2)]


def test_the_test_split_alone_fetches_only_its_files(tiny, tmp_path):
    server, arrays, _ = tiny
    with pytest.raises(DownloadError, match=r"put the files \(test-images-ubyte.gz, test-labels-ubyte.gz, "):
        load_dataset("tiny", mirrors=[server.mirror("missing")], splits=("test",), **dict(FAST, retries=1))
    (none, (x, y)) = load_dataset("tiny", mirrors=[server.mirror("ok")], splits=("test",), **FAST)
    assert none == (None, None) and len(x) == len(y)
    assert sorted(r.rsplit("/", 1)[1] for r in server.requests if r.startswith("/ok/")) == [
        "test-images-ubyte.gz", "test-labels-ubyte.gz"]
    for wrong in ("test", ("tests",), ()):                   # a string would be read letter by letter
        with pytest.raises(ValueError, match=r"splits must name 'train', 'test' or both, got"):
            load_dataset("tiny", mirrors=[server.mirror("ok")], splits=wrong, **FAST)


def test_wrong_checksum_rejected_and_next_mirror_used(tiny):
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("corrupt"), server.mirror("ok")],
                               **FAST), arrays)
    assert sum(1 for r in server.requests if r.startswith("/corrupt/")) == 4


def test_short_body_and_stall_fail_over(tiny):
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("short"), server.mirror("ok")],
                               **dict(FAST, retries=2)), arrays)
    assert sum(1 for r in server.requests if r.startswith("/short/")) == 8
    assert not leftovers(datasets.cache_dir("tiny"))


def test_stall_past_read_timeout(tiny, tmp_path):
    server, arrays, _ = tiny
    assert_loaded(load_dataset("tiny", data_dir=tmp_path / "d",
                               mirrors=[server.mirror("stall"), server.mirror("ok")],
                               **dict(FAST, retries=1)), arrays)
    assert sum(1 for r in server.requests if r.startswith("/stall/")) == 4


def test_all_mirrors_failing_gives_one_error_naming_each(tiny):
    server, _, _ = tiny
    mirrors = [server.mirror(m) for m in ("missing", "down", "corrupt", "short")]
    with pytest.raises(DownloadError) as err:
        load_dataset("tiny", mirrors=mirrors, **dict(FAST, retries=2))
    text = str(err.value)
    for mirror, why in zip(mirrors, ("HTTP 404", "HTTP 500", "checksum mismatch", "body cut short")):
        assert f"{mirror}train-images-ubyte.gz: {why}" in text
    assert "data_dir=" in text and "--data-dir FOLDER" in text and "TINYCNN_DATA_DIR" in text
    assert os.listdir(datasets.cache_dir("tiny")) == []    # nothing half-written


def test_a_data_folder_one_level_too_high_or_missing_is_named_when_the_download_fails(tiny, tmp_path,
                                                                                      monkeypatch):
    """TINYCNN_DATA_DIR (or data_dir) pointing at the parent of the dataset's folder, or at no
    folder: the files were not found there, and the download failing was all the user heard."""
    server, _, _ = tiny
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(DownloadError) as err:
        load_dataset("tiny", mirrors=[server.mirror("missing")], **dict(FAST, retries=1))
    assert (f"{tmp_path / 'data'} has no tiny files, but holds a folder {tmp_path / 'data' / 'tiny'}: "
            "did you mean that one?") in str(err.value)
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(DownloadError) as err:
        load_dataset("tiny", mirrors=[server.mirror("missing")], **dict(FAST, retries=1))
    assert f"{tmp_path / 'nope'} (given as the data folder) does not exist, so nothing was found there." \
        in str(err.value)


def test_corrupt_cached_file_is_detected_and_replaced(tiny, capsys):
    server, arrays, files = tiny
    load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST)
    path = os.path.join(datasets.cache_dir("tiny"), "test-labels-ubyte.gz")
    with open(path, "r+b") as f:
        f.seek(20)
        f.write(b"\xff\xff")
    n = len(server.requests)
    assert_loaded(load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST), arrays)
    assert server.requests[n:] == ["/ok/test-labels-ubyte.gz"]
    assert open(path, "rb").read() == files["test-labels-ubyte.gz"]
    assert "checksum mismatch" in capsys.readouterr().err


def test_corrupt_file_in_users_folder_is_an_error(tiny, tmp_path):
    server, _, files = tiny
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, gz in files.items():
        (folder / name).write_bytes(gz)
    (folder / "train-labels-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x07"))
    with pytest.raises(ChecksumError, match=r"train-labels-ubyte.gz: checksum mismatch: expected "
                                            r"\.gz SHA-256 [0-9a-f]{64} or content SHA-256") as err:
        load_dataset("tiny", data_dir=folder, download=False)
    assert "got file SHA-256" in str(err.value) and "delete it" in str(err.value)


def test_raw_files_and_env_dir(tiny, tmp_path, monkeypatch):
    _, arrays, files = tiny
    folder = tmp_path / "raw"
    folder.mkdir()
    for name, gz in files.items():                  # decompressed, under the name without .gz
        (folder / name[:-3]).write_bytes(gzip.decompress(gz))
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(folder))
    assert_loaded(load_dataset("tiny", download=False), arrays)


def test_missing_without_download(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-ubyte.gz not found in"):
        load_dataset("tiny", data_dir=tmp_path / "empty", download=False)


def test_mirror_env_variable(tiny, monkeypatch):
    server, arrays, _ = tiny
    monkeypatch.setenv("TINYCNN_TINY_MIRRORS", server.mirror("missing") + "," + server.mirror("ok"))
    assert_loaded(load_dataset("tiny", **FAST), arrays)


def test_interrupt_leaves_nothing(tiny, tmp_path):
    server, _, files = tiny
    dest = tmp_path / "out" / "file.gz"

    def interrupt(_path):
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        download_file([server.mirror("ok") + "train-images-ubyte.gz"], dest, verify=interrupt, **FAST)
    assert os.listdir(tmp_path / "out") == []


def _download_worker(url, dest, sha):
    def verify(path):
        return None if hashlib.sha256(open(path, "rb").read()).hexdigest() == sha else "bad"
    download_file([url], dest, verify=verify, progress=False)


def test_two_processes_same_destination(tmp_path):
    body = os.urandom(300_000)
    sha = hashlib.sha256(body).hexdigest()
    dest = tmp_path / "shared" / "big.bin"
    with FileServer({"big.bin": body}) as server:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_download_worker, args=(server.mirror("slow") + "big.bin", dest, sha))
                 for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0]
        assert server.counts["/slow/big.bin"] == 2
    assert dest.read_bytes() == body
    assert os.listdir(dest.parent) == ["big.bin"]


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'nope'; known: fashion-mnist, kmnist, mnist"):
        load_dataset("nope")


# -- the real thing ------------------------------------------------------------------------

def test_real_mnist(mnist_dir):
    (x_tr, y_tr), (x_te, y_te) = datasets.load_mnist(data_dir=mnist_dir, download=False)
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    assert x_tr.dtype == np.uint8 and y_tr.shape == (60000,) and y_te.shape == (10000,)
    assert np.bincount(y_tr).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_te).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_tr.mean() == pytest.approx(33.318, abs=1e-3)


def test_real_mnist_downloaded_from_local_mirror(mnist_dir, tmp_path):
    files = {p.name: p.read_bytes() for p in mnist_dir.glob("*.gz")}
    with FileServer(files) as server:
        (x_tr, y_tr), (x_te, _) = datasets.load_mnist(data_dir=tmp_path / "dl",
                                                      mirrors=[server.mirror("missing"), server.mirror("ok")],
                                                      **FAST)
    assert x_tr.shape == (60000, 28, 28) and x_te.shape == (10000, 28, 28)
    assert sorted(os.listdir(tmp_path / "dl")) == sorted(files)


# -- offline data and helpers ----------------------------------------------------------------

def test_load_digits_offline():
    (x_tr, y_tr), (x_te, y_te) = datasets.load_digits()
    assert x_tr.shape[1:] == (8, 8) and x_tr.dtype == np.uint8 and len(x_tr) + len(x_te) == 1797
    assert x_tr.max() == 255
    (big, _), _ = datasets.load_digits(image_size=28)
    assert big.shape[1:] == (28, 28)
    assert big[:, :4].max() == 0 and big[:, 4:24, 4:24].max() == 255   # MNIST-like margin


def test_preprocessing_helpers():
    x = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    f = datasets.to_float(x)
    assert f.dtype == np.float32 and f.max() == pytest.approx(17 / 255)
    z, mean, std = datasets.standardize(f)
    assert z.dtype == np.float32 and abs(z.mean()) < 1e-6 and z.std() == pytest.approx(1, rel=1e-5)
    z2, _, _ = datasets.standardize(f, mean, std)
    np.testing.assert_array_equal(z, z2)
    assert datasets.add_channel_axis(x).shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(datasets.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    y = np.repeat(np.arange(4), 25)
    (xt, yt), (xv, yv) = datasets.train_val_split(np.arange(100), y, 0.2, seed=1)
    assert np.bincount(yv).tolist() == [5, 5, 5, 5] and len(xt) == 80
    assert sorted(np.concatenate([xt, xv]).tolist()) == list(range(100))
    (xt2, _), _ = datasets.train_val_split(np.arange(100), y, 0.2, seed=1)
    np.testing.assert_array_equal(xt, xt2)
