"""A Conv2D(activation="relu") followed by MaxPool2D(2) run as one step, for speed; also a
Conv2D, MaxPool2D(2) and ReLU, which compute the same (max and ReLU commute); and in eval
mode a Conv2D + BatchNorm2D (+ ReLU (+ MaxPool2D(2))) as one convolution (last section).

`Sequential` runs such a pair through the kernels' conv2d_relu_maxpool2_forward and
_backward instead of the two layers' own passes. Why it pays: the convolution's output is
the largest array in these networks (128 x 32 x 26 x 26 floats, 11 MB, for the Keras
convnet's first layer). Run separately, it is written by the convolution, read by the
pooling, and backward a gradient of the same size is written by the pooling and read by
the convolution, with the output read once more for the ReLU's mask. Fused, the fast
kernels pool each output plane while it is still in the CPU's cache, keep only the pooled
values and each window's winning tap (1 byte), and backward place each pooled gradient
straight where the convolution's pass wants it. In evaluation mode no taps are recorded;
a backward pass after it (a saliency map) recomputes them from the input.

Measured (`python benchmarks/bench_conv_methods.py`, forward+backward of the pair, 2 cores):
the convnet's first layer at batch 128 6.3 -> 5.3 ms, LeNet-5's first at batch 1000
20.1 -> 14.5 ms; the second layers, whose outputs are small, gain nothing (16.1 -> 16.3 ms,
27.3 -> 30.2 ms: within the noise of these machines, which drift +-25% between runs). A
training step, fused / not, alternated 8 times in one process: convnet 29.4 / 32.1 ms,
LeNet-5 8.8 / 9.4 ms; fastnet (Conv2D + MaxPool2D(2) + ReLU; 10 rounds of 10 steps on real
MNIST, three runs) 23.6 / 25.7 and 19.9 / 20.8 ms at batch 128, 43.0 / 46.0 ms at batch 256.
predict_proba on 1000 test images, fused / not, alternated 20 times: LeNet-5 23.1 / 26.8 ms,
convnet 67.7 / 81.4 ms; fastnet 64.0 / 72.1, 47.5 / 57.8, 43.9 / 49.6 and 62.7 / 62.3 ms in
four runs. (An earlier fused pass that recorded the taps in eval mode too was slower than
the layers.)

Nothing else changes: the layers still run on their own (a single layer's forward, the
feature-map plots), save and load as their own layers, and the NumPy reference kernels define
the pair as the two passes in turn, so both backends give the layers' own results
(tests/test_model.py holds the fused and unfused paths equal).

At inference a batch normalisation after a convolution is folded into it. In eval mode
BatchNorm2D is a fixed affine map per channel f, y = scale[f] * z + shift[f] with
scale = gamma / sqrt(running_var + eps) and shift = beta - running_mean * scale, and z is the
convolution, z[f] = sum(W[f] * x) + b[f]. So

    y[f] = sum((scale[f] * W[f]) * x) + (scale[f] * b[f] + shift[f])

is one convolution with filters scale[f] * W[f] and bias scale[f] * b[f] + shift[f]. A
Conv2D + BatchNorm2D (+ ReLU (+ MaxPool2D(2))) run in eval mode is therefore one convolution
with the ReLU applied as its output is written (and, with the pooling, the fused kernel
above): bnnet's convolution output is no longer written, read and rewritten by the
normalisation, the ReLU and the pooling, each a pass over the largest arrays of the network
(at a batch of 1000, its first one is 74 MB). Training cannot fold: there the normalisation
uses the batch's own statistics, and its gradient flows through them. The folded filters
round differently in float32 (by about 1e-7 of the values); tests/test_model.py holds the
folded and unfolded outputs equal to that, and docs/07-batchnorm.md checks the algebra.
A backward pass after a folded eval pass (a saliency map) runs the layers' own eval passes
from the cached input, then their backward passes.

Only the fast kernels fuse: on the "numpy" and "loops" backends (teaching mode, below) every
layer runs its own passes, so stepping through a model in a debugger visits each of them.
"""
from .. import kernels
from .activations import ReLU
from .batchnorm import BatchNorm2D
from .conv import Conv2D
from .pooling import MaxPool2D

ENABLED = True          # off: every layer runs its own passes (tests compare the two)


def teaching_mode():
    """True on the "numpy" and "loops" backends. Fusion is a speed device of the fast
    kernels; on the slower ones nothing is fused, so every layer runs its own forward and
    backward pass and a debugger stepping through a model (a breakpoint in
    MaxPool2D.backward, say) visits each layer. This is the one place that decides it."""
    return kernels.current() is not kernels.fast


def _is_pool2(layer):
    return type(layer) is MaxPool2D and layer.kernel_size == (2, 2) and layer.stride == (2, 2)


def run_length(layers, i, training=True):
    """How many layers from layers[i] on run as one fused step: 2 for Conv2D(activation="relu")
    + MaxPool2D(2); 3 for Conv2D + MaxPool2D(2) + ReLU (as in fastnet: max and ReLU commute,
    relu(max(a)) = max(relu(a)), so the pair computes the same values and gradients); in eval
    mode also 2, 3 or 4 for Conv2D + BatchNorm2D (+ ReLU (+ MaxPool2D(2))), the normalisation
    folded into the convolution; otherwise 0, and always 0 in teaching mode."""
    if not ENABLED or teaching_mode():
        return 0
    conv, second, third, fourth = (layers[k] if k < len(layers) else None for k in range(i, i + 4))
    if type(conv) is not Conv2D:
        return 0
    if not training and conv.activation is None and type(second) is BatchNorm2D:
        return 2 if type(third) is not ReLU else (4 if _is_pool2(fourth) else 3)
    if not _is_pool2(second):
        return 0
    if conv.activation == "relu":
        return 2
    return 3 if type(third) is ReLU else 0


def forward(layers, x, training=True):
    """The fused layers' output and the state `backward` needs (layers[0] is the Conv2D).
    In eval mode no taps are recorded; a backward pass after it (a saliency map) first
    recomputes them from x. A Conv2D + BatchNorm2D run (eval mode only) is folded."""
    conv = layers[0]
    conv._check_input(x, 4, "(N, C, H, W)")
    if type(layers[1]) is BatchNorm2D:
        return _folded_forward(layers, x), _Folded(layers, x)
    impl = kernels.current()
    y, cache = impl.conv2d_relu_maxpool2_forward(x, conv.params["W"], conv.params.get("b"),
                                                 conv.stride, conv.padding, need_argmax=training)
    for layer in layers:
        layer.cache = None              # their own backward passes have nothing to run on
    return y, (impl, cache, x)


def backward(conv, state, dy, need_dx=True):
    """dx of the fused layers (None without need_dx), filling conv's gradients."""
    if isinstance(state, _Folded):
        return state.backward(dy, need_dx)
    impl, cache, x = state
    W, b = conv.params["W"], conv.params.get("b")
    if cache is None:
        cache = impl.conv2d_relu_maxpool2_forward(x, W, b, conv.stride, conv.padding)[1]
    dx, dW, db = impl.conv2d_relu_maxpool2_backward(dy, cache, x.shape, W, conv.stride, conv.padding, need_dx)
    conv.store_grads(dW, db)
    return dx


def _folded_forward(layers, x):
    """Eval mode: Conv2D + BatchNorm2D (+ ReLU (+ MaxPool2D(2))) as one convolution with the
    normalisation folded into its filters and bias (see the module's docstring)."""
    conv, bn = layers[0], layers[1]
    W = conv.params["W"]
    scale, shift = bn.eval_scale_shift(W.dtype)
    W_folded = W * scale[:, None, None, None]                        # (F, C, kh, kw)
    b = conv.params.get("b")
    b_folded = shift if b is None else b * scale + shift              # (F,)
    impl = kernels.current()
    if len(layers) == 4:                                             # + ReLU + MaxPool2D(2)
        y, _ = impl.conv2d_relu_maxpool2_forward(x, W_folded, b_folded, conv.stride, conv.padding,
                                                 need_argmax=False)
    else:                                                            # (+ ReLU)
        y, _ = impl.conv2d_forward(x, W_folded, b_folded, conv.stride, conv.padding, relu=len(layers) == 3)
    for layer in layers:
        layer.cache = None
    return y


class _Folded:
    """What a folded eval pass keeps: its layers and their input."""

    def __init__(self, layers, x):
        self.layers, self.x = list(layers), x

    def backward(self, dy, need_dx):
        """The layers' own eval passes from the input, then their backward passes."""
        h = self.x
        for layer in self.layers:
            h = layer.forward(h, training=False)
        for layer in self.layers[:0:-1]:        # the layers after the convolution, last first
            dy = layer.backward(dy)
        return self.layers[0].backward(dy, need_dx=need_dx)
