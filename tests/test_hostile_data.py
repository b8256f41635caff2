"""Hostile and careless input on the data path (issue #17): memory bombs, user files that must
not be touched, unusable folders, hostile mirrors, crashed writers, odd file types.

Every case asserts the exception type and message (or the CLI's one line and exit status)
and bounds on time and memory. The memory-bomb cases run in a child process that reports
its own peak RSS (ru_maxrss) before and after the action; the rest run here under
tracemalloc. Everything hostile is built at run time; nothing large is committed.
"""
import dataclasses
import gzip
import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinycnn import datasets, run
from tinycnn.datasets import (ChecksumError, DataDirError, DownloadError, IDXFormatError,
                              download_file, load_dataset, read_idx)
from tinycnn.datasets.idx import header_bytes
from tinycnn.fileutil import atomic_write, clean_stale_temps

from bounds import MEGABYTES, SECONDS, traced
from httpserver import FileServer
from test_datasets import make_tiny

ROOT = Path(__file__).resolve().parents[1]
MNIST = datasets.DATASETS["mnist"]
TRAIN_IMAGES = MNIST.files["train_images"].filename
FAST = dict(timeout=(2, 2), retries=1, backoff=0.01, progress=False)
MEASURED = {}                          # case -> (seconds, MB over baseline): the report's numbers


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    if MEASURED:
        worst_t = max(MEASURED.items(), key=lambda kv: kv[1][0])
        worst_m = max(MEASURED.items(), key=lambda kv: kv[1][1])
        print(f"\nhostile data cases: {len(MEASURED)}; slowest {worst_t[0]} {worst_t[1][0]:.2f} s; "
              f"most memory {worst_m[0]} {worst_m[1][1]:.1f} MB")
        for case, (seconds, megabytes) in sorted(MEASURED.items()):
            print(f"  {seconds:6.2f} s {megabytes:7.1f} MB  {case}")


# -- building hostile files --------------------------------------------------------------------

def write_gzip_of_zeros(path, header, total):
    """A valid single-member gzip of `header` then zeros, `total` bytes decompressed, built in
    1 MiB blocks (a few MB of memory, about a second for 1 GiB). After a full flush deflate
    keeps no history, so each further MiB of zeros compresses to the same ~1 KB."""
    block = 1 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)     # raw deflate; the gzip frame is ours
    first = header + bytes(block - len(header))
    zeros = bytes(block)
    crc = zlib.crc32(first)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")   # magic, deflate, no name, mtime 0
        f.write(comp.compress(first) + comp.flush(zlib.Z_FULL_FLUSH))
        piece = comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)
        full, tail = divmod(total - block, block)
        for _ in range(full):
            f.write(piece)
            crc = zlib.crc32(zeros, crc)
        f.write(comp.compress(bytes(tail)) + comp.flush())
        crc = zlib.crc32(bytes(tail), crc)
        f.write(struct.pack("<II", crc, total & 0xFFFFFFFF))
    return path


BOMB_SHAPE = (1_369_000, 28, 28)       # 1,073,296,000 bytes: 1 GiB of uint8 zeros


@pytest.fixture(scope="module")
def bombs(tmp_path_factory):
    """1 MB gzips that unpack to ~1 GiB: one with an honest header declaring BOMB_SHAPE, one
    with MNIST's own header whose zeros run on far past MNIST's size."""
    folder = tmp_path_factory.mktemp("bombs")
    honest = header_bytes(BOMB_SHAPE)
    total = len(honest) + int(np.prod(BOMB_SHAPE))
    paths = {"honest": write_gzip_of_zeros(folder / "honest.gz", honest, total),
             "mnist_header": write_gzip_of_zeros(folder / "mnist-header.gz",
                                                 header_bytes((60000, 28, 28)), total)}
    for p in paths.values():
        assert p.stat().st_size < 1.2e6
    return paths


def test_bomb_builder_makes_valid_gzip(tmp_path):
    path = write_gzip_of_zeros(tmp_path / "b.gz", header_bytes((3, 1000, 1000)), 16 + 3_000_000)
    assert gzip.decompress(path.read_bytes()) == header_bytes((3, 1000, 1000)) + bytes(3_000_000)


# -- measuring ---------------------------------------------------------------------------------

CHILD = """
import json, resource, sys, time
import numpy as np
from tinycnn import cli, datasets
from tinycnn.datasets import *
args = json.loads(sys.argv[1])

def status(field):                     # MB, from /proc/self/status (Linux)
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":")) / 1024

# Baseline: the RSS now, after the imports. Then reset the peak (VmHWM) to it, so the peak
# read afterwards is the action's own, not an earlier transient of the imports; where that
# reset is not allowed, ru_maxrss (the whole life's peak) over-estimates, never under.
before = status("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    peak = lambda: status("VmHWM")
except OSError:
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
error, result = None, None
t0, c0 = time.perf_counter(), time.process_time()
try:
{action}
except Exception as err:
    error = [type(err).__name__, str(err)]
seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
with open(args["report"], "w") as f:
    json.dump(dict(error=error, result=result, seconds=seconds, cpu=cpu, megabytes=peak() - before), f)
"""


def in_child(case, action, tmp_path, **args):
    """Run `action` (Python lines using `args`; may set `result`) in a fresh interpreter after
    its imports; return what it raised, its time, and its peak RSS above the RSS it had
    before the action (both measured by the child itself, which is more exact than
    RUSAGE_CHILDREN: that keeps the largest peak of every child so far)."""
    args["report"] = str(tmp_path / f"{case}.json")
    code = CHILD.format(action="\n".join("    " + line for line in action.strip().splitlines()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(Path(args["report"]).read_text())
    out["stderr"] = proc.stderr
    MEASURED[case] = (out["seconds"], out["megabytes"])
    # CPU time holds the 2 s bound; wall time gets slack for a machine shared with other jobs.
    assert out["cpu"] < SECONDS and out["seconds"] < 3 * SECONDS, out
    assert out["megabytes"] < MEGABYTES, out
    return out


def bounded(case):
    """Time and traced Python/NumPy memory of an in-process case, held to the bounds."""
    return traced(lambda seconds, megabytes: MEASURED.__setitem__(case, (seconds, megabytes)))


def snapshot(folder):
    """Every file's bytes and mtime (ns), to prove nothing was modified or deleted."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in Path(folder).iterdir() if p.is_file()}


def cli_one_line(argv, env=None, case=None):
    """Run `python -m tinycnn ARGV`; return (exit status, stderr). Asserts a single line of
    error output, no traceback, and bounded CPU time (wall time is printed in the report
    but the shared machine makes it unreliable for an interpreter start-up)."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "tinycnn", *argv], env=env, capture_output=True,
                          text=True, timeout=120)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    MEASURED[case or argv[0]] = (wall, 0.0)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert cpu < 2 * SECONDS, cpu                     # interpreter and imports included
    return proc.returncode, proc.stderr.strip()


# -- 1. bounded memory on data files -----------------------------------------------------------

def test_bomb_in_data_dir_refused_by_its_header(bombs, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / TRAIN_IMAGES).write_bytes(bombs["honest"].read_bytes())
    before = snapshot(folder)
    out = in_child("bomb in data_dir (honest header)", "datasets.load_mnist(data_dir=args['dir'], download=False)",
                   tmp_path, dir=str(folder))
    kind, message = out["error"]
    assert kind == "ChecksumError"
    assert message.startswith(f"{folder / TRAIN_IMAGES}: not the official {TRAIN_IMAGES}: its IDX header "
                              "declares uint8 (1369000, 28, 28), the official file holds uint8 (60000, 28, 28)")
    assert "tinycnn does not modify or delete your files" in message
    assert snapshot(folder) == before


def test_bomb_with_the_official_header_is_cut_at_the_official_size(bombs, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / TRAIN_IMAGES).write_bytes(bombs["mnist_header"].read_bytes())
    out = in_child("bomb in data_dir (MNIST header)", "datasets.load_mnist(data_dir=args['dir'], download=False)",
                   tmp_path, dir=str(folder))
    assert out["error"][0] == "ChecksumError"
    assert (f"{TRAIN_IMAGES}: not the official {TRAIN_IMAGES}: its content runs past 47,040,016 bytes, "
            "the official file's size; refused there") in out["error"][1]
    assert out["megabytes"] < 100              # the official size (47 MB), not the bomb's 1 GiB


def test_bomb_through_a_mirror(bombs, tmp_path):
    files = {TRAIN_IMAGES: bombs["honest"].read_bytes()}
    with FileServer(files) as server:
        out = in_child("bomb through a mirror", """
datasets.load_mnist(data_dir=args['dir'], mirrors=[args['mirror']], timeout=(2, 2), retries=1,
                    progress=False)""", tmp_path, dir=str(tmp_path / "dl"), mirror=server.mirror("ok"))
    kind, message = out["error"]
    assert kind == "DownloadError"
    assert (f"{server.mirror('ok')}{TRAIN_IMAGES}: not the official {TRAIN_IMAGES}: its IDX header declares "
            "uint8 (1369000, 28, 28)") in message
    assert os.listdir(tmp_path / "dl") == []              # nothing left behind


def test_read_idx_refuses_the_bomb_by_its_declared_size(bombs, tmp_path):
    out = in_child("read_idx on the bomb", "read_idx(args['path'])", tmp_path, path=str(bombs["honest"]))
    assert out["error"] == ["IDXFormatError", f"{bombs['honest']}: header declares shape (1369000, 28, 28) of "
                            "uint8, 1,073,296,000 bytes, more than the limit max_bytes=268,435,456 (pass a "
                            "larger max_bytes to read_idx if the file really is that big)"]


def test_read_idx_with_a_lying_gzip_takes_memory_only_as_data_arrives(bombs, tmp_path):
    # The MNIST-header bomb declares 47 MB and holds 1 GiB: read to the declared size, refused.
    out = in_child("read_idx, gzip longer than its header", "read_idx(args['path'])", tmp_path,
                   path=str(bombs["mnist_header"]))
    assert out["error"] == ["IDXFormatError", f"{bombs['mnist_header']}: payload is longer than the header "
                            "says (47040000 bytes for shape (60000, 28, 28), then more)"]
    assert out["megabytes"] < 100


def test_huge_sparse_plain_file_refused_by_its_size(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    path = folder / MNIST.files["train_images"].stem          # the uncompressed name
    with open(path, "wb") as f:                                # 1 GiB on paper, no disk used
        f.write(header_bytes(BOMB_SHAPE))
        f.truncate(16 + int(np.prod(BOMB_SHAPE)))
    with bounded("sparse 1 GiB raw file in data_dir"):
        with pytest.raises(ChecksumError, match=rf"{path.name}: not the official {TRAIN_IMAGES}: "
                                                r"1,073,296,016 bytes on disk, more than any copy of it "
                                                rf"can be \({MNIST.files['train_images'].max_file_size:,}\)"):
            datasets.load_mnist(data_dir=folder, download=False)
    with bounded("read_idx on a sparse file declaring 200 MB, holding 10"):
        small = tmp_path / "liar.idx"
        small.write_bytes(header_bytes((200, 1000, 1000)) + bytes(10))
        with pytest.raises(IDXFormatError, match=r"payload is shorter than the header says \(10 of "
                                                 r"200000000 bytes"):
            read_idx(small)


# -- 2. never modify or delete a user's file ---------------------------------------------------

@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """The small four-file dataset of test_datasets, registered with its shapes (so caps and
    header checks apply), served by a local mirror."""
    info, arrays, files = make_tiny(tmp_path)
    shaped = {k: dataclasses.replace(f, shape=arrays[k].shape) for k, f in info.files.items()}
    monkeypatch.setitem(datasets.DATASETS, "tiny", dataclasses.replace(info, files=shaped))
    with FileServer(files, trickle_seconds=0.5) as server:
        yield server, arrays, files


def user_folder(tmp_path, files, broken=None):
    folder = tmp_path / "mine"
    folder.mkdir()
    for name, gz in files.items():
        (folder / name).write_bytes(gz)
    if broken:
        data = bytearray(files[broken])
        data[-12] ^= 0xFF                  # inside the deflate data: a damaged download
        (folder / broken).write_bytes(bytes(data))
        os.utime(folder / broken, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return folder


@pytest.mark.parametrize("how", ["data_dir", "TINYCNN_DATA_DIR"])
def test_corrupt_user_file_is_an_error_and_left_alone(tiny, tmp_path, monkeypatch, how):
    server, _, files = tiny
    folder = user_folder(tmp_path, files, broken="test-labels-ubyte.gz")
    before = snapshot(folder)
    kwargs = dict(mirrors=[server.mirror("ok")], **FAST)      # a good mirror is there: still no repair
    if how == "data_dir":
        kwargs["data_dir"] = folder
    else:
        monkeypatch.setenv("TINYCNN_DATA_DIR", str(folder))
    with bounded(f"corrupt user file ({how})"):
        with pytest.raises(ChecksumError) as err:
            load_dataset("tiny", download=True, **kwargs)
    message = str(err.value)
    assert message.startswith(f"{folder / 'test-labels-ubyte.gz'}: checksum mismatch: expected .gz SHA-256 ")
    assert "tinycnn does not modify or delete your files: replace it with a good copy, or delete it " \
           "yourself to download a fresh one (tinycnn download), or point --data-dir" in message
    assert "\n" not in message
    assert snapshot(folder) == before                          # bytes and mtime unchanged
    assert server.requests == []                               # and nothing downloaded over it


def test_only_the_cache_is_repaired(tiny, tmp_path, capsys):
    server, arrays, files = tiny
    cache = Path(datasets.cache_dir("tiny"))
    cache.mkdir(parents=True)
    for name, gz in files.items():
        (cache / name).write_bytes(gz)
    bomb = cache / "train-images-ubyte.gz"
    write_gzip_of_zeros(bomb, header_bytes((400, 1000, 100)), 16 + 4 * 10 ** 7)   # 40 KB -> 40 MB
    before = snapshot(cache)
    with bounded("bomb in the cache, download=False"):
        with pytest.raises(ChecksumError, match=r"its IDX header declares uint8 \(400, 1000, 100\), the "
                                                r"official file holds uint8 \(30, 5, 4\)\. It is in tinycnn's "
                                                r"cache: load with download=True \(or run tinycnn download\)"):
            load_dataset("tiny", download=False)
    assert snapshot(cache) == before
    with bounded("bomb in the cache, repaired"):
        (x, _), _ = load_dataset("tiny", mirrors=[server.mirror("ok")], **FAST)
    np.testing.assert_array_equal(x, arrays["train_images"])
    assert bomb.read_bytes() == files[bomb.name]
    assert server.requests == ["/ok/train-images-ubyte.gz"]
    assert "downloading a fresh copy" in capsys.readouterr().err


def test_train_does_not_fall_back_on_a_corrupt_user_file(tmp_path, mnist_dir):
    # The main job with MNIST's files in TINYCNN_DATA_DIR, one of them damaged: exit 1, one line,
    # the file untouched; not the 8x8 digits with exit 0.
    folder = tmp_path / "mine"
    folder.mkdir()
    good = (mnist_dir / TRAIN_IMAGES).read_bytes()
    (folder / TRAIN_IMAGES).write_bytes(good[:-1000] + bytes(1000))
    before = snapshot(folder)
    status, line = cli_one_line(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"],
                                env={"TINYCNN_DATA_DIR": str(folder)}, case="train, corrupt user file")
    assert status == 1
    assert line.startswith(f"tinycnn train: error: {folder / TRAIN_IMAGES}: checksum mismatch: expected .gz SHA-256 ")
    assert snapshot(folder) == before
    assert not (tmp_path / "run" / "model.npz").exists()


def test_fallback_only_without_files_and_network(tiny, tmp_path, monkeypatch):
    server, _, files = tiny
    args = run.build_parser().parse_args(["--quiet", "--out", str(tmp_path / "run")])
    monkeypatch.setenv("TINYCNN_MNIST_MIRRORS", server.mirror("missing"))      # "no network"
    said = []
    _, name, _ = run.load_data(args, said.append)      # the control case, not a hostile one
    assert name == "digits" and "could not be had" in said[0]
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / TRAIN_IMAGES).write_bytes(b"not mnist at all")
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(folder))
    with bounded("auto: corrupt user file -> error"):
        with pytest.raises(ChecksumError, match=f"{TRAIN_IMAGES}: not the official {TRAIN_IMAGES}: its IDX "
                                                r"header is not IDX \(starts 6e6f74206d6e6973\)"):
            run.load_data(args, said.append)


def test_quiet_run_still_says_it_fell_back(tmp_path, monkeypatch, capsys):
    # --quiet prints only the final report, but a run on other data than asked for says so (stderr).
    class Stop(Exception):
        pass

    def load_data(args, say):
        say("MNIST could not be had, so this run uses ...")
        raise Stop
    monkeypatch.setattr(run, "load_data", load_data)
    for flags, stream in (["--quiet"], "err"), ([], "out"):
        with pytest.raises(Stop):
            run.run(run.build_parser().parse_args([*flags, "--out", str(tmp_path / "run")]))
        assert "could not be had" in getattr(capsys.readouterr(), stream)


# -- 3. unusable folders -----------------------------------------------------------------------

def test_data_dir_env_pointing_at_a_file(tmp_path, monkeypatch):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("hello")
    monkeypatch.setenv("TINYCNN_DATA_DIR", str(a_file))
    with bounded("TINYCNN_DATA_DIR is a file"):
        with pytest.raises(DataDirError, match=rf"^TINYCNN_DATA_DIR={a_file} is a file, not a folder: point "
                                               r"it at the folder that holds the dataset's files$"):
            datasets.load_mnist()
    with pytest.raises(DataDirError, match=rf"^data_dir={a_file} is a file, not a folder"):
        datasets.load_mnist(data_dir=a_file)
    for argv in (["download"], ["train", "--out", str(tmp_path / "run")]):
        status, line = cli_one_line(argv, case=f"{argv[0]}, TINYCNN_DATA_DIR is a file")
        assert status == 1 and f"TINYCNN_DATA_DIR={a_file} is a file, not a folder" in line
    assert a_file.read_text() == "hello"


def test_unwritable_cache_under_a_regular_file(tmp_path, tiny):
    server, _, _ = tiny
    a_file = tmp_path / "plain"
    a_file.write_text("x")
    # A cache path under a regular file cannot be created, even by root.
    status, line = cli_one_line(["download"], env={"XDG_CACHE_HOME": str(a_file),
                                                   "TINYCNN_MNIST_MIRRORS": server.mirror("ok")},
                                case="download, cache under a regular file")
    assert status == 1
    assert line == (f"tinycnn download: error: {a_file}/tinycnn/mnist: cannot download into this folder "
                    "(Not a directory); pass data_dir= / --data-dir, or set XDG_CACHE_HOME, to download "
                    "elsewhere")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes through chmod 0555")
def test_unwritable_cache_by_permissions(tmp_path, tiny):
    server, _, _ = tiny
    cache = tmp_path / "cache"
    (cache / "tinycnn" / "mnist").mkdir(parents=True)
    (cache / "tinycnn" / "mnist").chmod(0o555)
    try:
        status, line = cli_one_line(["download"], env={"XDG_CACHE_HOME": str(cache),
                                                       "TINYCNN_MNIST_MIRRORS": server.mirror("ok")})
    finally:
        (cache / "tinycnn" / "mnist").chmod(0o755)
    assert status == 1 and "cannot download into this folder (Permission denied)" in line


# -- 4. downloads: deadline and size cap -------------------------------------------------------

def test_trickling_mirror_fails_at_the_deadline(tiny, tmp_path):
    server, _, _ = tiny
    mirror = server.mirror("trickle")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as err:
        load_dataset("tiny", data_dir=tmp_path / "dl", mirrors=[mirror], deadline=2, **FAST)
    seconds = time.perf_counter() - t0
    MEASURED["trickling mirror, 2 s deadline"] = (seconds, 0.0)
    assert 2 <= seconds < 2 + 2 * SECONDS
    assert f"  - {mirror}train-images-ubyte.gz: too slow: " in str(err.value)
    assert "past the 2 s deadline for one file (deadline=... or TINYCNN_DOWNLOAD_DEADLINE sets it)" in str(err.value)
    assert os.listdir(tmp_path / "dl") == []


def test_trickle_then_next_mirror(tiny, tmp_path):
    server, arrays, _ = tiny
    # The deadline also caps the read timeout; retries keep the good mirror safe on a busy machine.
    (x, _), _ = load_dataset("tiny", data_dir=tmp_path / "dl", deadline=1.5,
                             mirrors=[server.mirror("trickle"), server.mirror("ok")], **dict(FAST, retries=3))
    np.testing.assert_array_equal(x, arrays["train_images"])


def test_deadline_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYCNN_DOWNLOAD_DEADLINE", "soon")
    with pytest.raises(ValueError, match=r"TINYCNN_DOWNLOAD_DEADLINE='soon': expected a number of "
                                         r"seconds above 0"):
        download_file(["http://127.0.0.1:9/x"], tmp_path / "x")


@pytest.mark.parametrize("mode, why", [
    ("huge", r"Content-Length 1,000,000,000,000 bytes is more than any copy of this file can be "
             r"\({limit:,}\); not downloaded"),
    ("endless", r"body goes on past {limit:,} bytes, more than any copy of this file can be; cut off there"),
])
def test_oversized_body_refused_or_cut(tiny, tmp_path, mode, why):
    server, _, _ = tiny
    mirror = server.mirror(mode)
    limit = datasets.DATASETS["tiny"].files["train_images"].max_file_size
    with bounded(f"{mode} body"):
        with pytest.raises(DownloadError, match=rf"{mirror}train-images-ubyte.gz: " + why.format(limit=limit)):
            load_dataset("tiny", data_dir=tmp_path / "dl", mirrors=[mirror], **FAST)
    time.sleep(0.2)
    sent = server.sent[f"/{mode}/train-images-ubyte.gz"]
    assert sent == 0 if mode == "huge" else sent < limit + 16 * 2 ** 20   # refused unread / hung up on
    assert os.listdir(tmp_path / "dl") == []


def test_endless_body_against_mnist_cap(tmp_path):
    # The real registry's cap: MNIST's train images are 47 MB decompressed; an endless mirror
    # is cut at that plus gzip's framing, not at 629 MB.
    with FileServer({TRAIN_IMAGES: b""}) as server:
        out = in_child("endless body, MNIST cap", """
datasets.load_mnist(data_dir=args['dir'], mirrors=[args['mirror']], timeout=(2, 2), retries=1,
                    progress=False)""", tmp_path, dir=str(tmp_path / "dl"), mirror=server.mirror("endless"))
        sent = server.sent[f"/endless/{TRAIN_IMAGES}"]
    limit = MNIST.files["train_images"].max_file_size
    assert out["error"][0] == "DownloadError"
    assert f"{server.mirror('endless')}{TRAIN_IMAGES}: body goes on past {limit:,} bytes" in out["error"][1]
    assert sent < limit + 16 * 2 ** 20
    assert os.listdir(tmp_path / "dl") == []


# -- 5. stale temporary files of killed processes ----------------------------------------------

WRITER = """
import sys, time
from tinycnn.fileutil import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"half a model")
    f.flush()
    print("writing", flush=True)
    time.sleep(120)
"""


def start_writer(path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temps(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith((".tmp", ".part")))


def test_kill_9_during_save_is_cleaned_next_time(tmp_path):
    target = tmp_path / "model.npz"
    killed, alive = start_writer(target), start_writer(tmp_path / "other.npz")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        stale = [t for t in temps(tmp_path) if f"-{killed.pid}-" in t]
        live = [t for t in temps(tmp_path) if f"-{alive.pid}-" in t]
        assert len(stale) == 1 and len(live) == 1
        assert stale[0].startswith(".model.npz.tinycnn-") and stale[0].endswith(".tmp")
        foreign = [".model.npz.abc123.tmp",                               # not tinycnn's name
                   ".model.npz.tinycnn-otherhost-1-0123abcd.tmp"]         # another machine's
        for name in foreign:
            (tmp_path / name).write_bytes(b"keep")
        with bounded("stale temp after kill -9 (save)"):
            with atomic_write(target) as f:
                f.write(b"new")
        assert target.read_bytes() == b"new"
        assert temps(tmp_path) == sorted(live + foreign)                  # only the dead one's went
    finally:
        alive.kill()
        alive.wait()
    assert clean_stale_temps(tmp_path) == live                            # now its writer is dead too


def test_kill_9_during_download_is_cleaned_next_time(tiny, tmp_path):
    server, _, files = tiny
    dest = tmp_path / "dl" / "train-images-ubyte.gz"
    code = ("import sys; from tinycnn.datasets import download_file; "
            "download_file([sys.argv[1]], sys.argv[2], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", code, server.mirror("trickle") + dest.name, str(dest)],
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        for _ in range(200):                                              # until its .part exists
            if dest.parent.exists() and temps(dest.parent):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    (part,) = temps(dest.parent)
    assert part.startswith(".train-images-ubyte.gz.tinycnn-") and f"-{proc.pid}-" in part
    with bounded("stale temp after kill -9 (download)"):
        download_file([server.mirror("ok") + dest.name], dest, progress=False)
    assert dest.read_bytes() == files[dest.name]
    assert temps(dest.parent) == []


# -- 6. saved files honour the umask -----------------------------------------------------------

@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_and_downloaded_files_follow_the_umask(tiny, tmp_path, umask, mode):
    server, _, files = tiny
    model = tmp_path / "model.npz"
    model.write_bytes(b"old")
    model.chmod(0o644)
    old = os.umask(umask)
    try:
        with atomic_write(model) as f:            # overwriting a 0644 file
            f.write(b"new")
        download_file([server.mirror("ok") + "train-labels-ubyte.gz"], tmp_path / "labels.gz", progress=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(model.stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "labels.gz").stat().st_mode) == mode


# -- 7. everything else a careless user or an attacker would hit -------------------------------

def test_truncated_gzip_in_data_dir(tiny, tmp_path):
    _, _, files = tiny
    folder = user_folder(tmp_path, files)
    (folder / "train-images-ubyte.gz").write_bytes(files["train-images-ubyte.gz"][:-30])
    with bounded("truncated gzip in data_dir"):
        with pytest.raises(ChecksumError, match=r"train-images-ubyte.gz: checksum mismatch: .* \(and it is "
                                                r"not a readable gzip: Compressed file ended before the "
                                                r"end-of-stream marker was reached\)\. tinycnn does not"):
            load_dataset("tiny", data_dir=folder, download=False)
    with bounded("read_idx on a truncated gzip"):
        with pytest.raises(IDXFormatError, match=r"train-images-ubyte.gz: corrupt or truncated gzip stream"):
            read_idx(folder / "train-images-ubyte.gz")


def test_wrong_magic_in_data_dir(tiny, tmp_path):
    _, _, files = tiny
    folder = user_folder(tmp_path, files)
    raw = bytearray(gzip.decompress(files["train-labels-ubyte.gz"]))
    raw[0] = 1
    (folder / "train-labels-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with bounded("wrong IDX magic in data_dir"):
        with pytest.raises(ChecksumError, match=r"train-labels-ubyte.gz: not the official train-labels-ubyte.gz: "
                                                r"its IDX header is not IDX \(starts 010008010000001e\), the "
                                                r"official file holds uint8 \(30,\)"):
            load_dataset("tiny", data_dir=folder, download=False)


def test_labels_and_images_that_do_not_belong_together(tmp_path, monkeypatch):
    # A registered dataset whose (verified) files disagree: 30 images, 29 labels.
    info, arrays, files = make_tiny(tmp_path)
    arrays["train_labels"] = arrays["train_labels"][:29]
    folder = tmp_path / "mine"
    folder.mkdir()
    infos = {}
    for key, f in info.files.items():
        datasets.write_idx(folder / f.filename, arrays[key])
        raw = gzip.decompress((folder / f.filename).read_bytes())
        infos[key] = dataclasses.replace(f, raw_sha256=hashlib.sha256(raw).hexdigest())
    monkeypatch.setitem(datasets.DATASETS, "tiny", dataclasses.replace(info, files=infos))
    with bounded("labels/images count mismatch"):
        with pytest.raises(IDXFormatError, match=r"^tiny train: images \(30, 5, 4\) and labels \(29,\) do not "
                                                 r"belong together$"):
            load_dataset("tiny", data_dir=folder, download=False)


@pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs")
@pytest.mark.parametrize("kind", ["symlink loop", "dangling symlink", "folder", "FIFO"])
def test_not_a_regular_file_where_a_dataset_file_should_be(tiny, tmp_path, kind):
    server, _, files = tiny
    folder = user_folder(tmp_path, files)
    path = folder / "train-images-ubyte.gz"
    path.unlink()
    if kind == "symlink loop":
        os.symlink(path, path)
        what = "a symbolic link loop"
    elif kind == "dangling symlink":
        os.symlink(tmp_path / "gone", path)
        what = f"a dangling symbolic link \\(to {tmp_path / 'gone'}\\)"
    elif kind == "folder":
        path.mkdir()
        what = "a folder"
    else:
        os.mkfifo(path)
        what = r"a FIFO \(named pipe\)"
    with bounded(f"{kind} as a data file"):
        with pytest.raises(DataDirError, match=rf"^{path}: is {what}, where the dataset file "
                                               r"train-images-ubyte.gz should be; move it away or point "
                                               r"data_dir elsewhere$"):
            load_dataset("tiny", data_dir=folder, mirrors=[server.mirror("ok")], **FAST)
        with pytest.raises(IDXFormatError, match=rf"^{path}: is {what}, not an IDX file$"):
            read_idx(path)            # a FIFO would block open() forever
    assert server.requests == []      # no download over it
    assert os.path.lexists(path)


def test_data_dir_is_a_symlink_loop(tmp_path):
    loop = tmp_path / "loop"
    os.symlink(loop, loop)
    with bounded("data_dir is a symlink loop"):
        with pytest.raises(DataDirError, match=rf"^data_dir={loop} is a symbolic link loop, not a folder"):
            datasets.load_mnist(data_dir=loop, download=False)


def test_atomic_write_errors_name_the_file_asked_for_not_the_temporary_one(tmp_path):
    """`model.save(folder)` and a failed rename said '.model.npz.tinycnn-vm-...tmp': a name the
    user never gave. The error keeps its type and names the target; nothing is left behind."""
    (tmp_path / "model.npz").mkdir()
    with pytest.raises(IsADirectoryError) as err:
        with atomic_write(tmp_path / "model.npz") as f:
            f.write(b"x")
    assert err.value.filename == str(tmp_path / "model.npz") and "tinycnn-" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
