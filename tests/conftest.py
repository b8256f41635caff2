import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
# Tests compile in the foreground, in the test process: no second or background compiling
# process (tinycnn/warmup.py) competing with the suite; tests/test_warmup.py turns it on
# where it is what is tested.
os.environ.setdefault("TINYCNN_BACKGROUND_COMPILE", "0")

import tinycnn  # noqa: E402

# The real MNIST, next to the repository on development and CI machines; elsewhere,
# TINYCNN_TEST_MNIST=FOLDER (the four files) runs the tests that need it.
MNIST_DIR = Path(os.environ.get("TINYCNN_TEST_MNIST")
                 or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist")


@pytest.fixture(params=["numba", "numpy"])
def backend(request):
    """Run a test once on each kernel set, restoring the default afterwards."""
    previous = tinycnn.get_backend()
    tinycnn.set_backend(request.param)
    yield request.param
    tinycnn.set_backend(previous)


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR} (TINYCNN_TEST_MNIST=FOLDER points there)")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch, tmp_path):
    # Tests never touch the user's cache: point it at a temporary folder.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("TINYCNN_DATA_DIR", raising=False)
    monkeypatch.delenv("TINYCNN_MIRRORS", raising=False)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def numpy_backend():
    """Run a test on the NumPy reference kernels (no compilation), restoring the default."""
    previous = tinycnn.get_backend()
    tinycnn.set_backend("numpy")
    yield
    tinycnn.set_backend(previous)
