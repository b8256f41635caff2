"""Which kernels the library runs on: the fast Numba ones or the readable NumPy ones.

Both sets compute the same thing (tests/test_kernels.py holds them equal). The fast set is
the default; the reference set is there to be read, and to check the fast one against.

    tinycnn.set_backend("numpy")   # run everything on the reference kernels
    TINYCNN_BACKEND=numpy python examples/train_mnist.py
"""
import os

BACKENDS = ("numba", "numpy")

_current = os.environ.get("TINYCNN_BACKEND", "numba").strip().lower() or "numba"
if _current not in BACKENDS:
    raise ValueError(
        f"TINYCNN_BACKEND={_current!r} is not a backend; choose one of {', '.join(BACKENDS)}")


def set_backend(name):
    """Select the kernel set used by every layer: "numba" (fast) or "numpy" (reference)."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _current = name


def get_backend():
    """The name of the kernel set in use."""
    return _current
