"""Check analytic gradients against central finite differences, in float64.

For a layer or a model without a loss, the scalar checked is L = sum(y * R) with R a fixed
random array, so dL/dy = R: every output element takes part with its own weight.
With a loss (or for a loss alone), L is the loss itself.

    d L / d theta_i  ~  (L(theta_i + h) - L(theta_i - h)) / (2h)

The error reported per element is |analytic - numeric| / max(|analytic| + |numeric|, floor);
the floor stops two gradients that are both zero (up to rounding) from dividing noise by
noise.
"""
import copy
from dataclasses import dataclass, field

import numpy as np

from .losses import SoftmaxCrossEntropy
from .model import Sequential


@dataclass
class GradcheckResult:
    max_rel_error: float          # the worst element over all checked arrays
    where: str                    # which array and index, e.g. "conv2d_0.W[3, 0, 1, 2]"
    errors: dict = field(default_factory=dict)   # array name -> its worst relative error

    def __str__(self):
        return f"max relative error {self.max_rel_error:.3e} at {self.where}"


def _reseed(obj, seed):
    """Give every random layer a fresh generator, so each forward draws the same dropout mask."""
    layers = obj.layers if isinstance(obj, Sequential) else [obj]
    for layer in layers:
        if hasattr(layer, "rng"):
            layer.rng = np.random.default_rng(seed)


def _named_params(obj):
    if isinstance(obj, Sequential):
        return [(f"{lname}.{key}", p, g) for lname, key, p, g in obj.parameters()]
    params = getattr(obj, "params", {})
    return [(key, params[key], obj.grads[key]) for key in params]


def gradcheck(obj, x, labels=None, loss=None, training=True, h=1e-5, floor=1e-4, seed=0,
              max_checks=None):
    """Compare obj's input and parameter gradients with finite differences.

    obj:      a layer, a Sequential model, or a loss (SoftmaxCrossEntropy, then `labels`)
    x:        an input batch (cast to float64)
    labels:   integer labels; with `loss` (default SoftmaxCrossEntropy when labels are given)
              the checked scalar is the loss of obj's output
    training: forwarded to the forward pass (batchnorm statistics, dropout)
    max_checks: check at most this many randomly chosen elements per array (None: all)
    Returns a GradcheckResult; obj itself is not modified (a float64 copy is checked).
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)
    is_loss = isinstance(obj, SoftmaxCrossEntropy)
    obj = copy.deepcopy(obj)
    if not is_loss:
        obj.to(np.float64)
    if labels is not None and loss is None and not is_loss:
        loss = SoftmaxCrossEntropy()

    R = None
    if not is_loss and loss is None:       # fixed random weights for the output elements
        _reseed(obj, seed)
        R = rng.standard_normal(obj.forward(x, training=training).shape)

    def forward():
        """The scalar L for the current x and parameters."""
        if is_loss:
            return obj.forward(x, labels)
        _reseed(obj, seed)
        y = obj.forward(x, training=training)
        return loss.forward(y, labels) if loss is not None else float(np.sum(y * R))

    def backward():
        """dL/dx; fills the parameter gradients."""
        if is_loss:
            return obj.backward()
        return obj.backward(loss.backward() if loss is not None else R)

    forward()
    dx = backward()
    checks = [("x", x, dx)] + [(name, p, g.copy()) for name, p, g in _named_params(obj)]

    errors, worst = {}, (0.0, "nothing checked")
    for name, array, analytic in checks:
        flat = array.reshape(-1)                       # a view: perturbing it perturbs `array`
        idx = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            idx = rng.choice(flat.size, max_checks, replace=False)
        array_worst = 0.0
        for i in idx:
            numeric = _central_difference(forward, flat, i, h)
            a = analytic.reshape(-1)[i]
            err = abs(a - numeric) / max(abs(a) + abs(numeric), floor)
            if err > array_worst:
                array_worst = err
            if err > worst[0] or worst[1] == "nothing checked":
                worst = (err, f"{name}[{', '.join(map(str, np.unravel_index(i, array.shape)))}]")
        errors[name] = array_worst
    return GradcheckResult(float(worst[0]), worst[1], errors)


def numeric_gradient(f, x, h=1e-5):
    """Central differences of a scalar function f() with respect to every element of x.

    f takes no arguments and reads the float64 array x, which is perturbed in place one
    element at a time and restored: dL/dx_i ~ (f(x_i + h) - f(x_i - h)) / (2h).
    Returns an array of x's shape. For learning and small arrays (2 calls of f per element).
    """
    if not (isinstance(x, np.ndarray) and x.dtype == np.float64 and x.flags.c_contiguous):
        raise TypeError("numeric_gradient: x must be a C-contiguous float64 array (it is "
                        f"perturbed in place), got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    flat = x.reshape(-1)                       # a view: perturbing it perturbs x
    return np.array([_central_difference(f, flat, i, h) for i in range(x.size)]).reshape(x.shape)


def _central_difference(f, flat, i, h):
    """(f() with flat[i] + h  minus  f() with flat[i] - h) / 2h; flat[i] is restored."""
    orig = flat[i]
    flat[i] = orig + h
    plus = f()
    flat[i] = orig - h
    minus = f()
    flat[i] = orig
    return (plus - minus) / (2 * h)
