"""The kernels behind the layers, in three interchangeable sets with the same functions:

    loops       backend "loops": nested Python loops, one line per term of each formula
    reference   backend "numpy": plain NumPy, vectorised, written to be read next to the maths
    fast        backend "numba": the same results from Numba-jitted loops, laid out for speed

Layers call `current()` to get the set chosen by `tinycnn.set_backend` (default "numba").
A layer keeps the set it used in its forward cache, so its backward pass always runs on the
same one, even if the backend is switched in between.
"""
from ..backend import get_backend
from . import fast, loops, reference
from .reference import conv_output_size

__all__ = ["conv_output_size", "current", "fast", "loops", "reference"]


def current():
    """The kernel module for the selected backend."""
    return _MODULES[get_backend()]


_MODULES = {"numba": fast, "numpy": reference, "loops": loops}
