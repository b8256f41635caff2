"""Saving and loading models as .npz files: no pickle, nothing executed on load.

A model file holds
    __meta__                 a JSON string: format version, architecture (each layer's type
                             and constructor arguments), input shape, preprocessing, class names
    param/<layer>/<name>     every parameter array
    state/<layer>/<name>     every state array (batchnorm running statistics)
A training checkpoint is a model file plus
    __train__                a JSON string: epoch, step, history, random-generator states, ...
    optim/<key>/<buffer>     the optimiser's arrays (momentum, Adam moments)
Files are written to a temporary name and renamed, so a crash never leaves a broken file.
Loading checks every size, name, dtype and shape against the architecture before it reads
an array (modelcheck.py), and refuses NaN or infinite weights.
"""
import json
import os

import numpy as np

from . import modelcheck
from .fileutil import atomic_write
from .layers import LAYER_TYPES, Dense
from .model import Sequential
from .modelcheck import ModelFormatError  # noqa: F401  (tinycnn.io.ModelFormatError)

FORMAT_VERSION = 1


def _json_array(obj):
    """obj as a JSON string in a 0-d array. NumPy numbers (a preprocessing mean computed with
    NumPy) are written as the plain numbers they are."""
    return np.array(json.dumps(obj, default=_plain_number))


def _plain_number(value):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    raise TypeError(f"{type(value).__name__} {value!r} cannot be saved (not a JSON value)")


def _output_shape(model):
    """The model's per-example output shape: from its input shape when it has one, else from
    its last Dense layer on (a Dense takes a fixed width, so the shapes after it are known).
    None when the layers do not tell (convolutions and no input shape) or do not fit one
    another (forward says so when it runs)."""
    try:
        if model.input_shape:
            return model.output_shapes(model.input_shape)[-1]
        last = max((i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)), default=None)
        if last is None:
            return None
        shape = (model.layers[last].in_features,)
        for layer in model.layers[last:]:
            shape = tuple(layer.output_shape(shape))
        return shape
    except ValueError:
        return None


def _class_names_fault(model, names):
    """Why `names` cannot label the model's outputs (predict would index past them), or None."""
    shape = None if names is None else _output_shape(model)
    if shape is None or shape == (len(names),):
        return None
    return f"class_names has {len(names)} names but the model has outputs of shape {shape}"


def _check_before_saving(model, path):
    """Refuse now what load_model would refuse later (the file written and the run over)."""
    fault = _class_names_fault(model, model.class_names)
    if fault:
        raise ValueError(f"{os.fspath(path)}: not saved: {fault}")


def _reads_back(path, checkpoint=False):
    """atomic_write's verify for a model file: the finished temporary file goes through
    every check load_model (or load_checkpoint) makes, before it replaces `path`. So a model
    that could not be loaded again (NaN weights, a class name of 500 characters, a stride
    of 2**64 set by hand) is refused with the reason, and a good file at `path` is kept."""
    def verify(tmp):
        try:
            meta, weights, _ = _read_checked(tmp, with_training_state=checkpoint)
            _build(tmp, meta, weights)
        except ModelFormatError as err:
            reason = str(err).removeprefix(f"{tmp}: ")
            raise ValueError(f"{os.fspath(path)}: not saved: it would not load again: {reason}") from None
    return verify


def _model_arrays(model):
    arrays = {}
    for name, layer in zip(model.names, model.layers):
        for key, value in layer.params.items():
            arrays[f"param/{name}/{key}"] = value
        for key, value in layer.state.items():
            arrays[f"state/{name}/{key}"] = value
    meta = {
        "format_version": FORMAT_VERSION,
        "architecture": [{"type": layer.name, "config": layer.config()} for layer in model.layers],
        "input_shape": list(model.input_shape) if model.input_shape else None,
        "preprocessing": model.preprocessing,
        "class_names": list(model.class_names) if model.class_names is not None else None,
    }
    arrays["__meta__"] = _json_array(meta)
    return arrays


def atomic_savez(path, arrays, verify=None):
    """np.savez to a temporary file in the same folder, then rename over `path` (after
    verify(temporary path), if given, accepts it)."""
    with atomic_write(path, verify) as f:
        np.savez(f, **arrays)
    return path


def save_model(model, path):
    """Save `model` to `path` (.npz); returns the path. Raises ValueError, leaving `path` as
    it was, for a model load_model would refuse."""
    _check_before_saving(model, path)
    return atomic_savez(path, _model_arrays(model), _reads_back(path))


def _known(name):
    """Entry names a model or checkpoint file may hold (see the module docstring)."""
    return name in ("__meta__", "__train__") or name.startswith(("param/", "state/", "optim/"))


def _read_checked(path, with_training_state=False):
    """(meta, weights, extras) of a model file, every bound checked before an array is read
    (see modelcheck.py). extras: the checkpoint's __train__ JSON and optim/ arrays when
    `with_training_state`; otherwise those entries are skipped unread."""
    path = os.fspath(path)
    if not os.path.isfile(path):      # a FIFO or device would block or never end: refused
        raise ModelFormatError(f"{path}: " + ("not a regular file" if os.path.exists(path)
                                              else "no such model file"))
    zf, entries = modelcheck.open_npz(path)
    with zf:
        meta = modelcheck.read_json(path, zf, entries, "__meta__")
        unknown = sorted(k for k in entries if not _known(k))
        if unknown:
            raise ModelFormatError(f"{path}: unexpected entries {unknown[:4]}; refused without "
                                   "reading them")
        modelcheck.check_meta(path, meta, FORMAT_VERSION, LAYER_TYPES)
        expected = modelcheck.expected_arrays(path, meta["architecture"])
        total = modelcheck.check_weights(path, zf, entries, expected)
        extras, names = {}, []
        if with_training_state:     # JSON allows NaN here: a history may hold inf val losses
            if "__train__" not in entries:     # model.npz given where checkpoint.npz is needed
                raise ModelFormatError(f"{path}: a saved model, not a checkpoint (no training "
                                       "state); resume from the checkpoint.npz saved beside it")
            extras["__train__"] = modelcheck.read_json(path, zf, entries, "__train__", allow_nan=True)
            names = [k for k in entries if k.startswith("optim/")]
            for name in names:      # momentum, Adam's two moments: at most 2 per weight
                _, dtype, nbytes = modelcheck.array_header(path, zf, name, entries[name])
                total += nbytes
                if dtype not in modelcheck.WEIGHT_DTYPES:
                    raise ModelFormatError(f"{path}: optimiser entry {name!r} is {dtype}, not floats")
            if total > 3 * modelcheck.MAX_MODEL_BYTES:
                raise ModelFormatError(f"{path}: weights and optimiser state total "
                                       f"{modelcheck.size_text(total)}, above three times "
                                       "tinycnn.modelcheck.MAX_MODEL_BYTES")
        weights = {}
        for name in list(expected) + names:
            array = modelcheck.read_array(path, zf, name, entries[name])
            modelcheck.check_finite(path, name, array)
            modelcheck.check_variance(path, name, array)
            (weights if name in expected else extras)[name] = array
    return meta, weights, extras


def _build(path, meta, weights):
    """A Sequential from checked metadata and weights (shapes already match the architecture)."""
    layers = []
    for i, spec in enumerate(meta["architecture"]):
        kind = spec["type"]
        try:
            layers.append(LAYER_TYPES[kind](**spec.get("config", {})))
        except (TypeError, ValueError, OverflowError) as err:
            raise ModelFormatError(f"{path}: layer {i} ({kind}) has bad arguments: {err}") from None
    model = Sequential(layers)
    for name, layer in zip(model.names, model.layers):
        for kind, store in (("param", layer.params), ("state", layer.state)):
            for key in store:            # C order, whatever the npy header's fortran_order said
                store[key] = np.ascontiguousarray(weights[f"{kind}/{name}/{key}"])
        for key, p in layer.params.items():      # gradients follow the parameters' dtype
            layer.grads[key] = np.zeros_like(p)
    if meta.get("input_shape"):
        try:
            model.build(meta["input_shape"])
        except ValueError as err:
            raise ModelFormatError(f"{path}: stored input shape does not fit: {err}") from None
        modelcheck.check_activations(path, model, model.input_shape)
    fault = _class_names_fault(model, meta.get("class_names"))
    if fault:
        raise ModelFormatError(f"{path}: __meta__ field {fault}")
    model.preprocessing = meta.get("preprocessing") or {}
    model.class_names = meta.get("class_names")
    return model


def load_model(path):
    """Rebuild a model saved with `save_model` / `model.save`. Raises ModelFormatError for a
    missing, damaged, newer-format, inconsistent or oversized file (see modelcheck.py).
    A pretrained model's name ("mnist", see zoo.py) loads the model shipped with tinycnn,
    unless a file of that name exists."""
    from . import zoo
    if zoo.is_pretrained_name(path):
        path = zoo.pretrained_path(path)
    elif not os.path.exists(path):
        raise ModelFormatError(f"{os.fspath(path)}: no such model file (pretrained models by name: "
                               f"{', '.join(sorted(zoo.PRETRAINED))})")
    meta, weights, _ = _read_checked(path)
    return _build(os.fspath(path), meta, weights)


def save_checkpoint(path, model, optimizer, train_state):
    """Model, optimiser state and the trainer's JSON-able state in one atomic .npz."""
    _check_before_saving(model, path)
    arrays = _model_arrays(model)
    opt = optimizer.state_dict()
    for key, value in opt.pop("buffers").items():
        arrays[f"optim/{key}"] = value
    arrays["__train__"] = _json_array(dict(train_state, optimizer=opt))
    return atomic_savez(path, arrays, _reads_back(path, checkpoint=True))


def load_checkpoint(path):
    """(model, optimizer_state_dict, train_state) from a checkpoint file."""
    path = os.fspath(path)
    meta, weights, extras = _read_checked(path, with_training_state=True)
    model = _build(path, meta, weights)
    train_state = extras.pop("__train__")
    opt = train_state.pop("optimizer", None)
    if not isinstance(opt, dict):
        raise ModelFormatError(f"{path}: __train__ field optimizer must be an object, got {opt!r}")
    opt["buffers"] = {k[len("optim/"):]: v for k, v in extras.items()}
    return model, opt, train_state
