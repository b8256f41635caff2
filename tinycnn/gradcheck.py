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
import sys
from dataclasses import dataclass, field

import numpy as np

from .backend import BACKENDS, get_backend, set_backend
from .layers import (AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LeakyReLU,
                     MaxPool2D, ReLU, Sigmoid, Tanh)
from .losses import SoftmaxCrossEntropy
from .model import Sequential


@dataclass
class GradcheckResult:
    max_rel_error: float          # the worst element over all checked arrays
    where: str                    # which array and index, e.g. "conv2d_0.W[3, 0, 1, 2]"
    errors: dict = field(default_factory=dict)   # array name -> its worst relative error
    wheres: dict = field(default_factory=dict)   # array name -> index of that worst error, "[1, 0]"

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
    It checks the current backend's kernels. On "numba", the first check of a layer compiles
    float64 versions of its fast kernels (10-40 s once; a line on stderr says so), which
    set_backend("numpy") skips.
    """
    from .warmup import saying_when_compiling
    with saying_when_compiling(lambda: print(
            "gradcheck: Numba is compiling float64 kernels (once: it caches them; "
            'tinycnn.set_backend("numpy") checks the reference kernels without compiling) ...',
            file=sys.stderr, flush=True)):
        return _gradcheck(obj, x, labels, loss, training, h, floor, seed, max_checks)


def _gradcheck(obj, x, labels, loss, training, h, floor, seed, max_checks):
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

    errors, wheres, worst = {}, {}, (0.0, "nothing checked")
    for name, array, analytic in checks:
        flat = array.reshape(-1)                       # a view: perturbing it perturbs `array`
        idx = np.arange(flat.size)
        if max_checks is not None and flat.size > max_checks:
            idx = rng.choice(flat.size, max_checks, replace=False)
        array_worst, array_where = 0.0, "[]"
        for i in idx:
            numeric = _central_difference(forward, flat, i, h)
            a = analytic.reshape(-1)[i]
            err = abs(a - numeric) / max(abs(a) + abs(numeric), floor)
            if not np.isfinite(err):      # a NaN or inf gradient: the worst error, not none (NaN > x is False)
                err = np.inf
            index = f"[{', '.join(map(str, np.unravel_index(i, array.shape)))}]"
            if err > array_worst or i == idx[0]:
                array_worst, array_where = err, index
            if err > worst[0] or worst[1] == "nothing checked":
                worst = (err, f"{name}{index}")
        errors[name], wheres[name] = array_worst, array_where
    return GradcheckResult(float(worst[0]), worst[1], errors, wheres)


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


# -- a readable report: every layer type, the loss and a small model, on each backend ---------

REPORT_TOLERANCE = 1e-6     # a row passes below this (float64, h = 1e-5: see REPORT_FOOTER)

REPORT_FOOTER = """\
How to read it. Each row is one array of one layer: the worst relative error over its
elements, |analytic - numeric| / max(|analytic| + |numeric|, 1e-4), and the element where
it occurred. The numeric gradient is a central difference (L(t + h) - L(t - h)) / 2h in
float64 with h = 1e-5. It is off by two small amounts: truncation, h^2 / 6 times the third
derivative (~1e-11), and rounding, about 1e-16 * |L| / h (~1e-11), which is largest
relative to the smallest gradient elements (down to the 1e-4 floor: ~1e-7). So a correct
gradient shows below about 5e-7, mostly 1e-9 to 1e-11. A bug (a missing term, a transposed
index, a wrong scale or sign) shows 1e-2 to 1, and the index says where to look. Rows pass
below 1e-6. Kinks are the one exception: an input within h of one (a ReLU input near 0,
two near-equal values in a max-pool window) can show up to ~1 with a correct layer,
because L(t + h) and L(t - h) fall on two sides of it; these inputs keep their distance."""


@dataclass
class ReportCase:
    """One object to check: a layer, a loss (with labels) or a model (with labels: its loss)."""
    label: str
    obj: object
    x: np.ndarray
    labels: np.ndarray = None
    training: bool = True
    max_checks: int = None       # elements checked per array (None: all)


@dataclass
class ReportRow:
    backend: str
    layer: str                   # the case's label
    array: str                   # "x", "W", "b", "gamma", ... ("conv2d_0.W" in a model)
    error: float                 # worst relative error over the checked elements
    where: str                   # that element's index, e.g. "[1, 0, 2, 2]"
    passed: bool


def _away_from_zero(rng, shape, margin=0.05):
    """Normal samples pushed at least `margin` away from 0 (the ReLU's kink)."""
    x = rng.standard_normal(shape)
    return x + np.sign(x) * margin


def _well_separated(rng, shape, gap=0.01):
    """Distinct values at least `gap` apart, shuffled: no near ties in a max-pool window."""
    n = int(np.prod(shape))
    return rng.permutation(np.arange(n) - n / 2).reshape(shape) * gap


def _seeded(layer, rng):
    layer.reset_parameters(rng)
    return layer


def _batchnorm(layer, rng):
    """A batch norm layer with parameters and running statistics that are not 1s and 0s."""
    F = layer.num_features
    layer.params["gamma"][...] = rng.uniform(0.5, 1.5, F)
    layer.params["beta"][...] = rng.standard_normal(F)
    layer.state["running_mean"][...] = rng.standard_normal(F)
    layer.state["running_var"][...] = rng.uniform(0.5, 2, F)
    return layer


def report_cases(seed=0):
    """The report's default cases: every layer type in tinycnn.layers.LAYER_TYPES (some in
    two configurations), the loss and a small model in which every kind of kernel runs
    (on the fast backend its first convolution and pooling run fused)."""
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal
    model = Sequential([Conv2D(1, 3, 3, padding=1, activation="relu"), MaxPool2D(2),
                        Conv2D(3, 4, 3), BatchNorm2D(4), ReLU(), AvgPool2D(2), Flatten(),
                        Dropout(0.25), Dense(4, 5)], seed=seed)
    return [
        ReportCase("Conv2D 3x2 stride 2,1 pad 1", _seeded(Conv2D(2, 3, (3, 2), (2, 1), 1), rng),
                   normal((2, 2, 6, 5))),
        ReportCase("Conv2D 3x3 relu pad 1", _seeded(Conv2D(2, 3, 3, padding=1, activation="relu"), rng),
                   normal((2, 2, 5, 5))),
        ReportCase("MaxPool2D 2x2", MaxPool2D(2), _well_separated(rng, (2, 2, 6, 6))),
        ReportCase("MaxPool2D 3x3 stride 2", MaxPool2D(3, 2), _well_separated(rng, (2, 2, 7, 7))),
        ReportCase("AvgPool2D 3x3 stride 2", AvgPool2D(3, 2), normal((2, 2, 7, 7))),
        ReportCase("Dense", _seeded(Dense(5, 4), rng), normal((3, 5))),
        ReportCase("Flatten", Flatten(), normal((2, 2, 3, 3))),
        ReportCase("ReLU", ReLU(), _away_from_zero(rng, (3, 5))),
        ReportCase("LeakyReLU 0.1", LeakyReLU(0.1), _away_from_zero(rng, (3, 5))),
        ReportCase("Sigmoid", Sigmoid(), normal((3, 5)) * 2),
        ReportCase("Tanh", Tanh(), normal((3, 5))),
        ReportCase("Dropout 0.5", Dropout(0.5), normal((3, 8))),
        ReportCase("BatchNorm1D train", _batchnorm(BatchNorm1D(4), rng), normal((6, 4)) * 2 + 1),
        ReportCase("BatchNorm2D train", _batchnorm(BatchNorm2D(3), rng), normal((3, 3, 4, 4)) * 2 + 1),
        ReportCase("BatchNorm2D eval", _batchnorm(BatchNorm2D(3), rng), normal((3, 3, 4, 4)) * 2 + 1,
                   training=False),
        ReportCase("SoftmaxCrossEntropy", SoftmaxCrossEntropy(), normal((4, 5)) * 3,
                   labels=rng.integers(0, 5, 4)),
        ReportCase("model + loss", model, normal((2, 1, 8, 8)), labels=rng.integers(0, 5, 2),
                   max_checks=12),
    ]


def gradcheck_report(backends=None, cases=None, print_fn=print, seed=0):
    """Gradient-check every case on every backend; print a table per backend and return the
    rows (ReportRow), one per checked array.

    backends: names from tinycnn.backend.BACKENDS (default: all of them)
    cases:    ReportCase list (default: report_cases(seed))
    print_fn: where the table goes (None: print nothing)
    """
    backends = BACKENDS if backends is None else tuple(backends)
    cases = report_cases(seed) if cases is None else cases
    previous, rows = get_backend(), []
    try:
        for backend in backends:
            set_backend(backend)
            for case in cases:
                result = gradcheck(case.obj, case.x, labels=case.labels, training=case.training,
                                   seed=seed, max_checks=case.max_checks)
                for array, error in result.errors.items():
                    name = "logits" if isinstance(case.obj, SoftmaxCrossEntropy) else array
                    rows.append(ReportRow(backend, case.label, name, error, result.wheres[array],
                                          error < REPORT_TOLERANCE))
    finally:
        set_backend(previous)
    if print_fn is not None:
        print_fn(format_report(rows))
    return rows


def format_report(rows):
    """The rows as text: one table per backend, a summary line and the footer."""
    head = ("layer", "array", "worst rel. error", "where", "expected", "result")
    lines = []
    for backend in dict.fromkeys(row.backend for row in rows):
        table = [(r.layer, r.array, f"{r.error:.1e}", r.where, f"< {REPORT_TOLERANCE:.0e}",
                  "pass" if r.passed else "FAIL") for r in rows if r.backend == backend]
        widths = [max(len(str(t[k])) for t in [head] + table) for k in range(len(head))]
        fmt = lambda t: "  ".join(f"{v:<{w}}" for v, w in zip(t, widths)).rstrip()
        lines += [f"backend {backend!r}", fmt(head), fmt(["-" * w for w in widths])]
        lines += [fmt(t) for t in table] + [""]
    failed = [r for r in rows if not r.passed]
    lines.append(f"{len(rows)} arrays checked, {len(failed)} failed"
                 + "".join(f"\n  FAIL {r.backend}: {r.layer} {r.array} {r.error:.1e} at {r.where}"
                           for r in failed))
    return "\n".join(lines + ["", REPORT_FOOTER])
