"""The kernels behind the layers, in three interchangeable sets with the same functions:

    loops       backend "loops": nested Python loops, one line per term of each formula
    reference   backend "numpy": plain NumPy, vectorised, written to be read next to the maths
    fast        backend "numba": the same results from Numba-jitted loops, laid out for speed

Layers call `current()` to get the set chosen by `tinycnn.set_backend` (default "numba").
A layer keeps the set it used in its forward cache, so its backward pass always runs on the
same one, even if the backend is switched in between. `using(module)` overrides the choice
for one block of code on one thread (tinycnn.warmup runs small inference batches on the
reference kernels that way while the fast ones compile).
"""
import contextlib
import threading

from ..backend import get_backend
from . import fast, loops, reference
from .reference import conv_output_size

__all__ = ["conv_output_size", "current", "fast", "loops", "reference", "using"]

_MODULES = {"numba": fast, "numpy": reference, "loops": loops}
_forced = threading.local()


def current():
    """The kernel module for the selected backend (or the one `using` set on this thread)."""
    module = getattr(_forced, "module", None)
    if module is not None:
        return module
    return _MODULES[get_backend()]


@contextlib.contextmanager
def using(module):
    """Within this block, on this thread, layers run on `module` (fast or reference)."""
    before = getattr(_forced, "module", None)
    _forced.module = module
    try:
        yield
    finally:
        _forced.module = before
