"""What every layer shares: parameters, gradients, the forward cache and shape checks."""
import numbers

import numpy as np

# Largest kernel size, stride or padding a layer accepts: the bound load_model already puts
# on an input's sides. (A stride of 2**64 from a hand-edited file would otherwise load, then
# fail inside the fast kernels with a message that names nothing.)
MAX_SIZE = 2**24

# The dtypes the kernels compute in: float32 (the fast path) and float64 (gradient checks).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def is_whole(value):
    """An integer, not a bool (JSON's `true` is no count, Python's True == 1 all the same)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value):
    """A real number (NaN and infinity included), not a bool: a hand-edited file's `true` is
    not a momentum of 1."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def float_dtype(dtype, where):
    """np.dtype(dtype) if it is float32 or float64, else a TypeError naming `where`. Casting
    weights to an integer, bool or float16 type truncates them, and no cast back restores
    them, so that is refused before anything is cast. (None too: np.dtype(None) is float64.)"""
    try:
        checked = None if dtype is None else np.dtype(dtype)
    except (TypeError, ValueError):
        checked = None
    if checked is None or checked not in FLOAT_DTYPES:     # (np.dtype('float64') == None)
        shown = checked.name if checked is not None else repr(dtype)
        raise TypeError(f"{where}: dtype must be float32 or float64, got {shown} (a cast to an integer, "
                        "bool or float16 type would truncate the weights for good); use np.float32 (the "
                        "fast kernels) or np.float64")
    return checked


def pair(value, name):
    """Accept an int or an (h, w) pair; return the pair, checked (each at most MAX_SIZE)."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        h, w = value
        if not all(isinstance(v, (int, np.integer)) for v in (h, w)):
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if max(abs(int(h)), abs(int(w))) > MAX_SIZE:
        raise ValueError(f"{name} must be at most {MAX_SIZE:,}, got {value!r}")
    return int(h), int(w)


class Layer:
    """Base class. A layer maps x -> y in `forward` and dy -> dx in `backward`.

    params: dict name -> ndarray, the trainable arrays (empty if none)
    grads:  dict with the same keys and shapes, filled by `backward`
    state:  dict name -> ndarray of arrays that are saved but not trained (batchnorm's
            running statistics)
    """

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.state = {}
        self.cache = None

    # -- to be provided by each layer -------------------------------------------------
    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Per-example output shape for a per-example input shape (no batch axis)."""
        return tuple(input_shape)

    def config(self):
        """Constructor arguments, as JSON-friendly values (used to save the model)."""
        return {}

    # -- shared helpers ----------------------------------------------------------------
    def __getstate__(self):
        # Copies (copy.deepcopy, as gradcheck makes) leave the forward cache behind: it holds
        # the kernel module, which cannot be copied, and the next forward rebuilds it anyway.
        return {**self.__dict__, "cache": None}

    @property
    def name(self):
        return type(self).__name__

    def reset_parameters(self, rng):
        """Draw fresh initial parameters from `rng` (layers without parameters: no-op)."""

    def to(self, dtype):
        """Cast parameters, gradients and state to `dtype` (float32 or float64); returns self.
        Arrays already of that dtype are kept, not copied: an optimiser made earlier holds
        them and goes on updating the model's own weights. (After a real change of dtype the
        arrays are new ones: make the optimiser after model.to(...).)"""
        dtype = float_dtype(dtype, f"{self.name}.to")
        for store in (self.params, self.grads, self.state):
            for key, value in store.items():
                if value.dtype != dtype:
                    store[key] = value.astype(dtype)
        return self

    def zero_grad(self):
        for g in self.grads.values():
            g.fill(0)

    def _check_input(self, x, ndim, what):
        """Common input checks: an ndarray of floats with the expected number of axes."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self.name}: input must be a numpy array, got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise TypeError(f"{self.name}: input must be float32 or float64, got {x.dtype} "
                            "(scale integer images to floats first, e.g. x / 255)")
        if x.ndim != ndim:
            raise ValueError(f"{self.name}: expected a {ndim}-D input {what}, "
                             f"got shape {x.shape}")
        for key, p in self.params.items():
            if p.dtype != x.dtype:
                raise TypeError(f"{self.name}: input dtype {x.dtype} differs from parameter "
                                f"{key!r} dtype {p.dtype}; cast one to match (x.astype or "
                                "model.to)")
        self.output_shape(x.shape[1:])   # raises a clear error on a shape mismatch

    def _check_dy(self, dy, x_shape):
        """backward's dy is the gradient of the output of the last forward pass (whose input
        had x_shape), so it has that output's shape. Checked, because a wrong one is not
        always an error further down: a batch of 1 broadcasts over the cached mask or input,
        and the fast kernels read only the part of dy they expect."""
        expected = (x_shape[0], *self.output_shape(x_shape[1:]))
        if not isinstance(dy, np.ndarray) or dy.shape != expected:
            got = f"shape {dy.shape}" if isinstance(dy, np.ndarray) else f"a {type(dy).__name__}"
            raise ValueError(f"{self.name}.backward: dy must be the gradient of the last forward "
                             f"pass's output, an array of shape {expected}, got {got}")

    def _cached(self):
        if self.cache is None:
            raise RuntimeError(f"{self.name}.backward called before forward: the backward "
                               "pass needs what the forward pass cached")
        return self.cache

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{self.name}({args})"
