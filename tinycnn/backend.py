"""Which kernels the library runs on: three sets of the same functions (tinycnn/kernels/).

    "numba"   fast/: Numba-jitted, laid out for speed (the default)
    "numpy"   reference.py: vectorised NumPy, to be read next to the maths
    "loops"   loops.py: plain Python loops straight from each formula; slow, for a
              handful of small images (a learner's debugger, not training)

All three compute the same thing (tests/test_kernels.py and tests/test_loops.py hold them
equal). On "numpy" and "loops" no layers are fused (teaching mode, see
tinycnn/layers/fused.py): every layer runs its own forward and backward pass.

    tinycnn.set_backend("numpy")   # run everything on the reference kernels
    TINYCNN_BACKEND=numpy python examples/train_mnist.py
"""
from .environment import BACKENDS, backend

_current = backend()               # TINYCNN_BACKEND, checked (environment.py)


def set_backend(name):
    """Select the kernel set used by every layer: "numba" (fast), "numpy" (reference) or
    "loops" (from the definition)."""
    global _current
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    _current = name


def get_backend():
    """The name of the kernel set in use."""
    return _current
