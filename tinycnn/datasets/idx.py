"""The IDX file format of MNIST and its relatives.

Layout (all integers big-endian):
    bytes 0-1   zero
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions d (>= 1)
    then d      uint32 sizes, then the elements in C order.
Files may be gzip-compressed; that is detected from the content (the gzip magic bytes),
not from the file name.
"""
import gzip
import io
import os
import struct
import zlib

import numpy as np

from ..fileutil import atomic_write

TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
         0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CODES = {dt.newbyteorder("="): code for code, dt in TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


class IDXFormatError(ValueError):
    """A file that is not valid IDX; the message names the file and the fault."""


def _open(source):
    """(binary stream, its name, whether we must close it). Unwraps gzip by content."""
    if isinstance(source, (str, os.PathLike)):
        stream, name, owned = open(source, "rb"), os.fspath(source), True
    else:
        stream, name, owned = source, getattr(source, "name", "<stream>"), False
    head = stream.read(2)
    rest = io.BufferedReader(_Prepend(head, stream)) if head else io.BytesIO(b"")
    if head == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=rest, mode="rb"), name, (stream if owned else None)
    return rest, name, (stream if owned else None)


class _Prepend(io.RawIOBase):
    """A stream that yields `head` and then the rest of `stream` (lets us sniff magic bytes
    from streams that cannot seek)."""

    def __init__(self, head, stream):
        self.head, self.stream = head, stream

    def readable(self):
        return True

    def readinto(self, buffer):
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _read_exactly(stream, n, name, what):
    data = stream.read(n)
    if len(data) != n:
        raise IDXFormatError(f"{name}: file ends inside the {what} ({len(data)} of {n} bytes)")
    return data


def read_idx(source):
    """Read an IDX file (path or binary file object, plain or gzip) into a native-endian array.

    Raises IDXFormatError naming the file and the fault. The header is checked before any
    large allocation: the payload is read in chunks and never beyond what the header says,
    so a tiny file that claims 10^12 elements fails at once.
    """
    stream, name, owned = _open(source)
    try:
        header = _read_exactly(stream, 4, name, "header")
        if header[0] != 0 or header[1] != 0:
            raise IDXFormatError(f"{name}: bad magic number {header[:2].hex()} (IDX files start "
                                 "with two zero bytes)")
        code, ndim = header[2], header[3]
        if code not in TYPES:
            raise IDXFormatError(f"{name}: unknown element type code 0x{code:02X} (known: "
                                 + ", ".join(f"0x{c:02X}" for c in TYPES) + ")")
        if ndim == 0:
            raise IDXFormatError(f"{name}: header declares zero dimensions")
        shape = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, name, "dimension sizes"))
        dtype = TYPES[code]
        expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
        payload = bytearray()
        while len(payload) < expected:               # grows only as real data arrives
            chunk = stream.read(min(_CHUNK, expected - len(payload)))
            if not chunk:
                raise IDXFormatError(f"{name}: payload is shorter than the header says "
                                     f"({len(payload)} of {expected} bytes for shape {shape})")
            payload += chunk
        if stream.read(1):
            raise IDXFormatError(f"{name}: payload is longer than the header says ({expected} "
                                 f"bytes for shape {shape}, then more)")
    except (OSError, EOFError, zlib.error) as err:   # gzip.BadGzipFile is an OSError
        if isinstance(err, FileNotFoundError):
            raise
        raise IDXFormatError(f"{name}: corrupt or truncated gzip stream ({err})") from None
    finally:
        stream.close() if owned is None else owned.close()
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array):
    """Write `array` as an IDX file (gzip-compressed when path ends in .gz); returns path.

    The file is written under a temporary name and renamed into place, so a crash never
    leaves a half-written file under `path`.
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in CODES:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code (supported: "
                         + ", ".join(str(t) for t in CODES) + ")")
    if not 1 <= array.ndim <= 255 or any(s >= 2 ** 32 for s in array.shape):
        raise ValueError(f"write_idx: shape {array.shape} cannot be stored in IDX "
                         "(1 to 255 dimensions, each < 2**32)")
    path = os.fspath(path)
    header = bytes([0, 0, CODES[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = np.ascontiguousarray(array, dtype=TYPES[CODES[native]]).tobytes()
    with atomic_write(path) as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.endswith(".gz") else raw
        out.write(header)
        out.write(payload)
        if out is not raw:
            out.close()
    return path
