"""Batch normalisation for dense (N, D) and convolutional (N, C, H, W) activations."""
import numpy as np

from .. import kernels
from .base import Layer, is_real

EPS_RANGE = (float(np.finfo(np.float32).smallest_normal), 1.0)


class _BatchNorm(Layer):
    """Shared maths; subclasses say which axes are averaged over.

    forward (training): mu, var = mean and (biased) variance of x over `axes`
                        xhat = (x - mu) / sqrt(var + eps);  y = gamma * xhat + beta
                        running_mean += momentum * (mu - running_mean)  (likewise var,
                        with the unbiased variance, as PyTorch does)
    forward (eval):     the same with running_mean / running_var in place of mu / var
    backward (training), with m the number of values averaged per channel:
        dbeta  = sum(dy);  dgamma = sum(dy * xhat)
        dxhat  = dy * gamma
        dx     = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)) / sqrt(var + eps)
        (the two mean terms are the paths through mu and var)
    backward (eval):    dx = dy * gamma / sqrt(running_var + eps)
    The arithmetic is in tinycnn.kernels (batchnorm_*), on the input viewed as (N, C, M).
    caches:   (impl, xhat, 1/sqrt(var + eps), whether it ran in training mode, x's shape)
    params:   gamma (ones), beta (zeros);  state: running_mean (zeros), running_var (ones)
    """

    input_ndim = 0     # 2 for (N, D), 4 for (N, C, H, W); averaged over every axis but 1

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        self.num_features = int(num_features)
        if not is_real(momentum) or not 0 <= momentum <= 1:
            raise ValueError(f"{self.name}: momentum must be a number in [0, 1], got {momentum!r}")
        # eps is added to a float32 variance: below float32's smallest normal number it is
        # lost (1 / sqrt(0 + eps) overflows), above 1 it swamps the variance it guards.
        if not is_real(eps) or not EPS_RANGE[0] <= eps <= EPS_RANGE[1]:
            raise ValueError(f"{self.name}: eps must be a number in [{EPS_RANGE[0]:.2g}, "
                             f"{EPS_RANGE[1]:g}], got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        F = self.num_features
        self.params = {"gamma": np.ones(F, np.float32), "beta": np.zeros(F, np.float32)}
        self.grads = {k: np.zeros(F, np.float32) for k in self.params}
        self.state = {"running_mean": np.zeros(F, np.float32),
                      "running_var": np.ones(F, np.float32)}

    def reset_parameters(self, rng):
        for store in (self.params, self.state):
            for key, value in store.items():
                value[...] = 1 if key in ("gamma", "running_var") else 0

    def forward(self, x, training=False):
        self._check_input(x, self.input_ndim, self.layout)
        impl = kernels.current()
        x3 = x.reshape(x.shape[0], x.shape[1], -1)        # (N, C, M), see kernels
        if training:
            m = x3.shape[0] * x3.shape[2]
            if m < 2:
                raise ValueError(f"{self.name}: training needs more than one value per channel "
                                 f"to estimate a variance, got input shape {x.shape}")
            mu, var = impl.batchnorm_stats(x3)
            mom = self.momentum
            self.state["running_mean"] += (mom * (mu - self.state["running_mean"])).astype(x.dtype)
            unbiased = var * (m / (m - 1))
            self.state["running_var"] += (mom * (unbiased - self.state["running_var"])).astype(x.dtype)
        else:
            mu, var = self.state["running_mean"], self.state["running_var"]
        inv_std = self._inv_std(var, x.dtype)
        y, xhat = impl.batchnorm_forward(x3, self.params["gamma"], self.params["beta"], mu, inv_std)
        self.cache = (impl, xhat, inv_std, training, x.shape)
        return y.reshape(x.shape)

    def _inv_std(self, var, dtype):
        return (1 / np.sqrt(var + self.eps)).astype(dtype)

    def eval_scale_shift(self, dtype=np.float32):
        """(scale, shift), per channel, with which the eval-mode output is x * scale + shift:
        gamma * (x - running_mean) / sqrt(running_var + eps) + beta, so
        scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean * scale.
        At inference a convolution followed by this layer is one convolution with its
        filters times scale (layers/fused.py folds them)."""
        scale = (self.params["gamma"] * self._inv_std(self.state["running_var"], dtype)).astype(dtype)
        return scale, (self.params["beta"] - self.state["running_mean"] * scale).astype(dtype)

    def backward(self, dy):
        impl, xhat, inv_std, training, x_shape = self._cached()
        self._check_dy(dy, x_shape)
        dx, dgamma, dbeta = impl.batchnorm_backward(dy.reshape(xhat.shape), xhat, self.params["gamma"],
                                                    inv_std, training)
        self.grads["gamma"][...] = dgamma
        self.grads["beta"][...] = dbeta
        return dx.reshape(dy.shape)

    def output_shape(self, input_shape):
        if len(input_shape) != self.input_ndim - 1 or input_shape[0] != self.num_features:
            raise ValueError(f"{self.name}: expected input {self.layout} with "
                             f"{self.num_features} channels, got per-example shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape)

    def config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps)


class BatchNorm1D(_BatchNorm):
    __doc__ = ("Batch normalisation of (N, D) features, per feature over the batch.\n\n"
               + _BatchNorm.__doc__.split("\n", 2)[2])
    input_ndim = 2
    layout = "(N, D)"


class BatchNorm2D(_BatchNorm):
    __doc__ = ("Batch normalisation of (N, C, H, W) maps, per channel over N, H and W.\n\n"
               + _BatchNorm.__doc__.split("\n", 2)[2])
    input_ndim = 4
    layout = "(N, C, H, W)"

    def __init__(self, num_channels, momentum=0.1, eps=1e-5):
        super().__init__(num_channels, momentum, eps)

    def config(self):
        return dict(num_channels=self.num_features, momentum=self.momentum, eps=self.eps)
