"""The model container: a stack of layers run in order."""
import numbers

import numpy as np

from . import warmup
from .functional import softmax
from .layers import Conv2D, Layer, fused
from .checks import whole_number
from .layers.base import float_dtype
from .modelcheck import examples_per_slice
from .runtime import one_thread_pool


class Sequential:
    """Layers applied one after another.

    forward(x) runs each layer's forward; backward(dy) runs their backward passes in
    reverse, each layer turning the gradient of its output into the gradient of its input
    and filling its own `grads` on the way. (One shortcut: a Conv2D(activation="relu")
    followed by MaxPool2D(2), or a Conv2D, MaxPool2D(2) and ReLU, runs as one fused step,
    with exactly the layers' results, and in eval mode a Conv2D + BatchNorm2D (+ ReLU
    (+ MaxPool2D(2))) runs as one convolution with the normalisation folded into it, equal
    up to float32 rounding; see layers/fused.py. Not on the "numpy" and "loops"
    backends: there every layer runs its own passes.)

    seed: when given, every layer's parameters are re-drawn from
    np.random.default_rng(seed), and dropout draws its masks from the same generator, so a
    run is reproducible. When None, layers keep their own initialisation.
    input_shape: per-example input shape, e.g. (1, 28, 28); when given, shapes are
    checked now (else at the first forward) and `summary()` can print output shapes.

    Two attributes are saved with the model (save / load_model) for whoever uses it next:
    preprocessing: {"mean": m, "std": s} on the 0-1 scale, or {}: what `preprocess` applies
        after scaling uint8 images to [0, 1]. Set it when you standardise the training data
        (m, s from datasets.standardize): a reloaded model then prepares new images the same
        way. (The main job also records "scale": 1/255, the uint8 scaling, for reading.)
    class_names: one name per output (e.g. ["0", ..., "9"]), shown by predictions and
        plots, or None.
    """

    MAX_INFERENCE_SLICE = 256

    def __init__(self, layers, input_shape=None, seed=None):
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Layer")
        self.names = [f"{type(layer).__name__.lower()}_{i}" for i, layer in enumerate(self.layers)]
        self.seed = seed
        self.set_rng(np.random.default_rng(seed))
        if seed is not None:
            for layer in self.layers:
                layer.reset_parameters(self.rng)
        self.training = False
        self._fused = {}
        self._slice_sizes = {}        # example shape -> examples per inference slice (inference_slice)
        self.input_shape = None
        self.preprocessing = {}               # saved with the model; see `preprocess`
        self.class_names = None
        if input_shape is not None:
            self.build(input_shape)

    def set_rng(self, rng):
        """Make `rng` the model's generator, from which dropout draws its masks."""
        self.rng = rng
        for layer in self.layers:
            if hasattr(layer, "rng"):
                layer.rng = rng

    # -- shapes ------------------------------------------------------------------------
    def output_shapes(self, input_shape):
        """Per-example output shape of every layer, checking that consecutive layers fit."""
        shapes, shape = [], tuple(int(s) for s in input_shape)
        for i, (name, layer) in enumerate(zip(self.names, self.layers)):
            try:
                shape = tuple(layer.output_shape(shape))
            except ValueError as err:
                source = f"the output of {self.names[i - 1]}" if i else "the model input"
                raise ValueError(f"layer {name} does not fit {source} of shape {shape}: "
                                 f"{err}") from None
            shapes.append(shape)
        return shapes

    def build(self, input_shape):
        """Fix the per-example input shape and check every layer against it."""
        self.output_shapes(input_shape)
        self.input_shape = tuple(int(s) for s in input_shape)
        return self

    # -- passes ------------------------------------------------------------------------
    def forward(self, x, training=None):
        """x (N, *input_shape) -> the last layer's output. training=None uses self.training."""
        training = self.training if training is None else training
        x = self._as_input(x)
        if self.input_shape != x.shape[1:]:
            if self.input_shape is not None and x.shape in (self.input_shape, self.input_shape[1:]):
                fix = "x[None]" if x.shape == self.input_shape else "x[None, None]"
                raise ValueError(f"the input has shape {x.shape}: one example of this model's input "
                                 f"{self.input_shape}, not a batch of them; pass {fix} (a batch of one)")
            self.build(x.shape[1:])
        layers = self.layers
        self._fused = {}      # layers run as one step: last one's index -> (first's, state)
        with one_thread_pool():
            i = 0
            while i < len(layers):
                n = fused.run_length(layers, i, training)
                if n:
                    x, state = fused.forward(layers[i:i + n], x, training)
                    self._fused[i + n - 1] = (i, state)
                    i += n
                else:
                    x = layers[i].forward(x, training=training)
                    i += 1
        return x

    def backward(self, dy, need_dx=True):
        """Back-propagate dy (gradient of the loss w.r.t. the output); returns dx.

        need_dx=False skips the input gradient of the first layer when it is a convolution
        (training never needs it, and it is the most expensive part of that layer's pass).
        """
        with one_thread_pool():
            i = len(self.layers) - 1
            while i >= 0:
                if i in self._fused:                          # the fused run, back to its input
                    i, state = self._fused[i]
                    dy = fused.backward(self.layers[i], state, dy, need_dx or i > 0)
                elif i == 0 and not need_dx and isinstance(self.layers[0], Conv2D):
                    dy = self.layers[0].backward(dy, need_dx=False)
                else:
                    dy = self.layers[i].backward(dy)
                i -= 1
        return dy

    def _as_input(self, x):
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"model input must be floating point, got {x.dtype}; scale images "
                            "first (model.preprocess(images) applies the model's own recipe)")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        return x

    # -- parameters --------------------------------------------------------------------
    def parameters(self):
        """Yield (layer_name, param_name, param, grad) for every trainable array."""
        for name, layer in zip(self.names, self.layers):
            for key, param in layer.params.items():
                yield name, key, param, layer.grads[key]

    def num_parameters(self):
        return sum(p.size for _, _, p, _ in self.parameters())

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    @property
    def dtype(self):
        for _, _, p, _ in self.parameters():
            return p.dtype
        return np.dtype(np.float32)

    def to(self, dtype):
        """Cast every parameter, gradient and state array to dtype, float32 or float64 (any
        other is refused before a layer changes). Arrays already of that dtype stay the same
        arrays; after a real change, make the optimiser afterwards (it updates the arrays it
        was given)."""
        dtype = float_dtype(dtype, "Sequential.to")
        for layer in self.layers:
            layer.to(dtype)
        return self

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    # -- inference ---------------------------------------------------------------------
    def preprocess(self, images):
        """Turn raw images into model input with the recipe stored in `preprocessing`:
        pixels -> [0, 1] float32, then (x - mean) / std, and a channel axis when the model
        expects one. The scale to [0, 1] depends on the dtype:
            uint8, or any integers in 0..255   / 255 (8-bit pixels, as MNIST's)
            bool (an ink mask)                 False -> 0.0, True -> 1.0
            other integers (16-bit images)     refused: their scale is not known; divide
                                               them yourself, e.g. images / 65535
            floats                             taken to be on the 0-1 scale already (a
                                               float image of 0-255 values must be divided
                                               by 255 first)
        """
        x = np.asarray(images)
        if x.dtype.kind == "b":
            x = x.astype(np.float32)
        elif x.dtype.kind in "iu":
            if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255):
                raise ValueError(f"preprocess: {x.dtype} pixels from {x.min()} to {x.max()} are not "
                                 "8-bit values (0..255); scale them to [0, 1] floats first, e.g. "
                                 "images / 65535 for 16-bit images")
            x = x.astype(np.float32) / 255
        else:
            x = x.astype(np.float32)
        if "mean" in self.preprocessing:
            std = self.preprocessing.get("std")
            if not (isinstance(std, numbers.Real) and 0 < std < np.inf):
                raise ValueError(f"preprocess: preprocessing['std'] must be a number > 0, got {std!r}")
            x = (x - np.float32(self.preprocessing["mean"])) / np.float32(std)
        if self.input_shape is not None and x.ndim == len(self.input_shape):
            x = x[:, None]                    # (N, H, W) -> (N, 1, H, W)
        return x

    def predict_proba(self, x, batch_size=256):
        """Class probabilities (N, K), computed slice by slice in eval mode.

        At most 256 images go through the network at once, whatever batch_size says:
        measured on convnet, slices of 256 ran 1.8x faster than slices of 1000, because
        every intermediate array stays small enough to be reused from the heap and cache.
        Fewer for a model whose arrays are large per example: a slice's largest array holds
        at most 2**26 values (256 MiB of float32; tinycnn.modelcheck.MAX_SLICE_VALUES).
        The bundled models' slices stay 256 on 28x28 inputs.
        """
        x = self._as_input(x)
        whole_number(batch_size, 1, "predict_proba", "batch_size")
        if len(x) == 0:                   # no images: no rows, but the right number of columns
            shape = x.shape[1:] if x.ndim > 1 else self.input_shape
            if shape is None:
                raise ValueError(f"predict_proba: an empty input of shape {x.shape} and no "
                                 "input_shape: cannot tell the number of classes")
            return np.empty((0,) + self.output_shapes(shape)[-1], dtype=x.dtype)
        step = self.inference_slice(min(batch_size, self.MAX_INFERENCE_SLICE), x.shape[1:])
        out = None
        # kernels_for_inference: on a cold start, small batches run on the reference kernels
        # (see warmup.py); errstate: NaN/inf outputs are checked below, as an error.
        with warmup.kernels_for_inference(self, len(x)), np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(x), step):
                p = softmax(self.forward(x[start:start + step], training=False))
                if out is None:
                    out = np.empty((len(x), p.shape[1]), dtype=p.dtype)
                out[start:start + len(p)] = p
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():                     # a wrong answer must not pass for one
            raise FloatingPointError(
                f"predict_proba: the model's output is NaN or infinite for {int(bad.sum())} of "
                f"{len(out)} inputs (first: index {int(np.argmax(bad))}); its weights or its "
                "preprocessing (std 0?) are broken, or the input holds NaN")
        return out

    def inference_slice(self, batch_size, example_shape):
        """How many examples of shape `example_shape` to run at once for inference: batch_size,
        or fewer when one of the slice's arrays would hold more than MAX_SLICE_VALUES values
        (tinycnn.modelcheck: 2**26, 256 MiB of float32)."""
        key = tuple(example_shape)
        if key not in self._slice_sizes:       # (walking the layers' shapes costs 30 us: once per shape)
            try:
                self._slice_sizes[key] = examples_per_slice(self, key)
            except ValueError:    # the input does not fit: forward says how, on the first slice
                return batch_size
        return min(batch_size, self._slice_sizes[key])

    def predict(self, x, batch_size=256):
        """Predicted class indices (N,)."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    # -- description -------------------------------------------------------------------
    def summary(self, input_shape=None, print_fn=print):
        """Print (and return) a table: layer, output shape, parameter count, total."""
        input_shape = input_shape or self.input_shape
        shapes = self.output_shapes(input_shape) if input_shape else [None] * len(self.layers)
        rows = [("Layer (type)", "Output shape", "Params")]
        for name, layer, shape in zip(self.names, self.layers, shapes):
            shown = "(None, " + ", ".join(map(str, shape)) + ")" if shape else "?"
            kind = layer.name + (f", {layer.activation}" if getattr(layer, "activation", None) else "")
            rows.append((f"{name} ({kind})", shown,
                         f"{sum(p.size for p in layer.params.values()):,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        fmt = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}"
        text = "\n".join([line, fmt(rows[0]), "=" * len(line)] + [fmt(r) for r in rows[1:]]
                         + [line, f"Total params: {self.num_parameters():,}", line])
        if print_fn is not None:
            print_fn(text)
        return text

    def save(self, path):
        """Save to a .npz file (see tinycnn.io.save_model)."""
        from .io import save_model
        return save_model(self, path)

    def __getstate__(self):
        # Copies leave the fused pairs' forward state behind, as layers leave their caches.
        return {**self.__dict__, "_fused": {}}

    def __repr__(self):
        inner = ",\n  ".join(repr(layer) for layer in self.layers)
        return f"Sequential([\n  {inner}\n])"
