"""MNIST and its relatives: where their files are, how to check them, how to load them.

Each dataset is four IDX files. A file is found in the first of these folders that has it,
plain or gzipped under its usual name:
    1. the data_dir argument
    2. $TINYCNN_DATA_DIR
    3. the cache, $XDG_CACHE_HOME/tinycnn/<dataset> (default ~/.cache/tinycnn/<dataset>)
Missing files are downloaded (download=True) into the first of those that is set. Every
file is verified before use: its bytes must match the official .gz SHA-256, or its
decompressed content the official raw SHA-256 (recompressed copies pass the second test).

Only the cache is tinycnn's: a damaged file there is downloaded again, while a damaged file
in data_dir or $TINYCNN_DATA_DIR is the user's and is never modified or deleted; it is an
error naming the file and what to do.

Sizes are checked before memory is committed. The registry knows each file's shape, hence
its exact decompressed size, so verification streams the file and stops at the first sign
that it is not the official one: a file larger than that size plus gzip's framing, an IDX
header that declares another shape, or content that runs past the size (a 1 MB gzip that
unpacks to 1 GiB is refused after its first megabyte). Downloads are capped the same way.
"""
import contextlib
import gzip
import io
import os
import sys
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..fileutil import describe_non_file
from .download import DownloadError, download_file, sha256_of
from .idx import GZIP_MAGIC, MAX_BYTES, TYPES, IDXFormatError, header_bytes, read_idx, read_into


class ChecksumError(ValueError):
    """A dataset file whose content is not the official one. `reason` says what is wrong,
    without the file's name."""

    def __init__(self, path, reason=None, advice="", belongs_to=None):
        if reason is None:               # ChecksumError("whole message"), as before
            path, reason = None, path
        super().__init__((f"{path}: " if path else "") + reason + (f". {advice}" if advice else ""))
        self.path, self.reason = path, reason
        self.belongs_to = belongs_to     # the dataset the file is from, when it is another's


class DataDirError(ValueError):
    """A data folder or file that cannot be used as one: a file where a folder should be, a
    folder or a symlink loop where a file should be, a folder one cannot write to."""


@dataclass(frozen=True)
class FileInfo:
    filename: str                 # the official name, e.g. "train-images-idx3-ubyte.gz"
    gz_sha256: str                # SHA-256 of the official .gz download
    raw_sha256: str | None = None  # SHA-256 of the decompressed content, when known
    shape: tuple | None = None    # the uint8 array it holds, e.g. (60000, 28, 28), when known

    @property
    def stem(self):               # the name without .gz
        return self.filename[:-3] if self.filename.endswith(".gz") else self.filename

    @property
    def raw_size(self):
        """Bytes of the decompressed IDX file: exact when the shape is known, else read_idx's
        general limit."""
        if self.shape is None:
            return MAX_BYTES
        return len(header_bytes(self.shape)) + int(np.prod(self.shape, dtype=object))

    @property
    def max_file_size(self):
        """The most any good copy can take on disk or on the wire: its content (a raw copy)
        plus gzip's framing, generously (deflate adds 5 bytes per 64 KiB block at worst)."""
        return self.raw_size + self.raw_size // 1024 + 65536


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    files: dict                   # "train_images", "train_labels", "test_images", "test_labels"
    mirrors: tuple                # base URLs, tried in order
    class_names: tuple = field(default_factory=lambda: tuple(str(d) for d in range(10)))

    @property
    def env_mirrors(self):
        """The environment variable that overrides this dataset's mirrors."""
        return "TINYCNN_" + self.name.upper().replace("-", "_") + "_MIRRORS"

    def files_of(self, splits):
        """{key: FileInfo} of the files `splits` ("train", "test" or both) need."""
        if isinstance(splits, str) or not set(splits) <= {"train", "test"} or not splits:
            raise ValueError(f"splits must name 'train', 'test' or both, got {splits!r}")
        return {key: info for key, info in self.files.items() if key.split("_")[0] in splits}


def _mnist_like(prefix=""):
    return [f"{prefix}{part}-ubyte.gz" for part in
            ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")]


def _files(names, gz, raw, shapes=((60000, 28, 28), (60000,), (10000, 28, 28), (10000,))):
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    return {k: FileInfo(n, g, r, shape) for k, n, g, r, shape in zip(keys, names, gz, raw, shapes)}


DATASETS = {
    "mnist": DatasetInfo("mnist", _files(_mnist_like(), [
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"], [
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"]), mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/")),
    "fashion-mnist": DatasetInfo("fashion-mnist", _files(_mnist_like(), [
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"], [
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"]), mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot")),
    # KMNIST publishes only the .gz digests, so its files are verified in that form only.
    "kmnist": DatasetInfo("kmnist", _files(_mnist_like(), [
        "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
        "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
        "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
        "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c"], [None] * 4),
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")),
}


def cache_dir(name):
    """The download cache of one dataset: $XDG_CACHE_HOME/tinycnn/<name>."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tinycnn", name)


def search_dirs(name, data_dir=None):
    """The folders searched, in order (see the module docstring). Raises DataDirError when
    data_dir or $TINYCNN_DATA_DIR names something that exists but is not a folder."""
    given = [("data_dir", data_dir), ("TINYCNN_DATA_DIR", os.environ.get("TINYCNN_DATA_DIR"))]
    for label, folder in given:
        if folder and os.path.lexists(folder) and not os.path.isdir(folder):
            what = describe_non_file(folder) or "a file"
            raise DataDirError(f"{label}={os.fspath(folder)} is {what}, not a folder: point it at "
                               "the folder that holds the dataset's files")
    dirs = [data_dir, os.environ.get("TINYCNN_DATA_DIR"), cache_dir(name)]
    return [os.fspath(d) for d in dirs if d]


# What a user can do about a bad file in their own folder; tinycnn never touches it.
_USER_FILE_ADVICE = ("tinycnn does not modify or delete your files: replace it with a good copy, "
                     "or delete it yourself to download a fresh one (tinycnn download), or point "
                     "--data-dir / data_dir= / TINYCNN_DATA_DIR elsewhere")
_CACHE_FILE_ADVICE = "It is in tinycnn's cache: load with download=True (or run tinycnn download) to replace it"


def check_file(path, info):
    """Verify one file and return its raw (decompressed) bytes.

    Streams the file, so memory stays bounded by the official content's size whatever the
    file holds. Raises ChecksumError naming the file and what is wrong: too large for the
    official file, an IDX header of another shape, content past the official size, an
    unreadable gzip, or a digest mismatch (expected and actual digests)."""
    size = os.path.getsize(path)
    if size > info.max_file_size:
        raise ChecksumError(path, f"not the official {info.filename}: {size:,} bytes on disk, more "
                                  f"than any copy of it can be ({info.max_file_size:,})")
    file_digest = sha256_of(path)
    try:
        raw = _content(path, info)
    except (OSError, EOFError, zlib.error) as err:        # gzip.BadGzipFile is an OSError
        raw, content = None, f" (and it is not a readable gzip: {err})"
    if raw is not None and file_digest == info.gz_sha256:
        return raw
    if raw is not None:
        raw_digest = sha256_of(raw)
        if raw_digest == info.raw_sha256:
            return raw
        content = f" (content {raw_digest})" if raw_digest != file_digest else ""   # it was gzipped
    if other := _whose(file_digest, raw_digest if raw is not None else None):
        raise ChecksumError(path, f"this is {other[0]}'s {other[1]} file, not the one asked for",
                            belongs_to=other[0])
    expected = f".gz SHA-256 {info.gz_sha256}"
    if info.raw_sha256:
        expected += f" or content SHA-256 {info.raw_sha256}"
    raise ChecksumError(path, f"checksum mismatch: expected {expected}; got file SHA-256 "
                              f"{file_digest}{content}")


def _whose(file_digest, raw_digest):
    """(dataset, which file) of the registered file with these digests, or None: a folder of
    MNIST's files given for Fashion-MNIST's has the same names and the wrong bytes."""
    for name, dataset in DATASETS.items():
        for key, info in dataset.files.items():
            if file_digest == info.gz_sha256 or (raw_digest is not None and raw_digest == info.raw_sha256):
                return name, key.replace("_", " ")
    return None


def _content(path, info):
    """The decompressed bytes of `path` (as they are when it is not gzip), read 1 MiB at a
    time and never more than the official content's size plus one byte. A gzip error
    propagates (OSError, EOFError or zlib.error)."""
    limit = info.raw_size
    # Deflate expands at most ~1032-fold, so a small file needs no buffer the size of the
    # limit (which is read_idx's 256 MiB when the shape is not registered).
    capacity = min(limit, 1032 * os.path.getsize(path) + 4096) + 1
    buffer = np.empty(capacity, np.uint8)         # takes RAM only as data arrives
    view = memoryview(buffer)
    with open(path, "rb") as f:
        is_gzip = f.read(2) == GZIP_MAGIC
        f.seek(0)
        stream = gzip.GzipFile(fileobj=f, mode="rb") if is_gzip else f
        got = read_into(stream, view[:4096])      # the header first: a wrong shape is refused now
        if info.shape is not None and got >= 4:
            header = header_bytes(info.shape)
            if bytes(view[:min(got, len(header))]) != header[:got]:
                raise ChecksumError(path, f"not the official {info.filename}: its IDX header "
                                          f"{_describe_header(bytes(view[:got]))}, the official "
                                          f"file holds uint8 {info.shape}")
        got += read_into(stream, view[got:])
    if got > limit:
        raise ChecksumError(path, f"not the official {info.filename}: its content runs past "
                                  f"{limit:,} bytes, the official file's size; refused there")
    return buffer[:got].tobytes()


def _describe_header(head):
    """'declares int32 (5, 7)' or 'is not IDX (starts 1f8b...)' for the first bytes of a file."""
    if len(head) >= 4 and head[:2] == b"\0\0" and head[2] in TYPES and len(head) >= 4 + 4 * head[3]:
        ndim = head[3]
        dims = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
        return f"declares {TYPES[head[2]].name} {dims}"
    return f"is not IDX (starts {head[:8].hex()})"


def _find(info, dirs):
    """The first of the official name or its stem in `dirs` that exists. Something there that
    is not a regular file (a folder, a FIFO, a symlink loop) is an error, never skipped: a
    download would otherwise try to replace it."""
    for folder in dirs:
        for candidate in (info.filename, info.stem):
            path = os.path.join(folder, candidate)
            kind = describe_non_file(path)
            if kind is not None:
                raise DataDirError(f"{path}: is {kind}, where the dataset file {info.filename} "
                                   "should be; move it away or point data_dir elsewhere")
            if os.path.isfile(path):
                return path
    return None


def _searched(dataset, dirs):
    """A line on a folder given (data_dir, $TINYCNN_DATA_DIR) that the files were looked for
    in and not found: it does not exist, or it holds a folder named after the dataset (the
    parent given by mistake). Else ''."""
    given = [d for d in dirs if d != cache_dir(dataset.name)]
    for folder in given:
        inside = os.path.join(folder, dataset.name)
        if not os.path.isdir(folder):
            return f"{folder} (given as the data folder) does not exist, so nothing was found there.\n"
        if os.path.isdir(inside):
            return f"{folder} has no {dataset.name} files, but holds a folder {inside}: did you mean that one?\n"
    return ""


def _in_cache(path, dataset):
    """Whether `path` lies in tinycnn's own download cache, the only folder it may repair."""
    return os.path.realpath(os.path.dirname(os.path.abspath(path))) == \
        os.path.realpath(cache_dir(dataset.name))


def _mirrors(dataset, mirrors):
    if mirrors is None:
        env = os.environ.get(dataset.env_mirrors, "")
        mirrors = env.replace(",", " ").split() or dataset.mirrors
    elif isinstance(mirrors, str):       # one mirror, not one per letter
        mirrors = [mirrors]
    return [m if m.endswith("/") else m + "/" for m in mirrors]


def fetch(name, data_dir=None, download=True, mirrors=None, progress=None, splits=("train", "test"),
          **download_options):
    """Make sure every file of dataset `name` (of the splits named) is present and verified;
    return {key: raw IDX bytes}. `download_options` go to download_file (timeout, retries,
    deadline, ...)."""
    dataset = get_info(name)
    wanted = dataset.files_of(splits)
    dirs = search_dirs(dataset.name, data_dir)
    target = dirs[0]
    searched = _searched(dataset, dirs)      # (now: a download would create the folder)
    out = {}
    for key, info in wanted.items():
        path = _find(info, dirs)
        if path is not None:
            try:
                out[key] = _check_readable(path, info)
                continue
            except ChecksumError as err:
                # Only the cache is ours to repair; anywhere else the file is the user's.
                if not (download and _in_cache(path, dataset)):
                    advice = _CACHE_FILE_ADVICE if _in_cache(path, dataset) else _USER_FILE_ADVICE
                    if err.belongs_to:           # a good file, of another dataset: keep it
                        advice = (f"This folder holds {err.belongs_to}'s files: point --data-dir / "
                                  f"data_dir= / TINYCNN_DATA_DIR at a folder of {dataset.name}'s")
                    raise ChecksumError(path, err.reason, advice, err.belongs_to) from None
                print(f"tinycnn: {err}\ntinycnn: downloading a fresh copy.", file=sys.stderr)
                with contextlib.suppress(FileNotFoundError):   # another download removed it first
                    os.remove(path)
        if not download:
            raise FileNotFoundError(
                f"{dataset.name}: {info.filename} not found in " + ", ".join(dirs)
                + " and download=False. Put the files in one of those folders (data_dir=... or "
                  "TINYCNN_DATA_DIR), or allow the download.")
        dest = os.path.join(target, info.filename)

        def verify(tmp, info=info):
            try:
                check_file(tmp, info)
            except ChecksumError as err:
                return err.reason
            return None
        urls = [base + info.filename for base in _mirrors(dataset, mirrors)]
        options = {"max_bytes": info.max_file_size, **download_options}   # the caller may widen it
        try:
            download_file(urls, dest, verify=verify, progress=progress, **options)
        except DownloadError as err:
            raise DownloadError(
                f"{dataset.name}: {err}\n{searched}To use files you already have, put the "
                f"{'four ' if len(wanted) == 4 else ''}files "
                f"({', '.join(i.filename for i in wanted.values())}, gzipped or not) in "
                f"a folder and pass data_dir=FOLDER (--data-dir FOLDER on the command line) or "
                f"set TINYCNN_DATA_DIR=FOLDER; or give "
                f"other mirrors with mirrors=[...] or {dataset.env_mirrors}.") from None
        except OSError as err:          # the folder cannot be made or written (requests' errors are caught inside)
            raise DataDirError(f"{target}: cannot download into this folder ({err.strerror or err}); "
                               "pass data_dir= / --data-dir, or set XDG_CACHE_HOME, to download "
                               "elsewhere") from None
        out[key] = check_file(dest, info)
    return out


def _check_readable(path, info):
    """check_file, with a file one may not read reported as a DataDirError naming it."""
    try:
        return check_file(path, info)
    except PermissionError as err:
        raise DataDirError(f"{path}: cannot read it ({err.strerror})") from None


def get_info(name):
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, "
                         "digits") from None


def load_dataset(name, data_dir=None, download=True, mirrors=None, progress=None, splits=("train", "test"),
                 **download_options):
    """Load a registered dataset as ((x_train, y_train), (x_test, y_test)), uint8 arrays:
    images (N, H, W), labels (N,). "digits" loads scikit-learn's bundled 8x8 digits.
    splits=("test",) reads (and needs) only the test files; the training pair is then
    (None, None)."""
    if name == "digits":
        return load_digits()
    raw = fetch(name, data_dir, download, mirrors, progress, splits, **download_options)
    arrays = {}
    for key, data in raw.items():
        try:
            arrays[key] = read_idx(io.BytesIO(data), max_bytes=len(data))
        except IDXFormatError as err:
            raise IDXFormatError(f"{name} {key}: {err}") from None
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXFormatError(f"{name} {split}: images {images.shape} and labels "
                                 f"{labels.shape} do not belong together")
    return ((arrays.get("train_images"), arrays.get("train_labels")),
            (arrays.get("test_images"), arrays.get("test_labels")))


def load_mnist(data_dir=None, download=True, mirrors=None, progress=None, **download_options):
    """MNIST: 60,000 training and 10,000 test digits, 28x28 uint8, labels 0-9."""
    return load_dataset("mnist", data_dir, download, mirrors, progress, **download_options)


def load_fashion_mnist(data_dir=None, download=True, mirrors=None, progress=None,
                       **download_options):
    """Fashion-MNIST: 28x28 pictures of 10 kinds of clothing, same sizes as MNIST."""
    return load_dataset("fashion-mnist", data_dir, download, mirrors, progress, **download_options)


def load_kmnist(data_dir=None, download=True, mirrors=None, progress=None, **download_options):
    """Kuzushiji-MNIST: 28x28 cursive Japanese characters, 10 classes, same sizes as MNIST."""
    return load_dataset("kmnist", data_dir, download, mirrors, progress, **download_options)


def load_digits(image_size=8, test_fraction=0.2, seed=0):
    """scikit-learn's bundled 8x8 digits (1,797 images) as MNIST-like uint8 arrays, split
    into train and test (stratified, seeded). Needs no network and no files.

    image_size=28 enlarges each image (bilinear) and centres it in a 28x28 frame with the
    same 4-pixel margin MNIST has, so models built for MNIST take it as it is.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)      # 0-16 -> 0-255
    if image_size != 8:
        from scipy.ndimage import zoom
        inner = image_size - 8 if image_size >= 16 else image_size     # MNIST: 20 in 28
        big = zoom(images.astype(np.float32), (1, inner / 8, inner / 8), order=1)
        images = np.zeros((len(images), image_size, image_size), np.uint8)
        off = (image_size - big.shape[1]) // 2
        images[:, off:off + big.shape[1], off:off + big.shape[2]] = np.clip(np.round(big), 0, 255)
    labels = bunch.target.astype(np.uint8)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=test_fraction,
                                              random_state=seed, stratify=labels)
    return (x_tr, y_tr), (x_te, y_te)
