"""Fully connected layer and the Flatten that usually precedes it."""
import numpy as np

from .base import Layer


class Dense(Layer):
    """Affine layer.

    forward:  x (N, D) -> y (N, M),  y = x @ W + b
    backward: dW = x^T @ dy (D, M),  db = sum over the batch of dy (M,),  dx = dy @ W^T (N, D)
    caches:   x
    params:   W (D, M), He-initialised N(0, 2 / D); b (M,), zeros
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"Dense: features must be >= 1, got {in_features}, {out_features}")
        self.bias = bool(bias)
        self.reset_parameters(np.random.default_rng())

    def reset_parameters(self, rng):
        shape = (self.in_features, self.out_features)
        self.params["W"] = (rng.standard_normal(shape) * np.sqrt(2.0 / self.in_features)).astype(np.float32)
        self.grads["W"] = np.zeros(shape, dtype=np.float32)
        if self.bias:
            self.params["b"] = np.zeros(self.out_features, dtype=np.float32)
            self.grads["b"] = np.zeros(self.out_features, dtype=np.float32)

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            hint = " (add a Flatten layer before Dense)" if len(input_shape) > 1 else ""
            raise ValueError(f"Dense: expected input (N, {self.in_features}), got per-example "
                             f"shape {tuple(input_shape)}{hint}")
        return (self.out_features,)

    def forward(self, x, training=False):
        if getattr(x, "ndim", 2) > 2:
            raise ValueError(f"Dense: expected input (N, {self.in_features}), got shape {x.shape} "
                             "(add a Flatten layer before Dense)")
        self._check_input(x, 2, "(N, in_features)")
        self.cache = x
        y = x @ self.params["W"]
        if self.bias:
            y += self.params["b"]
        return y

    def backward(self, dy):
        x = self._cached()
        self._check_dy(dy, x.shape)
        np.matmul(x.T, dy, out=self.grads["W"])
        if self.bias:
            dy.sum(axis=0, out=self.grads["b"])
        return dy @ self.params["W"].T

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.bias)


class Flatten(Layer):
    """Reshape (N, d1, d2, ...) -> (N, d1*d2*...); backward reshapes dy back.

    caches: x's shape
    """

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        if x.ndim < 2:
            raise ValueError(f"Flatten: expected a batch (N, ...), got shape {x.shape}")
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        x_shape = self._cached()
        self._check_dy(dy, x_shape)
        return dy.reshape(x_shape)
