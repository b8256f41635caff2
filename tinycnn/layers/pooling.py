"""Pooling layers: max and average over (possibly strided) windows."""
from .. import kernels
from .base import Layer, pair


class _Pool2D(Layer):
    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, f"{self.name} kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, f"{self.name} stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{self.name}: kernel_size and stride must be >= 1, got "
                             f"{self.kernel_size} and {self.stride}")

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: expected input (N, C, H, W), got per-example shape "
                             f"{tuple(input_shape)}")
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        C, H, W = input_shape
        if H < kh or W < kw:
            raise ValueError(f"{self.name}: window {kh}x{kw} is larger than the input {H}x{W}")
        return (C, kernels.conv_output_size(H, kh, sh, 0), kernels.conv_output_size(W, kw, sw, 0))

    def config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride))


class MaxPool2D(_Pool2D):
    """Max pooling; windows that do not fit are dropped (floor), as in PyTorch.

    forward:  x (N, C, H, W) -> y (N, C, OH, OW), OH = (H - kh) // sh + 1
              y[n, c, a, b] = max of x[n, c, a*sh : a*sh+kh, b*sw : b*sw+kw]
    backward: dx is zero except at each window's arg-max, which receives dy[n, c, a, b]
              (on ties, only the first maximum in row-major order)
    caches:   (impl, argmax (N, C, OH, OW) int32, the tap i*kw + j of each maximum, None,
              x's shape); in eval mode (impl, None, x, x's shape): backward computes argmax
    stride defaults to kernel_size.
    """

    def forward(self, x, training=False):
        self._check_input(x, 4, "(N, C, H, W)")
        impl = kernels.current()
        # Inference skips the argmax (half the pooling's time) and keeps x instead, so a
        # backward pass after an eval-mode forward (a saliency map) can still find it.
        y, argmax = impl.maxpool2d_forward(x, *self.kernel_size, *self.stride, need_argmax=training)
        self.cache = (impl, argmax, None if training else x, x.shape)
        return y

    def backward(self, dy):
        impl, argmax, x, x_shape = self._cached()
        self._check_dy(dy, x_shape)
        if argmax is None:
            argmax = impl.maxpool2d_forward(x, *self.kernel_size, *self.stride)[1]
        return impl.maxpool2d_backward(dy, argmax, x_shape, *self.kernel_size, *self.stride)


class AvgPool2D(_Pool2D):
    """Average pooling; windows that do not fit are dropped (floor).

    forward:  x (N, C, H, W) -> y (N, C, OH, OW), y[n, c, a, b] = mean of the window
    backward: every pixel of a window receives dy[n, c, a, b] / (kh*kw)
    caches:   (impl, x's shape)
    stride defaults to kernel_size.
    """

    def forward(self, x, training=False):
        self._check_input(x, 4, "(N, C, H, W)")
        impl = kernels.current()
        self.cache = (impl, x.shape)
        return impl.avgpool2d_forward(x, *self.kernel_size, *self.stride)

    def backward(self, dy):
        impl, x_shape = self._cached()
        self._check_dy(dy, x_shape)
        return impl.avgpool2d_backward(dy, x_shape, *self.kernel_size, *self.stride)
