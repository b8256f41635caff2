"""The hostile-input corpus (issue 17, model files, images, optimisers, outputs, CLI): files an
attacker or a careless user could hand tinycnn, built here at run time (nothing large is
committed). Every case asserts the error's type and message (the CLI's one line and exit
status, and no traceback) and bounds: under 2 s and 300 MB over a baseline. Cases that could
blow memory run in a child process whose peak RSS and CPU time come from os.wait4; the
others run here under tracemalloc (NumPy reports its allocations to it).
"""
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageDraw

import scipy.ndimage  # noqa: F401  (imported here so that no case times the import)
import tinycnn
from tinycnn import ModelFormatError, load_model
from tinycnn.layers import (LAYER_TYPES, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Flatten,
                            MaxPool2D, ReLU)
from tinycnn.modelcheck import expected_arrays
from tinycnn.optim import SGD, Adam, AdamW
from tinycnn.preprocess import MAX_PIXELS, open_image, to_mnist

from bounds import MEGABYTES, SECONDS, traced

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=ROOT, TINYCNN_BACKEND="numpy", MPLBACKEND="Agg")
MB = 2**20
WORST = {"seconds": 0.0, "megabytes": 0.0}       # printed at the end (pytest -s) for the notes


@pytest.fixture(autouse=True)
def numpy_backend():
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    yield
    tinycnn.set_backend(previous)        # later test modules run on their own backend


# -- measuring ---------------------------------------------------------------------------
def _note(seconds, megabytes):
    case = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
    if seconds > WORST["seconds"]:
        WORST.update(seconds=seconds, slowest=case)
    if megabytes > WORST["megabytes"]:
        WORST.update(megabytes=megabytes, largest=case)


def bounded():
    """Time and peak traced memory of the block, held under the corpus bounds."""
    return traced(_note)


class Child:
    def __init__(self, code, out, err, cpu, rss):
        self.code, self.out, self.err, self.cpu, self.rss = code, out, err, cpu, rss


def run_child(args, timeout=60):
    """Run python with `args`; exit code, output, CPU seconds and peak RSS (bytes) of that
    child alone (os.wait4 gives its own rusage). A child alive after `timeout` fails the test."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, *args], stdout=out, stderr=err, env=ENV,
                                stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                proc.returncode = -9
                pytest.fail(f"{args} still running after {timeout} s (hangs)")
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Child(proc.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                     usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


@pytest.fixture(scope="module")
def baseline():
    """A child that imports what the CLI imports and does nothing."""
    return run_child(["-c", "import tinycnn.cli, tinycnn.run, tinycnn.preprocess, scipy.ndimage, PIL.Image"])


def cli(baseline, *args, code=1, seconds=SECONDS):
    """`python -m tinycnn ARGS` in a child: exit status, one line on stderr, no traceback,
    and CPU time and peak RSS over the baseline under the bounds. Returns the child."""
    child = run_child(["-m", "tinycnn", *map(str, args)])
    extra_cpu, extra_mb = child.cpu - baseline.cpu, (child.rss - baseline.rss) / MB
    if seconds == SECONDS:           # training runs have their own bound, kept out of the worst case
        _note(extra_cpu, extra_mb)
    assert child.code == code, (child.code, child.err)
    assert "Traceback" not in child.err, child.err
    assert extra_cpu < seconds and extra_mb < MEGABYTES, (extra_cpu, extra_mb, args)
    return child


def one_error_line(child):
    lines = [line for line in child.err.splitlines() if line.strip()]
    assert len(lines) == 1, child.err
    return lines[0]


# -- files ---------------------------------------------------------------------------------
def small_model(seed=0):
    model = tinycnn.Sequential([Conv2D(1, 2, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(2 * 13 * 13, 10)],
                               input_shape=(1, 28, 28), seed=seed)
    model.preprocessing = {"scale": 1 / 255, "mean": 0.13, "std": 0.31}
    model.class_names = [str(i) for i in range(10)]
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    small_model().save(d / "good.npz")
    return d


def arrays_of(path):
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def variant(files, name, meta=None, arrays=None, meta_text=None):
    """A copy of good.npz with its __meta__ dict changed by `meta`, its arrays by `arrays`, or
    its __meta__ replaced by raw text."""
    a = arrays_of(files / "good.npz")
    m = json.loads(str(a["__meta__"]))
    if meta:
        meta(m)
    a["__meta__"] = np.array(meta_text if meta_text is not None else json.dumps(m))
    if arrays:
        arrays(a)
    np.savez(files / name, **a)
    return files / name


def npy_header(shape, descr="<f4"):
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": descr, "fortran_order": False, "shape": shape})
    return f.getvalue()


def dense_only_meta(d, m):
    return json.dumps({"format_version": 1, "architecture": [
        {"type": "Dense", "config": {"in_features": d, "out_features": m}}], "input_shape": [d]})


def npy_bytes(value):
    f = io.BytesIO()
    np.lib.format.write_array(f, value)
    return f.getvalue()


def stored(name, data):
    """A raw_zip member stored uncompressed."""
    return name, data, len(data), zlib.crc32(data), 0


def raw_zip(members, flags=0):
    """Bytes of a zip archive written by hand, so that an entry can carry precompressed data.
    members: (name, stored bytes, uncompressed size, crc32, method 0 stored / 8 deflated).
    flags: every entry's general purpose bits (1: encrypted)."""
    out, central = bytearray(), bytearray()
    for name, data, size, crc, method in members:
        n, offset = name.encode(), len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0, crc, len(data), size, len(n), 0)
        out += n + data
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0, crc, len(data),
                               size, len(n), 0, 0, 0, 0, 0, offset) + n
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(central), len(out), 0)
    return bytes(out + central + end)


def directory_only_zip(path, entries, declared):
    """A zip that is only a directory: `entries` records (name "a", no data) under a ZIP64 end
    record declaring `declared` of them (the probe's file held 5.7 million in 255 MiB)."""
    record = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    size = len(record) * entries
    end64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, declared, declared, size, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, size, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(record * entries + end64 + locator + end)


def deflated_zeros(header, nbytes, block=16 * MB):
    """(deflate stream, crc32) of `header` + `nbytes` zero bytes, in about a second for 2 GB: with
    a full flush after each block, every 16 MB block of zeros compresses to the same bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(block)
    one = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(header)
    for _ in range(nbytes // block):
        crc = zlib.crc32(zeros, crc)
    return stream + one * (nbytes // block) + c.flush(), crc


# -- 1. model files: sizes checked before memory is committed ----------------------------
def test_huge_dense_declared_in_a_tiny_file_fails_fast_naming_the_array(files, baseline):
    p = files / "dense20000.npz"
    np.savez(p, __meta__=np.array(dense_only_meta(20000, 20000)))
    assert p.stat().st_size < 1000
    line = one_error_line(cli(baseline, "summary", p))
    assert line.startswith("tinycnn summary: error: ")
    assert "arrays do not match the architecture: missing ['param/dense_0/W', 'param/dense_0/b']" in line


def test_huge_dense_with_small_arrays_names_the_mismatch(files):
    def tiny_dense(a):
        for k in [k for k in a if k.startswith("param/")]:
            del a[k]
        a.update({"param/dense_0/W": np.zeros((2, 2), np.float32), "param/dense_0/b": np.zeros(2, np.float32)})
    p = variant(files, "dense1e5.npz", meta_text=dense_only_meta(100000, 100000), arrays=tiny_dense)
    with bounded(), pytest.raises(ModelFormatError, match=r"param/dense_0/W has shape \(2, 2\) dtype "
                                  r"float32; the architecture needs shape \(100000, 100000\)"):
        load_model(p)


def test_npy_header_of_10_to_the_12_elements(files, baseline):
    """dense_4/W replaced by a header declaring 10^12 elements, followed by 16 bytes."""
    p = files / "header1e12.npz"
    with zipfile.ZipFile(p, "w") as z:
        for k, v in arrays_of(files / "good.npz").items():
            z.writestr(k + ".npy", npy_bytes(v) if k != "param/dense_4/W"
                       else npy_header((10**6, 10**6)) + bytes(16))
    line = one_error_line(cli(baseline, "summary", p))
    assert ("entry 'param/dense_4/W' declares shape (1000000, 1000000) float32 (4.0 TB) but holds "
            "16 bytes") in line
    with bounded(), pytest.raises(ModelFormatError, match=r"declares shape \(1000000, 1000000\)"):
        load_model(p)


def test_honest_array_above_the_size_limit(files, baseline):
    """An entry whose header and zip sizes agree, 100 MB of zeros deflated to 100 KB: refused
    from the header, before the layer or the array is allocated."""
    header = npy_header((5000, 5000))
    stream, crc = deflated_zeros(header, 5000 * 5000 * 4, block=4 * MB)
    p = files / "honest100mb.npz"
    p.write_bytes(raw_zip([stored("__meta__.npy", npy_bytes(np.array(dense_only_meta(5000, 5000)))),
                           ("param/dense_0/W.npy", stream, len(header) + 5000 * 5000 * 4, crc, 8),
                           stored("param/dense_0/b.npy", npy_bytes(np.zeros(5000, np.float32)))]))
    assert p.stat().st_size < 200_000
    line = one_error_line(cli(baseline, "summary", p))
    assert "the weights total 100.0 MB, above the limit of 67.1 MB (tinycnn.modelcheck.MAX_MODEL_BYTES)" in line


def test_valid_model_plus_2gb_compressed_entry_refused_unread(files, baseline):
    members = [stored(k + ".npy", npy_bytes(v)) for k, v in arrays_of(files / "good.npz").items()]
    header = npy_header((2 * 10**9,), "|u1")
    stream, crc = deflated_zeros(header, 2 * 10**9 - (2 * 10**9) % (16 * MB))
    size = len(header) + 2 * 10**9 - (2 * 10**9) % (16 * MB)
    members.append(("extra.npy", stream, size, crc, 8))
    p = files / "extra2gb.npz"
    p.write_bytes(raw_zip(members))
    assert p.stat().st_size < 3 * MB
    with zipfile.ZipFile(p) as z:                      # really 2 GB inside
        assert z.getinfo("extra.npy").file_size > 1.9e9
    line = one_error_line(cli(baseline, "summary", p))
    assert "unexpected entries ['extra']; refused without reading them" in line


def test_npy_header_length_of_a_gigabyte_refused_unread(files, baseline):
    """An npy (version 2) header states its own length in 4 bytes; NumPy reads that many bytes
    before it checks the length against its 10,000-byte limit. __meta__ declares a 1 GiB header
    of deflated zeros: it is refused from those 4 bytes, not after reading a gigabyte."""
    head = b"\x93NUMPY\x02\x00" + struct.pack("<I", 2**30)
    stream, crc = deflated_zeros(head, 2**30)
    p = files / "header1gb.npz"
    p.write_bytes(raw_zip([("__meta__.npy", stream, len(head) + 2**30, crc, 8)]))
    assert p.stat().st_size < 2 * MB
    line = one_error_line(cli(baseline, "summary", p))
    assert line == (f"tinycnn summary: error: {p}: entry '__meta__' has no valid npy header (it declares "
                    "a header of 1,073,741,824 bytes; at most 10,000)")


def test_file_larger_than_any_model(tmp_path):
    p = tmp_path / "sparse.npz"
    with open(p, "wb") as f:              # 300 MB, sparse: no disk space used
        f.truncate(300 * 10**6)
    with bounded(), pytest.raises(ModelFormatError, match=r"sparse.npz: 300.0 MB is too large for a model "
                                                          r"file \(weights, optimiser state and JSON fit in 268.4 MB\)"):
        load_model(p)


@pytest.mark.parametrize("entries, declared, message", [
    (1_000_000, 1_000_000, "1,000,000 entries; a model file holds at most 4,096"),
    (30_000, 1, "its zip directory is 1.4 MB; a model file's is at most 1.0 MB"),    # a lying count
])
def test_zip_directory_refused_before_zipfile_parses_it(tmp_path, entries, declared, message):
    """zipfile builds every entry of the directory when it opens a file: 5.7 million entries
    took 31 s and 2.2 GB before their number was checked. The end record says how many and
    how large the directory is before that."""
    p = tmp_path / "directory.npz"
    directory_only_zip(p, entries, declared)
    with bounded(), pytest.raises(ModelFormatError) as err:
        load_model(p)
    assert str(err.value) == f"{p}: {message}"


def test_non_array_and_duplicate_entries(files):
    p = files / "readme.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("__meta__.npy", npy_bytes(np.array("{}")))
        z.writestr("README.txt", "hello")
    with bounded(), pytest.raises(ModelFormatError, match=r"unexpected entry 'README.txt' \(not an array\)"):
        load_model(p)
    p = files / "twice.npz"
    with pytest.warns(UserWarning, match="Duplicate name"):
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("__meta__.npy", npy_bytes(np.array("{}")))
            z.writestr("__meta__.npy", npy_bytes(np.array("{}")))
    with bounded(), pytest.raises(ModelFormatError, match="entry '__meta__.npy' appears twice"):
        load_model(p)


@pytest.mark.parametrize("method, flags, message", [
    (99, 0, "entry '__meta__.npy' is compressed with method 99; refused without reading it"),   # AES
    (7, 0, "entry '__meta__.npy' is compressed with method 7; refused without reading it"),
    (0, 1, "entry '__meta__.npy' is encrypted; refused without reading it"),
])
def test_entries_zipfile_cannot_open_are_refused_by_name(files, baseline, method, flags, message):
    """zipfile raised NotImplementedError or RuntimeError (not a ModelFormatError): a traceback."""
    meta = npy_bytes(np.array('{"format_version": 1}'))
    p = files / f"method{method}-{flags}.npz"
    p.write_bytes(raw_zip([("__meta__.npy", meta, len(meta), zlib.crc32(meta), method)], flags=flags))
    with bounded(), pytest.raises(ModelFormatError) as err:
        load_model(p)
    assert str(err.value) == f"{p}: {message}"
    assert one_error_line(cli(baseline, "summary", p)) == f"tinycnn summary: error: {p}: {message}"


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({k: v.astype(np.float16) for k, v in a.items() if k.startswith("param/")}),
     r"param/conv2d_0/W has shape \(2, 1, 3, 3\) dtype float16; the architecture needs shape "
     r"\(2, 1, 3, 3\) floats \(float32 or float64\)"),
    (lambda a: a.update({"param/dense_4/b": a["param/dense_4/b"].astype(np.float64)}),
     r"the weights mix dtypes \(float32, float64\); a model holds one float dtype"),
    (lambda a: a.update({"param/dense_4/b": a["param/dense_4/b"].astype(np.int32)}),
     r"param/dense_4/b has shape \(10,\) dtype int32"),
    (lambda a: a["param/dense_4/W"].__setitem__((3, 4), np.nan),
     r"param/dense_4/W holds 1 NaN or infinite values \(saved from a run that diverged\?\)"),
    (lambda a: a["param/conv2d_0/b"].__setitem__(0, np.inf), r"param/conv2d_0/b holds 1 NaN or infinite"),
    (lambda a: a.update({"evil": np.zeros(3)}), r"unexpected entries \['evil'\]; refused without reading"),
    (lambda a: a.update({"param/dense_4/extra": np.zeros(3, np.float32)}),
     r"missing none, unexpected \['param/dense_4/extra'\]"),
])
def test_weights_refused(files, change, message):
    p = variant(files, "weights.npz", arrays=change)
    with bounded(), pytest.raises(ModelFormatError, match=message):
        load_model(p)


def test_class_names_must_match_the_outputs_when_saved(tmp_path):
    model = tinycnn.Sequential([Flatten(), Dense(784, 10)])     # no input shape: Dense fixes the outputs
    model.class_names = ["a"]
    with pytest.raises(ValueError) as err:
        model.save(tmp_path / "short.npz")
    assert str(err.value) == (f"{tmp_path / 'short.npz'}: not saved: class_names has 1 names but the model "
                              "has outputs of shape (10,)")
    assert os.listdir(tmp_path) == []
    model.class_names = list("abcdefghij")
    assert load_model(model.save(tmp_path / "ok.npz")).class_names == model.class_names


@pytest.mark.parametrize("tail", [[], [{"type": "ReLU"}], [{"type": "Dropout", "config": {"p": 0.5}}]])
def test_class_names_checked_without_an_input_shape(files, tmp_path, baseline, tail):
    """Checked only when an input shape was stored: one name for ten outputs loaded, then
    predict raised IndexError and evaluate reported one class."""
    p = variant(files, "shortnames.npz", meta=lambda m: m.update(
        input_shape=None, class_names=["a"], architecture=m["architecture"] + tail))
    with bounded(), pytest.raises(ModelFormatError) as err:
        load_model(p)
    assert str(err.value) == f"{p}: __meta__ field class_names has 1 names but the model has outputs of shape (10,)"
    if not tail:
        digit_seven().save(tmp_path / "seven.png")
        line = one_error_line(cli(baseline, "predict", p, tmp_path / "seven.png"))
        assert line == f"tinycnn predict: error: {err.value}"


def test_fortran_ordered_weights_load_in_c_order(files):
    p = variant(files, "fortran.npz", arrays=lambda a: a.update(
        {"param/dense_4/W": np.asfortranarray(a["param/dense_4/W"])}))
    with zipfile.ZipFile(p) as z, z.open("param/dense_4/W.npy") as f:
        assert b"'fortran_order': True" in f.read(128)
    with bounded():
        model = load_model(p)
    assert model.layers[4].params["W"].flags.c_contiguous
    np.testing.assert_array_equal(model.layers[4].params["W"], load_model(files / "good.npz").layers[4].params["W"])


def _set(key, value):
    return lambda m: m.update({key: value})


@pytest.mark.parametrize("meta, message", [
    (_set("format_version", True), r"__meta__ field format_version must be a positive integer, got True"),
    (_set("format_version", -5), r"format_version must be a positive integer, got -5"),
    (_set("format_version", "1"), r"format_version must be a positive integer, got '1'"),
    (_set("input_shape", 5), r"__meta__ field input_shape must be a list of 1 to 3 integers in "
                             r"1..16777216, got 5"),
    (_set("input_shape", [1, 28, 10**9]), r"input_shape must be a list .* got \[1, 28, 1000000000\]"),
    (_set("class_names", ["0", "1"]), r"__meta__ field class_names has 2 names but the model has "
                                      r"outputs of shape \(10,\)"),
    (_set("class_names", list(range(10))), r"__meta__ field class_names must be a list of strings"),
    (_set("class_names", "0123456789"), r"class_names must be a list of strings"),
    (_set("preprocessing", {"mean": 0.1, "scale": 1}), r"__meta__ field preprocessing needs both mean "
                                                       r"and std, or neither"),
    (_set("preprocessing", {"mean": 0.1, "std": 0}), r"__meta__ field preprocessing.std must be > 0, got 0"),
    (_set("preprocessing", {"mean": 0.1, "std": -1}), r"preprocessing.std must be > 0, got -1"),
    (_set("preprocessing", {"mean": "a", "std": 1}), r"preprocessing.mean must be a finite number, got 'a'"),
    # Finite in JSON (float64) but not in float32, where model.preprocess works: std 0, mean inf.
    (_set("preprocessing", {"mean": 0.1, "std": 1e-300}), r"__meta__ field preprocessing.std must be at least "
                                                          r"1.2e-38 \(float32's smallest normal number\), got 1e-300"),
    (_set("preprocessing", {"mean": 1e300, "std": 1}), r"__meta__ field preprocessing.mean is beyond float32's "
                                                       r"range \(\|x\| <= 3.4e\+38\), got 1e\+300"),
    (_set("preprocessing", [0.1, 0.3]), r"__meta__ field preprocessing must be an object"),
    (_set("architecture", {"type": "Dense"}), r"__meta__ field architecture must be a list of layers"),
    (lambda m: m["architecture"][4].update(config="Dense"), r"architecture\[4\].config must be an object"),
    (lambda m: m["architecture"][4]["config"].update(in_features="338"),
     r"layer 4 \(Dense\): in_features must be a positive integer, got '338'"),
    (lambda m: m["architecture"][0]["config"].update(kernel_size=[3, 3, 3]),
     r"layer 0 \(Conv2D\): kernel_size must be an int or a pair of ints"),
    (lambda m: m["architecture"][0]["config"].update(activation="evil"),
     r"layer 0 \(Conv2D\) has bad arguments: Conv2D: activation must be None or 'relu'"),
    (lambda m: m["architecture"][1].update(type=["ReLU"]), r"layer 1 has unknown type \['ReLU'\]"),
])
def test_metadata_fields_checked(files, meta, message):
    p = variant(files, "meta.npz", meta=meta)
    with bounded(), pytest.raises(ModelFormatError, match=message):
        load_model(p)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", r"__meta__ must be a JSON object, got list"),
    ('"a model"', r"__meta__ must be a JSON object, got str"),
    ('{"format_version": 1, "architecture": ' + "[" * 100000 + "]" * 100000 + "}",
     r"__meta__ is nested too deeply \(more than 32 levels\)"),
    ('{"format_version": 1, "x": ' + "[" * 40 + "]" * 40 + "}", r"__meta__ is nested too deeply"),
    ('{"format_version": 1, "preprocessing": {"mean": NaN, "std": 1}}',
     r"__meta__ is not valid JSON \(NaN is not a number JSON allows\)"),
    ('{"format_version": ' + "9" * 5000 + "}", r"__meta__ is not valid JSON"),
    ('{"format_version": 1, "architecture": [' + ", ".join(['{"type": "ReLU"}'] * 2000) + "]}",
     r"__meta__ field architecture lists 2,000 layers; at most 1,000"),
    ('{"format_version": 1, "pad": "' + "x" * 1_100_000 + '"}', r"__meta__ is 4.4 MB; at most 4.2 MB"),
])
def test_metadata_json_refused(files, text, message):
    p = variant(files, "json.npz", meta_text=text)
    with bounded(), pytest.raises(ModelFormatError, match=message):
        load_model(p)


def test_deeply_nested_json_is_one_line_in_the_cli(files, baseline):
    p = variant(files, "deep.npz", meta_text='{"architecture": ' + "[" * 100000 + "]" * 100000 + "}")
    line = one_error_line(cli(baseline, "summary", p))
    assert line.endswith("deep.npz: __meta__ is nested too deeply (more than 32 levels)")


def test_model_path_that_is_a_fifo_or_folder(files):
    fifo = files / "model-fifo.npz"
    os.mkfifo(fifo)
    with bounded(), pytest.raises(ModelFormatError, match="model-fifo.npz: not a regular file"):
        load_model(fifo)
    with bounded(), pytest.raises(ModelFormatError, match=": not a regular file"):
        load_model(files)


def test_shape_rules_match_every_layer_type():
    """modelcheck works out each layer's arrays from its config without building it: held
    equal here to what every layer type really allocates (a new type with weights and no
    rule fails)."""
    examples = {"Dense": Dense(5, 3), "Conv2D": Conv2D(2, 4, (3, 2), bias=False),
                "BatchNorm1D": BatchNorm1D(6), "BatchNorm2D": BatchNorm2D(3),
                "MaxPool2D": MaxPool2D(2), "AvgPool2D": LAYER_TYPES["AvgPool2D"](3)}
    for kind, cls in LAYER_TYPES.items():
        layer = examples.get(kind) or cls()
        real = {f"{store}/{kind.lower()}_0/{k}": v.shape
                for store, arrays in (("param", layer.params), ("state", layer.state)) for k, v in arrays.items()}
        assert expected_arrays("f", [{"type": kind, "config": layer.config()}]) == real, kind
    assert expected_arrays("f", [{"type": "Dense", "config": Dense(5, 3, bias=False).config()}]) == {
        "param/dense_0/W": (5, 3)}


def test_checkpoints_and_models_still_load(files, tmp_path):
    """The checks refuse nothing tinycnn writes: a model and a training checkpoint round-trip."""
    from tinycnn.io import load_checkpoint, save_checkpoint
    model = small_model()
    opt = Adam(model, lr=1e-3)
    save_checkpoint(tmp_path / "ck.npz", model, opt, {"epoch": 1, "best_val_loss": float("inf")})
    with bounded():
        loaded, state, train = load_checkpoint(tmp_path / "ck.npz")
        plain = load_model(tmp_path / "ck.npz")        # a checkpoint is a model file too
    assert train == {"epoch": 1, "best_val_loss": float("inf")}
    assert sorted(state["buffers"]) == sorted(opt.state_dict()["buffers"])
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(plain.predict_proba(x), model.predict_proba(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))


# -- 2. images -----------------------------------------------------------------------------
def digit_seven(size=280, ink=0, paper=255):
    """A '7' drawn on paper: a bar at the top and a stroke down to the lower left."""
    im = Image.new("L", (size, size), paper)
    d = ImageDraw.Draw(im)
    s = size / 280
    d.line([(70 * s, 60 * s), (210 * s, 60 * s)], fill=ink, width=int(24 * s))
    d.line([(205 * s, 60 * s), (110 * s, 230 * s)], fill=ink, width=int(24 * s))
    return im


def png_header_only(path, width, height):
    """A PNG whose IHDR declares width x height and whose pixel data is a few bytes: enough
    for Image.open, which reads only the header."""
    def chunk(kind, data):
        return struct.pack(">L", len(data)) + kind + data + struct.pack(">L", zlib.crc32(kind + data))
    ihdr = struct.pack(">LLBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_png_refused_from_its_header(tmp_path):
    for side, what in ((12000, r"12000x12000 pixels is above the limit of 40,000,000 "
                                r"\(tinycnn.preprocess.MAX_PIXELS\); make it smaller first"),
                       (20000, r"exceeds limit of 178956970 pixels, could be decompression bomb DOS attack")):
        p = png_header_only(tmp_path / f"huge{side}.png", side, side)
        with bounded(), pytest.raises(ValueError, match=rf"huge{side}.png: cannot read this image \(.*{what}"):
            to_mnist(p)


def test_large_jpeg_decoded_at_reduced_scale(tmp_path, baseline):
    """A 48-megapixel photo (above MAX_PIXELS): libjpeg decodes it at 1/4 scale, so memory stays
    small, and the digit still comes out."""
    big = digit_seven(280).resize((8000, 6000), Image.NEAREST)
    assert 8000 * 6000 > MAX_PIXELS
    p = tmp_path / "photo.jpg"
    big.save(p, quality=80)
    del big
    child = run_child(["-c", "import sys; from tinycnn.preprocess import to_mnist, open_image; "
                             f"print(open_image({str(p)!r}).size); x = to_mnist({str(p)!r}); "
                             "print(round(float(x.sum()), 1), x.shape)"])
    extra_cpu, extra_mb = child.cpu - baseline.cpu, (child.rss - baseline.rss) / MB
    _note(extra_cpu, extra_mb)
    assert child.code == 0, child.err
    size, ink = child.out.splitlines()
    assert size == "(2000, 1500)"                      # decoded at 1/4 scale
    assert float(ink.split()[0]) > 20
    assert extra_cpu < SECONDS and extra_mb < MEGABYTES, (extra_cpu, extra_mb)


def test_truncated_jpeg_names_the_path(tmp_path):
    p = tmp_path / "cut.jpg"
    digit_seven().save(p, quality=90)
    p.write_bytes(p.read_bytes()[:600])
    with bounded(), pytest.raises(ValueError) as err:
        to_mnist(p)
    assert str(err.value).startswith(f"{p}: cannot read this image (")
    assert "truncated" in str(err.value) and "PIL" not in str(err.value)


def test_fifo_and_folder_refused_without_blocking(tmp_path):
    fifo = tmp_path / "b.png"
    os.mkfifo(fifo)
    with bounded(), pytest.raises(ValueError, match=r"b.png: not a regular file \(a folder, pipe or device\)"):
        to_mnist(fifo)
    with bounded(), pytest.raises(ValueError, match="not a regular file"):
        open_image(tmp_path)


def correlation(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_exif_orientation_applied(tmp_path):
    """A phone stores the sensor's pixels and says in EXIF how to turn them (6: rotate 90 degrees
    clockwise to view). The digit must come out upright."""
    upright = digit_seven()
    stored = upright.transpose(Image.Transpose.ROTATE_90)         # as the sensor saw it
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    p = tmp_path / "phone.jpg"
    stored.save(p, quality=95, exif=exif.tobytes())
    with bounded():
        seen = to_mnist(p)
    want, ignored = to_mnist(upright), to_mnist(stored)
    assert correlation(seen, want) > 0.95
    assert correlation(seen, ignored) < 0.6


def test_16_bit_and_float_images_scaled_by_their_range(tmp_path):
    eight = np.asarray(digit_seven(ink=255, paper=0))                   # bright ink on black
    want = to_mnist(eight)
    p16 = tmp_path / "scan16.png"
    Image.fromarray(eight.astype(np.uint16) * 16).save(p16)   # 12-bit data, 16-bit file
    assert Image.open(p16).mode.startswith("I")
    pf = tmp_path / "float.tif"
    Image.fromarray(eight.astype(np.float32) / 255, mode="F").save(pf)
    assert Image.open(pf).mode == "F"
    for p in (p16, pf):
        with bounded():
            got = to_mnist(p)
        np.testing.assert_allclose(got, want, atol=0.02, err_msg=str(p))
    np.testing.assert_allclose(to_mnist(eight.astype(np.uint16) * 16), want, atol=0.02)


def test_float_image_with_nan_refused(tmp_path):
    a = np.zeros((40, 40), np.float32)
    a[10:30, 18:22] = 1
    a[0, 0] = np.nan
    p = tmp_path / "nan.tif"
    Image.fromarray(a, mode="F").save(p)
    with bounded(), pytest.raises(ValueError, match="the F image holds NaN or infinite values"):
        to_mnist(p)


def with_exif_chunk(path, blob):
    """digit_seven() as a PNG whose eXIf chunk holds `blob` (a phone photo's orientation lives there)."""
    buf = io.BytesIO()
    digit_seven(100).save(buf, "PNG")
    png = buf.getvalue()
    exif = struct.pack(">L", len(blob)) + b"eXIf" + blob + struct.pack(">L", zlib.crc32(b"eXIf" + blob))
    path.write_bytes(png[:33] + exif + png[33:])             # right after the 33-byte signature + IHDR
    return path


def test_damaged_exif_is_a_value_error_and_one_cli_line(files, tmp_path, baseline):
    """Pillow parses EXIF only when asked (exif_transpose): a garbage block raised SyntaxError
    out of to_mnist, a traceback in `tinycnn predict` and a 500 in `tinycnn serve`."""
    p = with_exif_chunk(tmp_path / "bad-exif.png", b"garbage!!")
    with bounded(), pytest.raises(ValueError, match=r"bad-exif.png: cannot read this image \(damaged "
                                  r"EXIF block: not a TIFF file"):
        to_mnist(p)
    picture = Image.open(p)                                   # a PIL image handed to to_mnist itself
    with pytest.raises(ValueError, match=r"^to_mnist: cannot read this image \(damaged EXIF block"):
        to_mnist(picture)
    child = cli(baseline, "predict", files / "good.npz", p)
    assert one_error_line(child).startswith(f"{p}: skipped: cannot read this image (damaged EXIF block: ")
    # A merely odd block (offset past its end) still reads, without Pillow's warnings on stderr.
    odd = with_exif_chunk(tmp_path / "odd-exif.png", b"II*\x00\xff\xff\xff\x7f")
    child = cli(baseline, "predict", files / "good.npz", odd, code=0)
    assert child.err == "" and child.out.startswith(f"{odd}: ")


def test_empty_and_unidentified_files_say_so(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    with bounded(), pytest.raises(ValueError, match=r"empty.png: empty file \(0 bytes\), not an image$"):
        to_mnist(tmp_path / "empty.png")
    with bounded(), pytest.raises(ValueError) as err:
        to_mnist(tmp_path / "text.png")
    assert str(err.value) == f"{tmp_path / 'text.png'}: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)"


@pytest.mark.parametrize("image, message", [
    (np.zeros((0, 0)), "to_mnist: the image is empty (shape (0, 0))"),
    (np.zeros((0, 5, 3), np.uint8), "to_mnist: the image is empty (shape (0, 5, 3))"),
    (Image.new("L", (0, 7)), "to_mnist: the image is empty (0x7 pixels)"),
    (np.array([["a", "b"], ["c", "d"]]), "to_mnist: expected an array of numbers, got dtype <U1"),
    (np.ones((9, 9), np.complex64), "to_mnist: expected an array of numbers, got dtype complex64"),
    ("nan", "to_mnist: the array holds NaN or infinite values"),
    ("inf", "to_mnist: the array holds NaN or infinite values"),
    ("rgb-nan", "to_mnist: the array holds NaN or infinite values"),
])
def test_arrays_that_are_not_pictures(image, message):
    """Before: NaN or inf pixels were read as ink or as blank paper ("looks blank"), and empty
    or non-numeric arrays gave NumPy's own error."""
    if isinstance(image, str):
        a = np.zeros((40, 40), np.float32)
        a[10:30, 18:22] = 1
        a[3, 3] = np.inf if image == "inf" else np.nan
        image = np.dstack([a] * 3) if image == "rgb-nan" else a
    with pytest.raises(ValueError) as err:
        to_mnist(image)
    assert str(err.value) == message


def test_predict_show_draws_every_image_mode(files, tmp_path, baseline):
    """`predict --show` drew the original with imshow, which takes no grey+alpha (LA) array:
    a traceback. Each mode Pillow reads gets its figure, and two images with one name get two."""
    seven = digit_seven(100)
    palette = seven.convert("P")
    palette.info["transparency"] = 255                             # the paper is see-through
    modes = {"la.png": seven.convert("LA"), "p.png": palette, "cmyk.jpg": seven.convert("CMYK"),
             "i16.png": seven.convert("I;16"), "one.png": seven.convert("1"), "f.tif": seven.convert("F"),
             "ycbcr.jpg": seven.convert("YCbCr")}
    (tmp_path / "again").mkdir()
    for name, im in modes.items():
        im.save(tmp_path / name)
    seven.save(tmp_path / "again" / "la.png")                      # same stem as ../la.png
    show = tmp_path / "show"
    paths = [tmp_path / name for name in modes] + [tmp_path / "again" / "la.png"]
    child = cli(baseline, "predict", files / "good.npz", *paths, "--show", show, code=0, seconds=30)
    assert "Traceback" not in child.err and child.err == "", child.err
    assert sorted(os.listdir(show)) == sorted([f"{os.path.splitext(n)[0]}-prediction.png" for n in modes]
                                              + ["la-2-prediction.png"])


def test_predict_gives_every_good_image_a_result_and_each_bad_one_a_line(files, tmp_path, baseline):
    digit_seven().save(tmp_path / "good.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    digit_seven(100).save(folder / "a.png")
    os.mkfifo(folder / "b.png")
    (folder / "c.png").write_text("not an image")
    (folder / "d.png").mkdir()
    png_header_only(tmp_path / "huge.png", 20000, 20000)
    child = cli(baseline, "predict", files / "good.npz", tmp_path / "good.png", folder, tmp_path / "huge.png")
    out = child.out.splitlines()
    assert [line.split(":")[0] for line in out] == [str(tmp_path / "good.png"), str(folder / "a.png")]
    assert all("top 3:" in line for line in out)
    err = child.err.splitlines()
    assert len(err) == 4, err
    assert err[0] == f"{folder / 'b.png'}: skipped: not a regular file (a folder, pipe or device)"
    assert err[1] == f"{folder / 'c.png'}: skipped: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)"
    assert err[2] == f"{folder / 'd.png'}: skipped: not a regular file (a folder, pipe or device)"
    assert err[3].startswith(f"{tmp_path / 'huge.png'}: skipped: cannot read this image (Image size "
                             "(400000000 pixels) exceeds limit")


# -- 3. wrong answers reported as success -------------------------------------------------
def test_nan_weights_refused_by_predict_and_evaluate(files, tmp_path, baseline):
    p = variant(files, "nan.npz", arrays=lambda a: a["param/dense_4/W"].__setitem__((0, 0), np.nan))
    digit_seven().save(tmp_path / "seven.png")
    for args in (("predict", p, tmp_path / "seven.png"), ("evaluate", p, "--dataset", "digits")):
        line = one_error_line(cli(baseline, *args))
        assert line == (f"tinycnn {args[0]}: error: {p}: param/dense_4/W holds 1 NaN or infinite values "
                        "(saved from a run that diverged?); the model cannot give meaningful answers")


def test_std_0_refused(files, baseline):
    p = variant(files, "std0.npz", meta=_set("preprocessing", {"mean": 0.1, "std": 0, "scale": 1 / 255}))
    line = one_error_line(cli(baseline, "summary", p))
    assert line.endswith("std0.npz: __meta__ field preprocessing.std must be > 0, got 0")
    model = small_model()
    model.preprocessing = {"mean": 0.1, "std": 0}
    with bounded(), pytest.raises(ValueError, match=r"preprocess: preprocessing\['std'\] must be a number > 0, got 0"):
        model.preprocess(np.zeros((1, 28, 28), np.uint8))


def test_infinite_outputs_are_an_error_not_an_answer(files, baseline):
    model = small_model()
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    model.layers[4].params["W"][:] = 3e38               # finite weights, infinite logits
    with bounded(), pytest.raises(FloatingPointError, match=r"predict_proba: the model's output is NaN or "
                                                           r"infinite for 3 of 3 inputs \(first: index 0\)"):
        model.predict_proba(x)
    with pytest.raises(FloatingPointError):
        model.predict(x)
    p = files / "inf-out.npz"
    model.save(p)
    line = one_error_line(cli(baseline, "evaluate", p, "--dataset", "digits"))
    assert line.startswith("tinycnn evaluate: error: predict_proba: the model's output is NaN or infinite")


def test_training_at_chance_level_exits_1_with_a_warning(tmp_path, baseline):
    """Adam at lr 1e6 ends at 10% without a NaN: the run saves its files, then says loudly that
    the model learned nothing and exits 1. (A training run: bounded at 60 s, not 2 s.)"""
    child = cli(baseline, "train", "--dataset", "digits", "--epochs", "1", "--arch", "convnet", "--lr", "1e6",
                "--no-plots", "--quiet", "--out", tmp_path / "run", seconds=60)
    assert ("WARNING: training failed: test accuracy 10.0% is at chance level (10% for guessing): the "
            "model learned nothing in 21 steps. Is --lr 1e+06 too high, or are there too few steps "
            "(--epochs, --batch-size)?") in child.err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["learned_nothing"] is True
    assert (tmp_path / "run" / "model.npz").exists()


# -- 4. CLI: one line, never a traceback ---------------------------------------------------
@pytest.fixture(scope="module")
def other_checkpoint(files):
    from tinycnn.io import save_checkpoint
    model = small_model()
    save_checkpoint(files / "other-ck.npz", model, Adam(model), {"epoch": 0})
    return files / "other-ck.npz"


@pytest.mark.parametrize("which, message", [
    ("truncated", r"error: --resume: .*cut-ck.npz: not a readable .npz model file"),
    ("model", r"error: --resume: .*good.npz: a saved model, not a checkpoint \(no training state\); "
              r"resume from the checkpoint.npz saved beside it \(see --help\)$"),
    ("other", r"error: --resume .*other-ck.npz: the checkpoint holds another architecture \(Conv2D, "
              r"ReLU, MaxPool2D, Flatten, Dense\), not lenet5 \(Conv2D, .*\) \(see --help\)$"),
])
def test_resume_with_the_wrong_file(files, other_checkpoint, tmp_path, baseline, which, message):
    """Found while checking the arguments, before the data is loaded: exit status 2."""
    import re
    path = {"model": files / "good.npz", "other": other_checkpoint, "truncated": files / "cut-ck.npz"}[which]
    if which == "truncated":
        path.write_bytes(other_checkpoint.read_bytes()[:3000])
    child = cli(baseline, "train", "--dataset", "digits", "--arch", "lenet5", "--epochs", "1", "--quiet",
                "--no-plots", "--out", tmp_path / "run", "--resume", path, code=2)
    assert re.search(message, one_error_line(child)), child.err


def test_resume_with_other_sizes_is_a_clear_error(other_checkpoint):
    """Same layer types, other sizes: fit says so instead of failing to broadcast."""
    model = tinycnn.Sequential([Conv2D(1, 3, 3), ReLU(), MaxPool2D(2), Flatten(), Dense(3 * 13 * 13, 10)])
    x, y = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, int)
    with bounded(), pytest.raises(ValueError, match=r"fit: checkpoint .*other-ck.npz holds a different "
                                                    r"architecture .* or other sizes"):
        tinycnn.fit(model, tinycnn.losses.SoftmaxCrossEntropy(), Adam(model), x, y, resume=other_checkpoint, log=None)


def test_output_folders_that_are_files(files, tmp_path, baseline):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    digit_seven().save(tmp_path / "seven.png")
    for args, option in ((("evaluate", files / "good.npz", "--dataset", "digits", "--out", taken), "--out"),
                         (("predict", files / "good.npz", tmp_path / "seven.png", "--show", taken), "--show")):
        line = one_error_line(cli(baseline, *args))
        assert line == f"tinycnn {args[0]}: error: {option} {taken}: exists and is not a folder"
    assert taken.read_text() == "mine"


def test_train_write_check_leaves_the_users_files_alone(tmp_path):
    """`train --out DIR` checks DIR is writable before training by writing a probe file. The
    probe was DIR/.write-test, opened without O_EXCL: a file of the user's by that name was
    overwritten and deleted, and a symlink by that name truncated the file it points to."""
    from tinycnn import run
    out, notes = tmp_path / "out", tmp_path / "notes.txt"
    out.mkdir()
    notes.write_text("mine")
    (out / ".write-test").symlink_to(notes)
    parser = run.build_parser()
    args = parser.parse_args(["--dataset", "digits", "--out", str(out)])
    run.check_args(args, parser)
    assert notes.read_text() == "mine" and (out / ".write-test").is_symlink()
    assert sorted(os.listdir(out)) == [".write-test"]                 # and the probe is gone


@pytest.mark.parametrize("args, message", [
    (("--steps", "0"), "--steps must be >= 1 and --batch-size in 1..8192, got 0 and 128"),
    (("--batch-size", "-3"), "--steps must be >= 1 and --batch-size in 1..8192, got 20 and -3"),
    (("--batch-size", "100000000"), "--steps must be >= 1 and --batch-size in 1..8192, got 20 and 100000000"),
])
def test_bench_bad_numbers(baseline, args, message):
    line = one_error_line(cli(baseline, "bench", "--arch", "convnet", *args))
    assert line == f"tinycnn bench: error: {message}"


@pytest.mark.parametrize("args, message", [
    (("--lr", "inf"), "--lr must be > 0 and a float32 number (1.2e-38 to 3.4e+38), got inf"),
    (("--lr", "nan"), "--lr must be > 0 and a float32 number (1.2e-38 to 3.4e+38), got nan"),
    (("--seed", "-1"), "--seed must be from 0 to 4294967295, got -1"),
])
def test_train_bad_numbers(tmp_path, baseline, args, message):
    child = cli(baseline, "train", *args, "--out", tmp_path / "o", code=2)
    assert one_error_line(child).endswith(f"error: {message} (see --help)")


def test_control_characters_in_class_names_are_escaped(files, tmp_path, baseline):
    p = variant(files, "ansi.npz", meta=_set("class_names", ["\x1b[2J\x1b[31mzero"] + [str(i) for i in range(1, 10)]))
    child = cli(baseline, "summary", p, code=0)
    assert "\x1b" not in child.out
    assert "classes: \\x1b[2J\\x1b[31mzero, 1, 2" in child.out
    model = load_model(p)
    model.layers[4].params["W"][:, 1:] = -1             # always answers class 0
    model.save(p)
    digit_seven().save(tmp_path / "seven.png")
    child = cli(baseline, "predict", p, tmp_path / "seven.png", code=0)
    assert "\x1b" not in child.out and ": \\x1b[2J\\x1b[31mzero (" in child.out
    child = cli(baseline, "summary", tmp_path / "evil\x1b[2J\nname.npz")          # in an error line too
    assert "evil\\x1b[2J\\nname.npz: no such model file" in one_error_line(child)


# -- 5. optimisers -------------------------------------------------------------------------
@pytest.mark.parametrize("make, message", [
    (lambda m: SGD(m, lr=float("nan")), "SGD: lr must be > 0 and finite, got nan"),
    (lambda m: SGD(m, lr=float("inf")), "SGD: lr must be > 0 and finite, got inf"),
    (lambda m: SGD(m, lr=-0.1), "SGD: lr must be > 0 and finite, got -0.1"),
    (lambda m: SGD(m, lr=0.1, momentum=5), r"SGD: momentum must be in \[0, 1\), got 5"),
    (lambda m: SGD(m, lr=0.1, momentum=1.0), r"SGD: momentum must be in \[0, 1\), got 1.0"),
    (lambda m: SGD(m, lr=0.1, momentum=-0.5), r"SGD: momentum must be in \[0, 1\), got -0.5"),
    (lambda m: SGD(m, lr=0.1, weight_decay=-1e-4), "SGD: weight_decay must be >= 0 and finite, got -0.0001"),
    (lambda m: Adam(m, lr=float("nan")), "Adam: lr must be > 0 and finite, got nan"),
    (lambda m: Adam(m, betas=(1.0, 0.999)), r"Adam: betas\[0\] must be in \[0, 1\), got 1.0"),
    (lambda m: Adam(m, betas=(0.9, float("nan"))), r"Adam: betas\[1\] must be in \[0, 1\), got nan"),
    (lambda m: Adam(m, betas=0.9), "Adam: betas must be a pair of numbers, got 0.9"),
    (lambda m: Adam(m, eps=0), "Adam: eps must be > 0 and finite, got 0"),
    (lambda m: Adam(m, weight_decay=float("inf")), "Adam: weight_decay must be >= 0 and finite, got inf"),
    (lambda m: AdamW(m, lr="fast"), "AdamW: lr must be > 0 and finite, got 'fast'"),
])
def test_optimiser_hyper_parameters_checked(make, message):
    with bounded(), pytest.raises(ValueError, match=f"^{message}$"):
        make(small_model())


# -- 6. empty batches ----------------------------------------------------------------------
def test_empty_batch_gives_empty_results():
    model = small_model()
    with bounded():
        proba = model.predict_proba(np.zeros((0, 1, 28, 28), np.float32))
        labels = model.predict(np.zeros((0, 1, 28, 28), np.float32))
        from_list = model.predict_proba([])
    assert proba.shape == (0, 10) and proba.dtype == np.float32
    assert labels.shape == (0,)
    assert from_list.shape == (0, 10)
    unbuilt = tinycnn.Sequential([Flatten(), Dense(4, 3)])
    assert unbuilt.predict_proba(np.zeros((0, 2, 2), np.float32)).shape == (0, 3)
    with pytest.raises(ValueError, match="an empty input of shape .0,. and no input_shape"):
        unbuilt.predict_proba([])


def test_report_worst_case():
    """Runs last in this file: prints the worst time and memory seen (for the notes)."""
    print(f"\nhostile corpus worst case: {WORST['seconds']:.2f} s ({WORST.get('slowest')}), "
          f"{WORST['megabytes']:.0f} MB over baseline ({WORST.get('largest')})")


def test_two_runs_started_in_one_second_get_two_folders(tmp_path, monkeypatch):
    """The default --out is runs/<date-time to the second>: two runs started together (a script
    launching two seeds) shared it, each overwriting the other's checkpoint and model."""
    from tinycnn import run
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run.time, "strftime", lambda fmt: "20260101-120000")
    parser = run.build_parser()
    outs = []
    for _ in range(3):
        args = parser.parse_args(["--dataset", "digits"])
        run.check_args(args, parser)
        outs.append(args.out)
    assert outs == [os.path.join("runs", "20260101-120000"), os.path.join("runs", "20260101-120000-2"),
                    os.path.join("runs", "20260101-120000-3")]
    assert sorted(os.listdir("runs")) == ["20260101-120000", "20260101-120000-2", "20260101-120000-3"]


@pytest.mark.parametrize("command", ["predict", "serve"])
def test_a_model_that_cannot_read_28x28_pictures_is_refused_up_front(tmp_path, baseline, command):
    """A model for 8x8 digits: predict failed with a Dense layer's shape error, and serve started
    and then answered every drawing with "internal error"."""
    m = tinycnn.Sequential([Conv2D(1, 2, 3), ReLU(), Flatten(), Dense(2 * 6 * 6, 10)], input_shape=(1, 8, 8), seed=0)
    p = m.save(tmp_path / "m8.npz")
    digit_seven().save(tmp_path / "seven.png")
    args = (tmp_path / "seven.png",) if command == "predict" else ("--port", "0")
    line = one_error_line(cli(baseline, command, p, *args))
    assert line == (f"tinycnn {command}: error: {p}: the model (inputs of shape (1, 8, 8)) cannot read the "
                    f"28x28 grey pictures (MNIST's) that {command} gives it")
