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
"""
import json
import os
import zipfile
import zlib

import numpy as np

from .fileutil import atomic_write
from .layers import LAYER_TYPES
from .model import Sequential

FORMAT_VERSION = 1


class ModelFormatError(ValueError):
    """A model file that cannot be loaded; the message names the file and the fault."""


def _json_array(obj):
    return np.array(json.dumps(obj))


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


def atomic_savez(path, arrays):
    """np.savez to a temporary file in the same folder, then rename over `path`."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def save_model(model, path):
    """Save `model` to `path` (.npz); returns the path."""
    return atomic_savez(path, _model_arrays(model))


def _read_npz(path):
    """All arrays of an .npz file, read with allow_pickle=False; ModelFormatError on any fault."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFormatError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):      # np.load would otherwise try to unpickle it
        raise ModelFormatError(f"{path}: not a readable .npz model file (not a zip archive; "
                               "truncated or another format)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, KeyError) as err:
        raise ModelFormatError(f"{path}: not a readable .npz model file (truncated or another "
                               f"format): {err}") from None
    except ValueError as err:      # e.g. an object array, which would need pickle
        raise ModelFormatError(f"{path}: refused to load: {err}") from None


def _meta(path, arrays, key="__meta__"):
    if key not in arrays:
        raise ModelFormatError(f"{path}: no {key} entry; this is not a tinycnn file")
    try:
        return json.loads(str(arrays[key]))
    except json.JSONDecodeError as err:
        raise ModelFormatError(f"{path}: {key} is not valid JSON ({err})") from None


def _build(path, arrays):
    meta = _meta(path, arrays)
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFormatError(f"{path}: format version {version!r} is newer than this tinycnn "
                               f"understands ({FORMAT_VERSION}); upgrade tinycnn")
    layers = []
    for i, spec in enumerate(meta.get("architecture") or []):
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in LAYER_TYPES:
            raise ModelFormatError(f"{path}: layer {i} has unknown type {kind!r}; known: "
                                   + ", ".join(sorted(LAYER_TYPES)))
        try:
            layers.append(LAYER_TYPES[kind](**spec.get("config", {})))
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"{path}: layer {i} ({kind}) has bad arguments: {err}") from None
    if not layers:
        raise ModelFormatError(f"{path}: the architecture lists no layers")
    model = Sequential(layers)
    expected = {}
    for name, layer in zip(model.names, model.layers):
        for kind, store in (("param", layer.params), ("state", layer.state)):
            for key, value in store.items():
                expected[f"{kind}/{name}/{key}"] = (store, key, value)
    stored = {k for k in arrays if k.startswith(("param/", "state/"))}
    missing, extra = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or extra:
        raise ModelFormatError(f"{path}: arrays do not match the architecture: missing "
                               f"{missing or 'none'}, unexpected {extra or 'none'}")
    for full, (store, key, value) in expected.items():
        array = arrays[full]
        if array.shape != value.shape or array.dtype.kind != "f":
            raise ModelFormatError(f"{path}: {full} has shape {array.shape} dtype {array.dtype}; "
                                   f"the architecture needs shape {value.shape} floats")
        store[key] = np.array(array, dtype=array.dtype)
    for layer in model.layers:           # gradients follow the parameters' dtype
        for key, p in layer.params.items():
            layer.grads[key] = np.zeros_like(p)
    if meta.get("input_shape"):
        try:
            model.build(meta["input_shape"])
        except ValueError as err:
            raise ModelFormatError(f"{path}: stored input shape does not fit: {err}") from None
    model.preprocessing = meta.get("preprocessing") or {}
    model.class_names = meta.get("class_names")
    return model


def load_model(path):
    """Rebuild a model saved with `save_model` / `model.save`. Raises ModelFormatError for a
    missing, damaged, newer-format or inconsistent file. A pretrained model's name ("mnist",
    see zoo.py) loads the model shipped with tinycnn, unless a file of that name exists."""
    from . import zoo
    if zoo.is_pretrained_name(path):
        path = zoo.pretrained_path(path)
    elif not os.path.exists(path):
        raise ModelFormatError(f"{os.fspath(path)}: no such model file (pretrained models by name: "
                               f"{', '.join(sorted(zoo.PRETRAINED))})")
    return _build(os.fspath(path), _read_npz(path))


def save_checkpoint(path, model, optimizer, train_state):
    """Model, optimiser state and the trainer's JSON-able state in one atomic .npz."""
    arrays = _model_arrays(model)
    opt = optimizer.state_dict()
    for key, value in opt.pop("buffers").items():
        arrays[f"optim/{key}"] = value
    arrays["__train__"] = _json_array(dict(train_state, optimizer=opt))
    return atomic_savez(path, arrays)


def load_checkpoint(path):
    """(model, optimizer_state_dict, train_state) from a checkpoint file."""
    path = os.fspath(path)
    arrays = _read_npz(path)
    model = _build(path, arrays)
    train_state = _meta(path, arrays, "__train__")
    opt = train_state.pop("optimizer")
    opt["buffers"] = {k[len("optim/"):]: v for k, v in arrays.items() if k.startswith("optim/")}
    return model, opt, train_state
