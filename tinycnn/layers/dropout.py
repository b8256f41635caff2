"""Inverted dropout."""
import numpy as np

from .base import Layer


class Dropout(Layer):
    """Inverted dropout: zero each element with probability p while training and scale the
    survivors by 1/(1-p), so that evaluation needs no rescaling at all.

    forward:  training: y = x * mask, mask = (u >= p) / (1 - p), u ~ U[0, 1)
              eval:     y = x
    backward: dx = dy * mask (eval: dx = dy)
    caches:   (mask,), or (None,) in eval
    rng:      the model's generator (set by Sequential), so runs are reproducible.
    """

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)
        self.rng = np.random.default_rng()

    def forward(self, x, training=False):
        if not training or self.p == 0:
            self.cache = (None,)
            return x
        keep = self.rng.random(x.shape, dtype=np.float32) >= self.p
        mask = keep * x.dtype.type(1 / (1 - self.p))
        self.cache = (mask,)
        return x * mask

    def backward(self, dy):
        (mask,) = self._cached()
        if mask is None:          # (eval: dx = dy, whatever its shape; the layer before checks it)
            return dy
        self._check_dy(dy, mask.shape)
        return dy * mask

    def config(self):
        return dict(p=self.p)
