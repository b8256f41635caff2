"""benchmarks/bench_train.py compares each model with a PyTorch twin; a twin with another
layer, shape, bias or dropout rate would make the comparison wrong without failing.
Each twin gets tinycnn's weights and must give tinycnn's outputs (eval mode, float32 noise),
and the same dropout rates and batch normalisation settings."""
import sys
from pathlib import Path

import numpy as np
import pytest

import tinycnn

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bench_train import TORCH_TWINS, copy_weights, torch_model  # noqa: E402


@pytest.mark.parametrize("arch", TORCH_TWINS)
def test_twin_computes_what_tinycnn_computes(arch):
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    try:
        model = tinycnn.models.ARCHITECTURES[arch](seed=3)
        for layer in model.layers:            # non-trivial BN statistics, so eps and order matter
            if "running_var" in layer.state:
                layer.state["running_mean"][:] = np.linspace(-0.5, 0.5, layer.num_features)
                layer.state["running_var"][:] = np.linspace(0.5, 2.0, layer.num_features)
        twin = torch_model(torch, arch).eval()
        copy_weights(model, twin)
        x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
        ours = model.forward(x, training=False)
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x)).numpy()
    finally:
        tinycnn.set_backend(previous)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)
    assert [l.p for l in model.layers if l.name == "Dropout"] == \
        [m.p for m in twin if isinstance(m, torch.nn.Dropout)]


def test_unknown_twin_is_refused():
    with pytest.raises(ValueError, match="no PyTorch twin for 'convnet-bn'; there are: convnet"):
        torch_model(torch, "convnet-bn")
