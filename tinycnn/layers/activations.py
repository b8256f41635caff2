"""Element-wise activations. Each keeps what its derivative needs, nothing more."""
import numpy as np

from .. import kernels
from .base import Layer


class _Activation(Layer):
    def _check(self, x):
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            raise TypeError(f"{self.name}: input must be a float ndarray, got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")


class ReLU(_Activation):
    """y = max(x, 0);  dx = dy where x > 0, else 0.   caches: (impl, the mask x > 0)

    The kernels are in tinycnn.kernels (the fast one writes y and the mask in one pass).
    """

    def forward(self, x, training=False):
        self._check(x)
        impl = kernels.current()
        y, mask = impl.relu_forward(x)
        self.cache = (impl, mask)
        return y

    def backward(self, dy):
        impl, mask = self._cached()
        self._check_dy(dy, mask.shape)
        return impl.relu_backward(dy, mask)


class LeakyReLU(_Activation):
    """y = x if x > 0 else alpha*x;  dx = dy * (1 if x > 0 else alpha).   caches: x > 0"""

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = float(alpha)
        # float("nan") parses, and float32 turns 1e300 into inf: either makes every negative
        # input NaN or infinite, so refuse them here (a model file names this layer).
        if not abs(self.alpha) <= float(np.finfo(np.float32).max):
            raise ValueError(f"LeakyReLU: alpha must be a finite float32 number, got {alpha!r}")

    def forward(self, x, training=False):
        self._check(x)
        self.cache = x > 0
        return np.where(self.cache, x, x * x.dtype.type(self.alpha))

    def backward(self, dy):
        positive = self._cached()
        self._check_dy(dy, positive.shape)
        return np.where(positive, dy, dy * dy.dtype.type(self.alpha))

    def config(self):
        return dict(alpha=self.alpha)


class Sigmoid(_Activation):
    """y = 1 / (1 + exp(-x));  dx = dy * y * (1 - y).   caches: y

    exp is only ever taken of -|x|, so it cannot overflow for large negative x.
    """

    def forward(self, x, training=False):
        self._check(x)
        e = np.exp(-np.abs(x))                       # in (0, 1]
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self.cache = y
        return y

    def backward(self, dy):
        y = self._cached()
        self._check_dy(dy, y.shape)
        return dy * y * (1 - y)


class Tanh(_Activation):
    """y = tanh(x);  dx = dy * (1 - y^2).   caches: y"""

    def forward(self, x, training=False):
        self._check(x)
        self.cache = np.tanh(x)
        return self.cache

    def backward(self, dy):
        y = self._cached()
        self._check_dy(dy, y.shape)
        return dy * (1 - y * y)
