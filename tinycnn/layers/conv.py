"""Convolution layer."""
import numpy as np

from .. import kernels
from .base import Layer, pair


def _padding_for(padding, kernel_size, stride):
    """padding as given, or for "valid" 0 and for "same" (stride 1, odd kernels) (kh // 2,
    kw // 2): the output then has the input's size, OH = H + 2 * (kh // 2) - kh + 1 = H."""
    if not isinstance(padding, str):
        return padding
    if padding == "valid":
        return 0
    if padding == "same":
        if stride != (1, 1) or not all(k % 2 for k in kernel_size):
            raise ValueError(f"Conv2D: padding='same' needs stride 1 and odd kernel sizes, got "
                             f"kernel_size {kernel_size}, stride {stride}; give the padding as numbers")
        return kernel_size[0] // 2, kernel_size[1] // 2
    raise ValueError(f"Conv2D: padding must be a number, a pair, 'same' or 'valid', got {padding!r}")


class Conv2D(Layer):
    """2-D convolution (cross-correlation, as in every framework) over NCHW batches.

    forward:  x (N, C, H, W) -> y (N, F, OH, OW), OH = (H + 2*ph - kh) // sh + 1
              y[n, f, a, b] = bias[f] + sum_{c,i,j} W[f, c, i, j] * xpad[n, c, a*sh + i, b*sw + j]
    backward: dW[f, c, i, j] = sum_{n,a,b} dy[n, f, a, b] * xpad[n, c, a*sh + i, b*sw + j]
              db[f]          = sum_{n,a,b} dy[n, f, a, b]
              dx: every input pixel collects dy[n, f, a, b] * W[f, c, i, j] from each window
                  (a, b) that saw it through tap (i, j) - the col2im of W^T dY
    caches:   impl, the kernel's cache (the reference kernel keeps cols (C*kh*kw, N*OH*OW), the
              im2col of x; the fast one keeps x and rebuilds columns block by block; the loop one
              keeps x), x's shape
    params:   W (F, C, kh, kw), He-initialised N(0, 2 / (C*kh*kw)); b (F,), zeros

    padding: a number or a pair (ph, pw); "valid" is 0 and "same" (stride 1, odd kernels)
    keeps the input's size, (kh // 2, kw // 2). The layer stores the numbers.

    activation="relu" returns max(y, 0), as Keras' Conv2D(activation="relu") does: the same
    function as Conv2D followed by ReLU, but the fast kernel applies the ReLU while writing y
    and its derivative (dy where y > 0) while reading dy, which saves two passes over the
    largest arrays in the network and the ReLU's mask. The output y is then cached too.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 activation=None):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"Conv2D: channels must be >= 1, got in_channels={in_channels}, "
                             f"out_channels={out_channels}")
        self.kernel_size = pair(kernel_size, "Conv2D kernel_size")
        self.stride = pair(stride, "Conv2D stride")
        self.padding = pair(_padding_for(padding, self.kernel_size, self.stride), "Conv2D padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2D: kernel_size and stride must be >= 1 and padding >= 0, got "
                             f"{self.kernel_size}, {self.stride}, {self.padding}")
        self.bias = bool(bias)
        if activation not in (None, "relu"):
            raise ValueError(f"Conv2D: activation must be None or 'relu', got {activation!r}"
                             + (" (for another activation, put its layer after the Conv2D: "
                                "tinycnn.layers.Tanh(), Sigmoid() or LeakyReLU())"
                                if isinstance(activation, str) else ""))
        self.activation = activation
        self.reset_parameters(np.random.default_rng())

    def reset_parameters(self, rng):
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        shape = (self.out_channels, self.in_channels, kh, kw)
        self.params["W"] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.grads["W"] = np.zeros(shape, dtype=np.float32)
        if self.bias:
            self.params["b"] = np.zeros(self.out_channels, dtype=np.float32)
            self.grads["b"] = np.zeros(self.out_channels, dtype=np.float32)

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"Conv2D: expected input (N, {self.in_channels}, H, W), got per-example "
                             f"shape {tuple(input_shape)}")
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        _, H, W = input_shape
        if H + 2 * ph < kh or W + 2 * pw < kw:
            raise ValueError(f"Conv2D: kernel {kh}x{kw} is larger than the padded input "
                             f"{H + 2 * ph}x{W + 2 * pw} (input {H}x{W}, padding {ph},{pw})")
        return (self.out_channels, kernels.conv_output_size(H, kh, sh, ph),
                kernels.conv_output_size(W, kw, sw, pw))

    def forward(self, x, training=False):
        self._check_input(x, 4, "(N, C, H, W)")
        impl = kernels.current()
        y, cache = impl.conv2d_forward(x, self.params["W"], self.params.get("b"), self.stride,
                                       self.padding, relu=self.activation == "relu")
        self.cache = (impl, cache, x.shape)
        return y

    def backward(self, dy, need_dx=True):
        """need_dx=False skips the input gradient (the first layer of a model needs none)."""
        impl, cache, x_shape = self._cached()
        self._check_dy(dy, x_shape)
        dx, dW, db = impl.conv2d_backward(dy, cache, x_shape, self.params["W"], self.stride,
                                          self.padding, need_dx)
        self.store_grads(dW, db)
        return dx

    def store_grads(self, dW, db):
        self.grads["W"][...] = dW
        if self.bias:
            self.grads["b"][...] = db

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=list(self.padding), bias=self.bias, activation=self.activation)
