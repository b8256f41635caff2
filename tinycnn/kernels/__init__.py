"""The kernels behind the layers, in two interchangeable sets.

`reference` is plain NumPy, written to be read; `fast` is the same maths jitted with Numba.
The functions below forward each call to the set chosen by `tinycnn.set_backend`
(default "numba"), so a layer never needs to know which one runs.
"""
from ..backend import get_backend
from . import fast, reference
from .reference import conv_output_size

__all__ = ["conv_output_size", "im2col", "col2im", "conv2d_forward", "conv2d_backward",
           "maxpool2d_forward", "maxpool2d_backward", "avgpool2d_forward",
           "avgpool2d_backward", "fast", "reference"]


def _impl():
    return fast if get_backend() == "numba" else reference


def im2col(x, kh, kw, sh, sw, ph, pw):
    return _impl().im2col(x, kh, kw, sh, sw, ph, pw)


def col2im(cols, x_shape, kh, kw, sh, sw, ph, pw):
    return _impl().col2im(cols, x_shape, kh, kw, sh, sw, ph, pw)


def conv2d_forward(x, W, b, stride, padding):
    return _impl().conv2d_forward(x, W, b, stride, padding)


def conv2d_backward(dy, cols, x_shape, W, stride, padding, need_dx=True):
    return _impl().conv2d_backward(dy, cols, x_shape, W, stride, padding, need_dx)


def maxpool2d_forward(x, kh, kw, sh, sw):
    return _impl().maxpool2d_forward(x, kh, kw, sh, sw)


def maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw):
    return _impl().maxpool2d_backward(dy, argmax, x_shape, kh, kw, sh, sw)


def avgpool2d_forward(x, kh, kw, sh, sw):
    return _impl().avgpool2d_forward(x, kh, kw, sh, sw)


def avgpool2d_backward(dy, x_shape, kh, kw, sh, sw):
    return _impl().avgpool2d_backward(dy, x_shape, kh, kw, sh, sw)
