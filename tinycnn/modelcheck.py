"""Checking a model file before trusting it, so that a broken or hostile file costs
milliseconds and no memory.

An .npz file is a zip archive of .npy files. Everything that decides how much memory a load
takes can be read before any array is:
    the zip directory        the name and declared (uncompressed) size of every entry
    each entry's npy header  a few hundred bytes at its start: dtype and shape
    the architecture JSON    the shape every layer's arrays must have
`open_npz` reads the first, `array_header` the second (checked against the first),
`check_meta` the types of the JSON's fields and `expected_arrays` the third, without building
a layer (building one allocates its weights). io.py reads arrays only when all of these
agree and the total is under MAX_MODEL_BYTES; anything it does not expect is refused by name,
unread. Nothing is ever unpickled.
"""
import io
import json
import math
import os
import struct
import zipfile

import numpy as np

from .layers.base import is_real, is_whole, pair

# Limits. tinycnn's largest bundled model (bnnet) holds 0.8 MB of weights; 64 MiB is 80 times
# that, and bounds what any file can make a load allocate (raise it here for a bigger model).
MAX_MODEL_BYTES = 64 * 2**20
MAX_ENTRIES = 4096                 # entries in one file (bnnet has 23)
# Bytes of the zip directory: zipfile parses it whole when the file is opened (5.7 million
# entries took 31 s and 2.2 GB), so its declared size is checked first. 256 bytes an entry
# (a saved model's take 65).
MAX_DIRECTORY_BYTES = 256 * MAX_ENTRIES
MAX_JSON_BYTES = 4 * 2**20         # __meta__ / __train__ text (4 bytes a character; bnnet: 6 KB)
MAX_JSON_DEPTH = 32                # nesting of lists and objects (a saved model uses 5)
MAX_LAYERS = 1000                  # bnnet has 17
WEIGHT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Compression methods zipfile reads (np.savez stores, np.savez_compressed deflates).
ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
PREPROCESSING_KEYS = ("mean", "std", "scale")     # what __meta__'s preprocessing may hold
MAX_NPY_HEADER = 10_000            # bytes of an npy header (NumPy's own limit; a saved model's: 118)
# Values one example may need in any layer's output, padded input or im2col matrix. Weights
# are bounded by MAX_MODEL_BYTES, but a Conv2D's padding is not a weight: a 3 KB file with
# padding 8000 asks 2 x 16026 x 16026 floats of one 28x28 picture (and ~8.6 GB for its
# columns). The bundled models need at most 38,400 (fastnet); 2**24 is 437 times that. A
# pooling layer's windows count too: the NumPy kernels stack its kh*kw taps of every output
# ((kh*kw, C, OH, OW) values; convnet's largest: 21,632), and the fast kernels visit as many.
MAX_ACTIVATION = 2**24
# Work one example may need in all of a model's convolutions (multiply-adds, F*C*kh*kw*OH*OW
# each) and in all its pooling layers (window taps, kh*kw*C*OH*OW each), so that a small file
# cannot make one picture cost minutes: a 4 KB model with Conv2D(padding=1000) and a
# 1000x1000 stride-1 pooling asked 1.06e12 taps (19 min). Two bounds, as a tap costs 10-50
# times a multiply-add (no BLAS; the NumPy kernels stack the taps). The bundled models need
# at most 4,663,296 multiply-adds (bnnet; 2**30 is 230 times that) and 28,032 taps (convnet;
# 2**26 is 2,394 times that). At the bounds one picture takes ~0.4 s for the multiply-adds
# and ~0.4 s for the taps on the NumPy kernels (fast kernels: 0.06 s and 0.15 s; 2 cores).
MAX_MULTIPLY_ADDS = 2**30
MAX_WINDOW_TAPS = 2**26
# Positions in one pooling window (kh*kw): the NumPy kernels make a view per position, in
# Python (~2 us and ~200 bytes each: a 2048x2048 window took 9.5 s per call). 2**16, a 256x256
# window, takes ~0.15 s; the bundled models' windows are 2x2.
MAX_POOL_WINDOW = 2**16
# Values one array of an inference slice may hold (model.predict_proba, train.evaluate): a
# slice of n examples holds n times an example's largest array (MAX_ACTIVATION allows 2**24,
# 16 GiB for 256 examples), so slices shrink until n * that fits 2**26 values (256 MiB in
# float32). The bundled models' 38,400 fit 1,747 examples: their slices of 256 are unchanged.
MAX_SLICE_VALUES = 2**26


class ModelFormatError(ValueError):
    """A model file that cannot be loaded; the message names the file and the fault."""


def size_text(nbytes):
    """1234567 -> "1.2 MB"."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1000


def open_npz(path):
    """(open ZipFile, {entry name without .npy: ZipInfo}); refuses what is not an .npz of
    arrays: not a zip, too many entries, duplicate names, members that are not .npy."""
    size = os.path.getsize(path)       # zipfile's directory costs memory in proportion to it
    if size > 4 * MAX_MODEL_BYTES:
        raise ModelFormatError(f"{path}: {size_text(size)} is too large for a model file (weights, "
                               f"optimiser state and JSON fit in {size_text(4 * MAX_MODEL_BYTES)})")
    count, directory = _directory_size(path)
    if count > MAX_ENTRIES:
        raise ModelFormatError(f"{path}: {count:,} entries; a model file holds at most {MAX_ENTRIES:,}")
    if directory > MAX_DIRECTORY_BYTES:
        raise ModelFormatError(f"{path}: its zip directory is {size_text(directory)}; a model "
                               f"file's is at most {size_text(MAX_DIRECTORY_BYTES)}")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ModelFormatError(f"{path}: not a readable .npz model file (truncated or another "
                               f"format): {err}") from None
    infos = zf.infolist()
    entries = {}
    try:
        if len(infos) > MAX_ENTRIES:      # the end record's count was a lie (its size was not)
            raise ModelFormatError(f"{path}: {len(infos):,} entries; a model file holds at most "
                                   f"{MAX_ENTRIES:,}")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise ModelFormatError(f"{path}: unexpected entry {name!r} (not an array); "
                                       "refused without reading it")
            if name[:-4] in entries:
                raise ModelFormatError(f"{path}: entry {name!r} appears twice")
            if info.flag_bits & 0x1:          # zipfile would raise RuntimeError (password needed)
                raise ModelFormatError(f"{path}: entry {name!r} is encrypted; refused without reading it")
            if info.compress_type not in ZIP_METHODS:       # zipfile: NotImplementedError
                raise ModelFormatError(f"{path}: entry {name!r} is compressed with method "
                                       f"{info.compress_type}; refused without reading it")
            entries[name[:-4]] = info
    except ModelFormatError:
        zf.close()
        raise
    return zf, entries


def _directory_size(path):
    """(entries, bytes) of the zip directory as the file's end record declares them (the ZIP64
    one when present), read from its last 64 KB without parsing the directory. zipfile's own
    reader of that record (private, but in every Python 3), so that what is checked is what
    ZipFile will parse. Not a zip at all: ModelFormatError (np.load would try to unpickle it).
    (A Python whose zipfile lacks that reader gets (0, 0): the count is then checked after
    parsing, as before.)"""
    reader = getattr(zipfile, "_EndRecData", None)
    try:
        with open(path, "rb") as f:
            end = reader(f) if reader is not None else ({} if zipfile.is_zipfile(f) else None)
    except (OSError, zipfile.BadZipFile):          # BadZipFile: an archive split over disks
        end = None
    if end is None:
        raise ModelFormatError(f"{path}: not a readable .npz model file (not a zip archive; "
                               "truncated or another format)")
    if reader is None:
        return 0, 0
    return end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]


def array_header(path, zf, name, info):
    """(shape, dtype, nbytes) of one entry from its npy header, reading no data; the header
    must agree with the size the zip directory declares for the entry."""
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read, length_format = {(1, 0): (np.lib.format.read_array_header_1_0, "<H"),
                                   (2, 0): (np.lib.format.read_array_header_2_0, "<I")}.get(version, (None, ""))
            if read is None:
                raise ValueError(f"npy format version {version} is not supported")
            # The header states its length; NumPy reads that many bytes (up to 4 GiB in version
            # 2) before checking it against its limit, so the length is checked here first.
            length_bytes = f.read(struct.calcsize(length_format))
            (length,) = struct.unpack(length_format, length_bytes)
            if length > MAX_NPY_HEADER:
                raise ValueError(f"it declares a header of {length:,} bytes; at most {MAX_NPY_HEADER:,}")
            header = io.BytesIO(length_bytes + f.read(length))
            shape, _, dtype = read(header)
            header_bytes = 8 + header.tell()               # magic and version, then the header
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, SyntaxError, struct.error) as err:
        raise ModelFormatError(f"{path}: entry {name!r} has no valid npy header ({err})") from None
    if dtype.hasobject:
        raise ModelFormatError(f"{path}: refused to load: entry {name!r} holds Python objects, "
                               "which would need pickle")
    nbytes = math.prod(shape) * dtype.itemsize        # Python ints: a 10^12 shape cannot overflow
    if header_bytes + nbytes != info.file_size:
        raise ModelFormatError(f"{path}: entry {name!r} declares shape {shape} {dtype} "
                               f"({size_text(nbytes)}) but holds {size_text(info.file_size - header_bytes)}")
    return shape, dtype, nbytes


def read_array(path, zf, name, info):
    """Read one entry whose header has been checked (allow_pickle=False all the same)."""
    try:
        with zf.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (ValueError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise ModelFormatError(f"{path}: entry {name!r} cannot be read (truncated or damaged): "
                               f"{err}") from None


def _depth(value):
    """How deeply lists and dicts nest in `value` (iterative: no recursion to exhaust)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path, zf, entries, key, allow_nan=False):
    """The JSON value stored as a 0-d string array under `key`, size- and depth-checked."""
    if key not in entries:
        raise ModelFormatError(f"{path}: no {key} entry; this is not a tinycnn file")
    shape, dtype, nbytes = array_header(path, zf, key, entries[key])
    if dtype.kind != "U" or shape != ():
        raise ModelFormatError(f"{path}: {key} must be a JSON string, got shape {shape} {dtype}")
    if nbytes > MAX_JSON_BYTES:
        raise ModelFormatError(f"{path}: {key} is {size_text(nbytes)}; at most {size_text(MAX_JSON_BYTES)}")
    text = str(read_array(path, zf, key, entries[key]))
    try:
        value = json.loads(text, **({} if allow_nan else {"parse_constant": _refuse_constant}))
    except RecursionError:
        raise ModelFormatError(f"{path}: {key} is nested too deeply (more than "
                               f"{MAX_JSON_DEPTH} levels)") from None
    except ValueError as err:        # JSONDecodeError, NaN/Infinity, a 5000-digit integer
        raise ModelFormatError(f"{path}: {key} is not valid JSON ({err})") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise ModelFormatError(f"{path}: {key} is nested too deeply (more than "
                               f"{MAX_JSON_DEPTH} levels)")
    if not isinstance(value, dict):
        raise ModelFormatError(f"{path}: {key} must be a JSON object, got {type(value).__name__}")
    return value


def _is_number(value):
    return is_real(value) and math.isfinite(value)


def check_meta(path, meta, format_version, layer_types):
    """Type-check every field of __meta__ (see io.py for the layout); ModelFormatError names
    the first field that is wrong."""
    def bad(field, why):
        return ModelFormatError(f"{path}: __meta__ field {field} {why}")

    version = meta.get("format_version")
    if not is_whole(version) or version < 1:
        raise bad("format_version", f"must be a positive integer, got {version!r}")
    if version > format_version:
        raise ModelFormatError(f"{path}: format version {version!r} is newer than this tinycnn "
                               f"understands ({format_version}); upgrade tinycnn")
    architecture = meta.get("architecture")
    if not isinstance(architecture, list) or not architecture:
        raise ModelFormatError(f"{path}: the architecture lists no layers" if architecture == []
                               else bad("architecture", "must be a list of layers"))
    if len(architecture) > MAX_LAYERS:
        raise bad("architecture", f"lists {len(architecture):,} layers; at most {MAX_LAYERS:,}")
    for i, spec in enumerate(architecture):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if not isinstance(kind, str) or kind not in layer_types:
            raise ModelFormatError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                                   + ", ".join(sorted(layer_types))
                                   + (f" (a layer class of your own: register it first, "
                                      f"tinycnn.layers.LAYER_TYPES[{kind!r}] = {kind})"
                                      if isinstance(kind, str) and kind.isidentifier() else ""))
        if not isinstance(spec.get("config", {}), dict):
            raise bad(f"architecture[{i}].config", "must be an object")
    shape = meta.get("input_shape")
    if shape is not None and (not isinstance(shape, list) or not 1 <= len(shape) <= 3
                              or not all(is_whole(s) and 1 <= s <= 2**24 for s in shape)):
        raise bad("input_shape", f"must be a list of 1 to 3 integers in 1..{2**24}, got {shape!r}")
    prep = meta.get("preprocessing")
    if prep is not None:
        if not isinstance(prep, dict):
            raise bad("preprocessing", f"must be an object, got {prep!r}")
        # Only the keys tinycnn writes (Sequential.preprocess reads mean and std; the main job
        # records scale): any other would be printed by `tinycnn summary` and mean nothing.
        # (repr escapes control characters: the key may be an escape sequence for the terminal)
        if unknown := sorted(set(prep) - set(PREPROCESSING_KEYS)):
            raise bad("preprocessing", f"has an unknown key {unknown[0][:60]!r}; known: "
                      f"{', '.join(PREPROCESSING_KEYS)}")
        f32 = np.finfo(np.float32)           # model.preprocess computes in float32
        for key in PREPROCESSING_KEYS:
            if key in prep and not _is_number(prep[key]):
                raise bad(f"preprocessing.{key}", f"must be a finite number, got {prep[key]!r}")
            if key in prep and abs(prep[key]) > float(f32.max):       # float32(1e300) is inf
                raise bad(f"preprocessing.{key}", f"is beyond float32's range (|x| <= {f32.max:.1e}), "
                          f"got {prep[key]!r}")
        if ("mean" in prep) != ("std" in prep):
            raise bad("preprocessing", "needs both mean and std, or neither")
        if "std" in prep and not prep["std"] > 0:
            raise bad("preprocessing.std", f"must be > 0, got {prep['std']!r}")
        if "std" in prep and prep["std"] < float(f32.smallest_normal):   # float32(1e-300) is 0
            raise bad("preprocessing.std", f"must be at least {f32.smallest_normal:.1e} (float32's "
                      f"smallest normal number), got {prep['std']!r}")
    names = meta.get("class_names")
    if names is not None and (not isinstance(names, list) or not names
                              or not all(isinstance(n, str) and len(n) <= 200 for n in names)):
        raise bad("class_names", "must be a list of strings (at most 200 characters each)")


def _positive(config, key, where):
    value = config.get(key)
    if not is_whole(value) or value < 1:
        raise ModelFormatError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _shapes(kind, config, where):
    """The arrays a layer of this type and config holds ({"param/W": shape, ...}), worked out
    from the config alone. tests/test_hostile_files.py holds this equal to every layer type."""
    if kind == "Dense":
        d, m = _positive(config, "in_features", where), _positive(config, "out_features", where)
        return {"param/W": (d, m), **({"param/b": (m,)} if config.get("bias", True) else {})}
    if kind == "Conv2D":
        c, f = _positive(config, "in_channels", where), _positive(config, "out_channels", where)
        try:
            kh, kw = pair(config.get("kernel_size"), "kernel_size")
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"{where}: {err}") from None
        if kh < 1 or kw < 1:
            raise ModelFormatError(f"{where}: kernel_size must be >= 1, got {(kh, kw)}")
        return {"param/W": (f, c, kh, kw), **({"param/b": (f,)} if config.get("bias", True) else {})}
    if kind in ("BatchNorm1D", "BatchNorm2D"):
        n = _positive(config, "num_features" if kind == "BatchNorm1D" else "num_channels", where)
        return {f"{store}/{key}": (n,) for store, key in (("param", "gamma"), ("param", "beta"),
                                                           ("state", "running_mean"), ("state", "running_var"))}
    return {}


def expected_arrays(path, architecture):
    """{"param/<layer>/<name>" or "state/...": shape} that a checked architecture needs, with
    the layer names Sequential gives (type in lower case, underscore, index)."""
    out = {}
    for i, spec in enumerate(architecture):
        kind = spec["type"]
        layer = f"{kind.lower()}_{i}"
        for key, shape in _shapes(kind, spec.get("config", {}), f"{path}: layer {i} ({kind})").items():
            store, name = key.split("/")
            out[f"{store}/{layer}/{name}"] = shape
    return out


def check_weights(path, zf, entries, expected):
    """Headers of the weight entries against `expected` (names, shapes, one float dtype, total
    size), before any is read: the error names the layer's array and what is wrong."""
    stored = {k for k in entries if k.startswith(("param/", "state/"))}
    missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or extra:
        raise ModelFormatError(f"{path}: arrays do not match the architecture: missing "
                               f"{missing or 'none'}, unexpected {extra or 'none'}")
    total, dtypes = 0, set()
    for name, want in expected.items():
        shape, dtype, nbytes = array_header(path, zf, name, entries[name])
        if shape == tuple(want) and dtype.newbyteorder("=") in WEIGHT_DTYPES and dtype not in WEIGHT_DTYPES:
            raise ModelFormatError(f"{path}: {name} holds {dtype.newbyteorder('=')} in the other byte "
                                   f"order ({dtype.str}); tinycnn reads the machine's own ({np.dtype(dtype.name).str}): "
                                   "convert it with array.astype(array.dtype.newbyteorder('='))")
        if shape != tuple(want) or dtype not in WEIGHT_DTYPES:
            raise ModelFormatError(f"{path}: {name} has shape {shape} dtype {dtype}; the "
                                   f"architecture needs shape {tuple(want)} floats (float32 or float64)")
        total += nbytes
        dtypes.add(dtype)
    if len(dtypes) > 1:
        raise ModelFormatError(f"{path}: the weights mix dtypes ({', '.join(sorted(map(str, dtypes)))}); "
                               "a model holds one float dtype")
    if total > MAX_MODEL_BYTES:
        raise ModelFormatError(f"{path}: the weights total {size_text(total)}, above the limit of "
                               f"{size_text(MAX_MODEL_BYTES)} (tinycnn.modelcheck.MAX_MODEL_BYTES)")
    return total


def _layer_needs(model, input_shape):
    """Yield (layer name, layer, {what: dims}, work, unit) for every layer on the way from
    `input_shape`: the arrays it makes per example, in the order it makes them (a
    convolution's padded input and columns, a pooling layer's stacked windows, its output),
    and its work per example (a convolution's multiply-adds, a pooling layer's window taps;
    0 for the others). Shapes only: nothing is allocated."""
    from .layers import Conv2D
    from .layers.pooling import _Pool2D
    shape = tuple(input_shape)
    for name, layer, out in zip(model.names, model.layers, model.output_shapes(shape)):
        arrays, work, unit = {}, 0, None
        if isinstance(layer, Conv2D):
            (ph, pw), (kh, kw) = layer.padding, layer.kernel_size
            arrays["padded input"] = (shape[0], shape[1] + 2 * ph, shape[2] + 2 * pw)
            arrays["columns"] = (shape[0] * kh * kw, out[1] * out[2])
            work, unit = out[0] * math.prod(arrays["columns"]), "multiply-adds"   # C*kh*kw per output
        elif isinstance(layer, _Pool2D):
            arrays["pooling windows"] = (math.prod(layer.kernel_size), *out)
            work, unit = math.prod(arrays["pooling windows"]), "window taps"
        arrays["output"] = out
        yield name, layer, arrays, work, unit
        shape = out


def check_activations(path, model, input_shape):
    """Refuse a model that would need more than MAX_ACTIVATION values per example anywhere on
    its way from `input_shape` (per example, e.g. (1, 28, 28)): in a layer's output, in a
    convolution's padded input or column matrix, or in a pooling layer's windows; a pooling
    window of more than MAX_POOL_WINDOW positions; or more than MAX_MULTIPLY_ADDS
    multiply-adds (all the convolutions) or MAX_WINDOW_TAPS window taps (all the pooling
    layers) per example. Shapes only: nothing is allocated. Layers must fit one another
    (model.output_shapes) before this is called."""
    given = f"for one input of shape {tuple(input_shape)}"
    limits = {"multiply-adds": (MAX_MULTIPLY_ADDS, "MAX_MULTIPLY_ADDS"),
              "window taps": (MAX_WINDOW_TAPS, "MAX_WINDOW_TAPS")}
    totals = dict.fromkeys(limits, 0)
    for name, layer, arrays, work, unit in _layer_needs(model, input_shape):
        for what, dims in arrays.items():
            if math.prod(dims) > MAX_ACTIVATION:
                raise ModelFormatError(
                    f"{path}: layer {name} would need {what} of shape {dims} "
                    f"({math.prod(dims):,} values) {given}; "
                    f"at most {MAX_ACTIVATION:,} (tinycnn.modelcheck.MAX_ACTIVATION)")
        if unit == "window taps" and math.prod(layer.kernel_size) > MAX_POOL_WINDOW:
            raise ModelFormatError(
                f"{path}: layer {name} has a pooling window of {layer.kernel_size[0]}x"
                f"{layer.kernel_size[1]} ({math.prod(layer.kernel_size):,} positions); at most "
                f"{MAX_POOL_WINDOW:,} (tinycnn.modelcheck.MAX_POOL_WINDOW)")
        if unit is None:
            continue
        totals[unit] += work
        (limit, limit_name), total = limits[unit], totals[unit]
        if total > limit:
            before = f" ({total:,} with the layers before it)" if total > work else ""
            raise ModelFormatError(
                f"{path}: layer {name} would need {work:,} {unit}{before} {given}; at most "
                f"{limit:,} in all (tinycnn.modelcheck.{limit_name}; raise it before loading a model you trust)")


def examples_per_slice(model, input_shape):
    """How many examples of per-example shape `input_shape` one inference pass may take so
    that none of its arrays holds more than MAX_SLICE_VALUES values (at least 1)."""
    largest = max(math.prod(dims) for _, _, arrays, _, _ in _layer_needs(model, input_shape)
                  for dims in arrays.values())
    return max(1, MAX_SLICE_VALUES // max(largest, 1))


def check_finite(path, name, array):
    bad = array.size - np.count_nonzero(np.isfinite(array))
    if bad:
        raise ModelFormatError(f"{path}: {name} holds {bad:,} NaN or infinite values (saved from "
                               "a run that diverged?); the model cannot give meaningful answers")


def check_variance(path, name, array):
    """A batch-norm layer's running variance: no negative values (1 / sqrt(var + eps) would be
    NaN in every prediction). Other arrays pass."""
    if name.endswith("/running_var") and (negative := np.count_nonzero(array < 0)):
        raise ModelFormatError(f"{path}: {name} holds {negative:,} negative values; a variance "
                               "cannot be negative")
