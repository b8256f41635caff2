"""Saving and loading: bit-identical round trips and every way a file can be wrong."""
import json
import os
import zipfile

import numpy as np
import pytest

import tinycnn
from tinycnn import ModelFormatError, load_model
from tinycnn.io import atomic_savez
from tinycnn.layers import BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU


def bn_model():
    model = tinycnn.Sequential([Conv2D(1, 4, 3, padding=1), BatchNorm2D(4), ReLU(), MaxPool2D(2),
                                Flatten(), Dropout(0.2), Dense(64, 8), BatchNorm1D(8), Dense(8, 3)],
                               input_shape=(1, 8, 8), seed=1)
    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    for _ in range(3):
        model.forward(x, training=True)          # moves the running statistics
    model.preprocessing = {"mean": 0.13, "std": 0.31, "scale": 1 / 255}
    model.class_names = ["a", "b", "c"]
    return model, x


def test_round_trip_is_bit_identical(tmp_path):
    model, x = bn_model()
    path = model.save(tmp_path / "m.npz")
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.layers[1].state["running_var"].tolist() == model.layers[1].state["running_var"].tolist()
    assert not np.allclose(model.layers[1].state["running_var"], 1)      # really trained stats
    assert loaded.preprocessing == model.preprocessing and loaded.class_names == ["a", "b", "c"]
    assert loaded.input_shape == (1, 8, 8)
    assert [repr(l) for l in loaded.layers] == [repr(l) for l in model.layers]
    with np.load(path, allow_pickle=False) as data:       # plain arrays, nothing pickled
        assert all(data[k].dtype != object for k in data.files)


def test_save_is_atomic(tmp_path, monkeypatch):
    model, _ = bn_model()
    path = tmp_path / "m.npz"
    model.save(path)
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]


def rewrite(path, out, meta_change=None, arrays_change=None):
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays["__meta__"]))
    if meta_change:
        meta_change(meta)
    arrays["__meta__"] = np.array(json.dumps(meta))
    if arrays_change:
        arrays_change(arrays)
    atomic_savez(out, arrays)
    return out


@pytest.fixture
def saved(tmp_path):
    model, _ = bn_model()
    return model.save(tmp_path / "good.npz"), tmp_path


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="nope.npz: no such model file"):
        load_model(tmp_path / "nope.npz")


def test_not_an_npz(tmp_path):
    p = tmp_path / "text.npz"
    p.write_text("hello")
    with pytest.raises(ModelFormatError, match="text.npz: not a readable .npz"):
        load_model(p)


def test_truncated(saved):
    path, tmp = saved
    data = open(path, "rb").read()
    cut = tmp / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="cut.npz"):
        load_model(cut)


def test_newer_format(saved):
    path, tmp = saved
    out = rewrite(path, tmp / "new.npz", lambda m: m.update(format_version=99))
    with pytest.raises(ModelFormatError, match="format version 99 is newer"):
        load_model(out)


def test_unknown_layer(saved):
    path, tmp = saved
    out = rewrite(path, tmp / "unk.npz", lambda m: m["architecture"][2].update(type="Evil"))
    with pytest.raises(ModelFormatError, match="layer 2 has unknown type 'Evil'"):
        load_model(out)


def test_arrays_do_not_match(saved):
    path, tmp = saved
    out = rewrite(path, tmp / "shape.npz", arrays_change=lambda a: a.update(
        {"param/dense_6/W": np.zeros((64, 9), np.float32)}))
    with pytest.raises(ModelFormatError, match=r"param/dense_6/W has shape \(64, 9\).*needs shape \(64, 8\)"):
        load_model(out)
    out = rewrite(path, tmp / "gone.npz", arrays_change=lambda a: a.pop("state/batchnorm2d_1/running_mean"))
    with pytest.raises(ModelFormatError, match=r"missing \['state/batchnorm2d_1/running_mean'\]"):
        load_model(out)


def test_pickled_arrays_are_refused(saved):
    path, tmp = saved
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["param/conv2d_0/W"] = np.array([{"a": 1}], dtype=object)
    bad = tmp / "pickle.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ModelFormatError, match="pickle.npz: refused to load"):
        load_model(bad)


def test_not_a_tinycnn_file(tmp_path):
    p = tmp_path / "other.npz"
    np.savez(p, a=np.zeros(3))
    with pytest.raises(ModelFormatError, match="no __meta__ entry"):
        load_model(p)
    assert issubclass(ModelFormatError, ValueError)
    assert zipfile.is_zipfile(p)
