"""The IDX reader and writer: round trips, every named fault, and a fuzz loop."""
import gzip
import io
import struct
import tracemalloc

import numpy as np
import pytest

from tinycnn.datasets import IDXFormatError, read_idx, write_idx

DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 5), (0, 4)])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, shape, suffix):
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    a = (rng.integers(info.min, info.max, size=shape, endpoint=True) if info
         else rng.standard_normal(shape)).astype(dtype)
    path = write_idx(tmp_path / f"a.idx{suffix}", a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)
    with open(path, "rb") as f:                       # file objects too
        np.testing.assert_array_equal(read_idx(f), a)


def test_big_endian_on_disk_and_gzip_detected_by_content(tmp_path):
    path = write_idx(tmp_path / "a.idx", np.array([1, 258], dtype=np.int16))
    assert open(path, "rb").read() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 1, 2])
    gz_named_plain = tmp_path / "misleading.gz"
    gz_named_plain.write_bytes(open(path, "rb").read())
    plain_named = tmp_path / "no-suffix"
    plain_named.write_bytes(gzip.compress(open(path, "rb").read()))
    for p in (gz_named_plain, plain_named):
        np.testing.assert_array_equal(read_idx(p), [1, 258])


def header(code=0x08, dims=(2, 2), magic=b"\0\0"):
    return magic + bytes([code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize("data, message", [
    (header(magic=b"\1\0") + bytes(4), "bad magic number 0100"),
    (header(code=0x0A) + bytes(4), "unknown element type code 0x0A"),
    (b"\0\0\x08\0", "zero dimensions"),
    (header() + bytes(3), r"payload is shorter than the header says \(3 of 4 bytes"),
    (header() + bytes(5), "payload is longer than the header says"),
    (header()[:6], "file ends inside the dimension sizes"),
    (b"\0\0", "file ends inside the header"),
    (gzip.compress(header() + bytes(4))[:-10], "corrupt or truncated gzip stream"),
    (b"\x1f\x8b" + bytes(30), "corrupt or truncated gzip stream"),
    # Shapes NumPy cannot hold gave NumPy's own ValueError, naming neither the file nor the shape.
    (header(dims=(1,) * 65) + bytes(1), r"header declares 65 dimensions; NumPy arrays have at most 64"),
    (header(dims=(0, 2**32 - 1, 2**32 - 1)), r"header declares shape \(0, 4294967295, 4294967295\), "
                                             r"which NumPy cannot hold \(array is too big"),
])
def test_faults_are_named(tmp_path, data, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(data)
    with pytest.raises(IDXFormatError, match=message) as err:
        read_idx(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_huge_claim_fails_at_once_without_memory(tmp_path):
    path = tmp_path / "liar.idx"
    path.write_bytes(header(dims=(10 ** 4, 10 ** 4, 10 ** 4)) + bytes(4))   # claims 10^12 bytes
    tracemalloc.start()
    with pytest.raises(IDXFormatError, match=r"declares shape \(10000, 10000, 10000\) of uint8, "
                                             r"1,000,000,000,000 bytes, more than the limit max_bytes"):
        read_idx(path)
    with pytest.raises(IDXFormatError, match=r"shorter than the header says \(4 of 1000000000000"):
        read_idx(path, max_bytes=10 ** 13)        # allowed that big: the file's length refutes it
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2 ** 20
    gz = tmp_path / "liar.gz"
    gz.write_bytes(gzip.compress(header(code=0x0E, dims=(10 ** 6, 10 ** 6))))
    with pytest.raises(IDXFormatError, match="more than the limit"):
        read_idx(gz)


def test_write_refuses_unsupported_dtypes(tmp_path):
    with pytest.raises(ValueError, match="no IDX type code"):
        write_idx(tmp_path / "a", np.zeros(3, np.int64))
    assert not list(tmp_path.iterdir())                # nothing left behind


def test_fuzz_only_idx_errors():
    """Random truncations, byte flips and random headers: IDXFormatError or a valid array,
    never another exception."""
    rng = np.random.default_rng(1234)
    good = io.BytesIO()
    raw = header(0x0C, (3, 4)) + np.arange(12, dtype=">i4").tobytes()
    samples = [raw, gzip.compress(raw)]
    outcomes = {"ok": 0, "error": 0}
    for trial in range(3000):
        data = bytearray(samples[trial % 2])
        kind = trial % 3
        if kind == 0:
            data = data[:rng.integers(0, len(data))]
        elif kind == 1:
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(0, len(data))] = rng.integers(0, 256)
        else:
            ndim = int(rng.integers(0, 5))
            data = bytes([0, 0, int(rng.choice([8, 9, 11, 12, 13, 14, 255])), ndim]) + \
                rng.integers(0, 256, size=4 * ndim + int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
        try:
            read_idx(io.BytesIO(bytes(data)))
            outcomes["ok"] += 1
        except IDXFormatError:
            outcomes["error"] += 1
    assert outcomes["error"] > 1000 and outcomes["ok"] > 0
    del good
