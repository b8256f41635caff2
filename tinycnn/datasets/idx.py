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

from ..fileutil import atomic_write, describe_non_file

TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
         0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
CODES = {dt.newbyteorder("="): code for code, dt in TYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
MAX_DIMS = 64 if int(np.__version__.split(".")[0]) >= 2 else 32    # NumPy's limit on dimensions
MAX_BYTES = 1 << 28     # read_idx's default payload limit: 256 MiB (MNIST's largest file is 47 MB)


class IDXFormatError(ValueError):
    """A file that is not valid IDX; the message names the file and the fault."""


def _open(source):
    """(binary stream, its name, whether we must close it). Unwraps gzip by content."""
    if isinstance(source, (str, os.PathLike)):
        stream, name, owned = _open_path(source), os.fspath(source), True
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


def header_bytes(shape, dtype=np.uint8):
    """The IDX header of an array of this shape and dtype: magic, type code, ndim, sizes."""
    code = CODES[np.dtype(dtype).newbyteorder("=")]
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def read_into(stream, buffer):
    """Fill `buffer` (a writable byte memoryview) from `stream` in 1 MiB steps, stopping at
    the end of the stream; return the number of bytes read. Memory grows only as real data
    arrives: an np.empty buffer is not backed by RAM until written, and each step
    decompresses at most 1 MiB."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled:filled + _CHUNK])
        if not n:
            break
        filled += n
    return filled


def _open_path(path):
    """Open a file for reading, refusing what is not a regular file before open() can hang
    on a FIFO or fail obscurely on a folder or a symlink loop."""
    kind = describe_non_file(path)
    if kind is not None:
        raise IDXFormatError(f"{os.fspath(path)}: is {kind}, not an IDX file")
    return open(path, "rb")


def read_idx(source, max_bytes=MAX_BYTES):
    """Read an IDX file (path or binary file object, plain or gzip) into a native-endian array.

    Raises IDXFormatError naming the file and the fault. Sizes are checked before memory is
    committed: a header declaring more than `max_bytes` of payload (default 256 MiB; MNIST's
    largest file holds 47 MB) is refused at once, a plain file's declared size is checked
    against its length on disk, and a gzip's payload is decompressed 1 MiB at a time into a
    buffer that takes RAM only as data arrives, never past what the header declares. So a
    tiny file that claims 10^12 elements, or a 1 MB gzip that unpacks to 1 GiB, fails at
    once with bounded memory.
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
        if ndim > MAX_DIMS:
            raise IDXFormatError(f"{name}: header declares {ndim} dimensions; NumPy arrays have at "
                                 f"most {MAX_DIMS}")
        shape = struct.unpack(f">{ndim}I", _read_exactly(stream, 4 * ndim, name, "dimension sizes"))
        dtype = TYPES[code]
        expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if expected > max_bytes:
            raise IDXFormatError(f"{name}: header declares shape {shape} of {dtype.name}, "
                                 f"{expected:,} bytes, more than the limit max_bytes={max_bytes:,} "
                                 "(pass a larger max_bytes to read_idx if the file really is "
                                 "that big)")
        on_disk = _plain_length(stream, owned)
        if on_disk is not None and on_disk != 4 + 4 * ndim + expected:
            _wrong_length(name, on_disk - 4 - 4 * ndim, expected, shape)
        payload = np.empty(expected, np.uint8)
        got = read_into(stream, memoryview(payload))
        if got < expected:
            _wrong_length(name, got, expected, shape)
        if stream.read(1):
            _wrong_length(name, expected + 1, expected, shape)
    except (OSError, EOFError, zlib.error) as err:   # gzip.BadGzipFile is an OSError
        raise IDXFormatError(f"{name}: corrupt or truncated gzip stream ({err})") from None
    finally:
        stream.close() if owned is None else owned.close()
    try:            # a zero-size shape passes the byte limit, but (0, 2**32-1, 2**32-1) is too big
        array = payload.view(dtype).reshape(shape)
    except ValueError as err:
        raise IDXFormatError(f"{name}: header declares shape {shape}, which NumPy cannot hold "
                             f"({err})") from None
    if not dtype.isnative:
        array.byteswap(inplace=True)     # the bytes now hold native-order numbers; no copy
    return array.view(dtype.newbyteorder("="))


def _plain_length(stream, opened_file):
    """The length on disk of an uncompressed file read_idx opened itself, else None (gzip,
    or a stream the caller gave, whose position we do not know)."""
    if isinstance(stream, gzip.GzipFile) or opened_file is None:
        return None
    return os.fstat(opened_file.fileno()).st_size


def _wrong_length(name, got, expected, shape):
    if got < expected:
        raise IDXFormatError(f"{name}: payload is shorter than the header says "
                             f"({got} of {expected} bytes for shape {shape})")
    raise IDXFormatError(f"{name}: payload is longer than the header says ({expected} "
                         f"bytes for shape {shape}, then more)")


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
    header = header_bytes(array.shape, native)
    payload = np.ascontiguousarray(array, dtype=TYPES[CODES[native]]).tobytes()
    with atomic_write(path) as raw:
        out = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.endswith(".gz") else raw
        out.write(header)
        out.write(payload)
        if out is not raw:
            out.close()
    return path
