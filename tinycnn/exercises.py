"""Check an exercise from docs/exercises, on your copy of it
(`mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/`):

    python -m tinycnn.exercises ~/tinycnn-exercises/<name>.py

Each exercise file defines one backward function (its name is the file's name). The checker
runs it on a few small random problems and, for every array it returns, prints one line:

    PASS dW   finite differences 3.1e-11   tinycnn 2.2e-16

- "finite differences": the worst relative error against central differences in float64
  (tinycnn.gradcheck, with your function as the layer's backward pass). A right formula
  gives 1e-12 to 4e-7 on these cases; a wrong one usually 1e-2 or more. Pass: below 1e-6.
- "tinycnn": the worst relative error against tinycnn's own backward pass (reference
  kernels), same inputs, float64. Only rounding differs: pass below 1e-9. A FAIL here adds
  a line naming the element furthest from tinycnn's, with both values: a place to look.
  (The two checks use different random upstream gradients, so their sizes differ.)

Exit status 0 when every check passes, 1 when one fails (or the function is not written
yet), 2 when the file cannot be used at all.
"""
import argparse
import copy
import importlib.util
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import get_backend, set_backend
from .fileutil import describe_non_file
from .gradcheck import gradcheck
from .layers import AvgPool2D, BatchNorm1D, Conv2D, Dense, MaxPool2D, Sigmoid
from .losses import SoftmaxCrossEntropy

FD_TOL = 1e-6          # against finite differences (the tolerance of tests/test_layers.py)
TINYCNN_TOL = 1e-9     # against tinycnn's own float64 backward pass: rounding only
FLOOR = 1e-4           # relative errors divide by max(|a| + |b|, FLOOR), as gradcheck does


@dataclass
class Exercise:
    chapter: str       # where the maths is derived
    signature: str     # what the learner writes
    outputs: tuple     # names of the returned arrays, in order; the first is the input's
    cases: object      # rng -> [(layer or loss, x, labels or None)]
    call: object       # (fn, layer, x, dy or labels) -> what fn returns
    # what a gradient right but for a constant factor usually means here
    scale_hint: str = "a sum where a mean belongs, or a missing or extra /N?"


def _well_separated(rng, shape):
    """Distinct values 0.01 apart, shuffled: no max-pool window has a near tie."""
    n = int(np.prod(shape))
    return rng.permutation(np.arange(n) - n / 2).reshape(shape) * 0.01


def _seeded(layer, rng):
    """Random parameters (biases and batch-norm scales too, so that none is trivially 0 or 1)."""
    layer.reset_parameters(rng)
    for key, p in layer.params.items():
        if key in ("b", "beta", "gamma"):
            p[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape)
    return layer


def _dense_cases(rng):
    return [(_seeded(Dense(d, m), rng), rng.standard_normal((n, d)), None)
            for n, d, m in [(2, 3, 4), (4, 5, 3), (1, 6, 2)]]


def _sigmoid_cases(rng):
    return [(Sigmoid(), rng.standard_normal(shape) * 3, None)
            for shape in [(2, 3), (4, 5), (2, 3, 4, 4)]]


def _softmax_ce_cases(rng):
    return [(SoftmaxCrossEntropy(), rng.standard_normal((n, k)) * 3, rng.integers(0, k, n))
            for n, k in [(2, 3), (5, 4), (3, 10)]]


def _conv_cases(rng):
    shapes = [  # N, C, F, H, W, kernel, stride, padding
        (2, 2, 3, 7, 6, 3, 2, 0), (1, 3, 2, 6, 6, 3, 2, 1), (2, 1, 2, 5, 7, 2, 1, 1)]
    return [(_seeded(Conv2D(C, F, k, stride=s, padding=p), rng),
             rng.standard_normal((N, C, H, W)), None)
            for N, C, F, H, W, k, s, p in shapes]


def _winograd_cases(rng):
    """3x3, stride-1, unpadded convolutions with an even output: whole 2x2 tiles. The last
    case's 6x6 input has 2x2 tiles whose 4x4 input tiles overlap."""
    shapes = [(2, 1, 1, 4), (2, 3, 2, 4), (1, 2, 3, 6)]   # N, C, F, H (= W)
    return [(_seeded(Conv2D(C, F, 3), rng), rng.standard_normal((N, C, H, H)), None)
            for N, C, F, H in shapes]


def _pool_cases(cls):
    def cases(rng):
        return [(cls(k, s), _well_separated(rng, shape), None) for shape, k, s in
                [((2, 3, 4, 4), 2, 2), ((1, 2, 7, 6), 3, 2), ((2, 1, 5, 5), 2, 1)]]
    return cases


def _batchnorm_cases(rng):
    return [(_seeded(BatchNorm1D(d), rng), rng.standard_normal((n, d)) * 2 + 1, None)
            for n, d in [(4, 3), (8, 2), (3, 5)]]


EXERCISES = {
    "dense_backward": Exercise(
        "02-dense.md", "dense_backward(x, W, b, dy) -> (dx, dW, db)", ("dx", "dW", "db"),
        _dense_cases, lambda fn, layer, x, dy: fn(x, layer.params["W"], layer.params["b"], dy)),
    "sigmoid_backward": Exercise(
        "03-activations.md", "sigmoid_backward(x, dy) -> dx", ("dx",),
        _sigmoid_cases, lambda fn, layer, x, dy: fn(x, dy),
        "the derivative is s * (1 - s): a factor of 2, or a /N that does not belong here?"),
    "softmax_cross_entropy_backward": Exercise(
        "04-softmax-cross-entropy.md", "softmax_cross_entropy_backward(logits, labels) -> dlogits",
        ("dlogits",), _softmax_ce_cases, lambda fn, loss, logits, labels: fn(logits, labels)),
    "conv2d_backward": Exercise(
        "05-conv2d.md", "conv2d_backward(x, W, dy, stride, padding) -> (dx, dW, db)",
        ("dx", "dW", "db"), _conv_cases,
        lambda fn, layer, x, dy: fn(x, layer.params["W"], dy, layer.stride[0], layer.padding[0])),
    "winograd_conv2d_backward": Exercise(
        "11-winograd.md", "winograd_conv2d_backward(x, W, dy) -> (dx, dW, db)",
        ("dx", "dW", "db"), _winograd_cases, lambda fn, layer, x, dy: fn(x, layer.params["W"], dy)),
    "maxpool2d_backward": Exercise(
        "06-pooling.md", "maxpool2d_backward(x, dy, kernel, stride) -> dx", ("dx",),
        _pool_cases(MaxPool2D),
        lambda fn, layer, x, dy: fn(x, dy, layer.kernel_size[0], layer.stride[0])),
    "avgpool2d_backward": Exercise(
        "06-pooling.md", "avgpool2d_backward(x, dy, kernel, stride) -> dx", ("dx",),
        _pool_cases(AvgPool2D),
        lambda fn, layer, x, dy: fn(x, dy, layer.kernel_size[0], layer.stride[0]),
        "a window's mean divides by its area, kernel * kernel: a /kernel, or no division?"),
    "batchnorm_backward": Exercise(
        "07-batchnorm.md", "batchnorm_backward(x, gamma, dy, eps) -> (dx, dgamma, dbeta)",
        ("dx", "dgamma", "dbeta"), _batchnorm_cases,
        lambda fn, layer, x, dy: fn(x, layer.params["gamma"], dy, layer.eps)),
}


class ExerciseError(Exception):
    """The learner's function failed or returned something unusable: one line explains."""

    def __init__(self, message, array=None):
        super().__init__(message)
        self.array = array


def _describe(obj, x, winograd=False):
    """The case line. It says when pooling windows or Winograd's input tiles overlap: where
    an `=` in place of `+=` first goes wrong."""
    if isinstance(obj, SoftmaxCrossEntropy):
        return f"SoftmaxCrossEntropy() on logits of shape {x.shape}"
    overlap = ""
    if isinstance(obj, (MaxPool2D, AvgPool2D)) and obj.stride[0] < obj.kernel_size[0]:
        overlap = " (its windows overlap: an input can get gradient from several)"
    elif winograd and x.shape[-1] > 4:
        overlap = " (several 2x2 output tiles, whose 4x4 input tiles overlap)"
    return f"{obj!r} on x of shape {x.shape}{overlap}"


def _learner_error(err, path):
    """One line for an exception raised inside the learner's file: type, message, line."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if Path(f.filename).resolve() == path.resolve()]
    where = f" ({path.name}, line {frames[-1].lineno})" if frames else ""
    if isinstance(err, SystemExit):      # a leftover from trying the file out: the check would stop
        return (f"exit() or sys.exit(){where}: remove it (the checker calls your function itself; an "
                "exit would end the check before it has checked anything)")
    return f"{type(err).__name__}: {err}{where}"


def _run(exercise, fn, path, obj, x, dy_or_labels):
    """fn's arrays as a dict name -> float64 array, each checked for its expected shape."""
    params = getattr(obj, "params", {})
    expected = {exercise.outputs[0]: x.shape, **{f"d{k}": p.shape for k, p in params.items()}}
    try:      # on copies: a function that writes into its inputs cannot change the check
        result = exercise.call(fn, copy.deepcopy(obj), x.copy(), dy_or_labels.copy())
    except NotImplementedError:
        raise
    except (Exception, SystemExit) as err:
        raise ExerciseError(f"ERROR your function raised {_learner_error(err, path)}") from None
    if result is None:
        raise ExerciseError(f"FAIL {exercise.outputs[0]}: the function returned None "
                            "(is a `return` missing?)", exercise.outputs[0])
    if len(exercise.outputs) == 1:
        result = (result,)
    if not isinstance(result, tuple) or len(result) != len(exercise.outputs):
        got = (f"{len(result)} values" if isinstance(result, tuple)
               else f"one {type(result).__name__}")
        raise ExerciseError(f"FAIL {exercise.outputs[0]}: the function must return "
                            f"{', '.join(exercise.outputs)} (a tuple when more than one); "
                            f"it returned {got}", exercise.outputs[0])
    arrays = {}
    for name, value in zip(exercise.outputs, result):
        value = _real_array(name, value)
        if value.shape != expected[name]:
            raise ExerciseError(f"FAIL {name}: your array has shape {value.shape}, expected "
                                f"{expected[name]} (a gradient has the shape of what it is "
                                "the gradient of)", name)
        arrays[name] = value
    return arrays


def _real_array(name, value):
    """value as a float64 array, or a FAIL naming what it is instead (text, ragged lists,
    complex numbers: float64 would keep only their real part, with a warning, and pass)."""
    try:
        kind = "U" if isinstance(value, str) else np.asarray(value).dtype.kind
    except (ValueError, TypeError):          # NumPy refuses ragged lists outright
        kind = "O"
    if kind not in "biuf":
        what = {"c": "complex numbers", "U": "text", "S": "bytes", "O": "something that is not an "
                "array of numbers (ragged lists, or objects)"}.get(kind, f"an array of dtype kind {kind!r}")
        raise ExerciseError(f"FAIL {name}: your function returned {what} "
                            f"({type(value).__name__}), not an array of real numbers", name)
    return np.asarray(value, dtype=np.float64)


def _with_learner_backward(obj, backward, exercise_input_name):
    """A copy of obj (a layer or the loss) whose backward pass is backward(itself, x, dy);
    exercise_input_name names the input's gradient in what backward returns."""
    class Learner(type(obj)):
        def forward(self, x, *args, **kwargs):
            self.learner_x = x
            return super().forward(x, *args, **kwargs)

        def backward(self, dy=None):
            grads = backward(self, self.learner_x, dy)
            for key in getattr(self, "params", {}):
                self.grads[key][...] = grads[f"d{key}"]
            return grads[exercise_input_name]

    learner = Learner.__new__(Learner)
    learner.__dict__.update(obj.__dict__)
    return learner


def _tinycnn_gradients(obj, x, labels, rng):
    """tinycnn's own backward pass in float64 for a random dy (or the loss's labels).
    Returns (dy or labels, dict name -> gradient)."""
    if labels is not None:
        obj.forward(x, labels)
        return labels, {"dlogits": obj.backward()}
    y = obj.to(np.float64).forward(x, training=True)
    dy = rng.standard_normal(y.shape)
    dx = obj.backward(dy)
    return dy, {"dx": dx, **{f"d{k}": g.copy() for k, g in obj.grads.items()}}


def _relative_errors(a, b):
    return np.abs(a - b) / np.maximum(np.abs(a) + np.abs(b), FLOOR)


def _relative_error(a, b):
    return float(np.max(_relative_errors(a, b), initial=0.0))


def _worst_element(name, mine, theirs):
    """How many elements are wrong, and where mine is furthest from tinycnn's array with both
    values there: a place to look (a few wrong elements where windows overlap suggest an
    `=` where `+=` belongs)."""
    errors = _relative_errors(mine, theirs)
    index = np.unravel_index(np.argmax(errors), mine.shape)
    where = ", ".join(str(int(i)) for i in index)
    wrong = int((errors >= TINYCNN_TOL).sum())
    return (f"{wrong} of {errors.size} elements differ; worst at {name}[{where}]: yours {mine[index]:.4g}, "
            f"tinycnn's {theirs[index]:.4g}")


def _constant_ratio(mine, theirs):
    """k when mine == k * theirs for every element (k not 1; to 1e-6), else None: a wrong
    scale has one pattern, and naming it says more than one worst element does."""
    nonzero = theirs != 0
    if not nonzero.any() or np.any(mine[~nonzero] != 0):
        return None
    ratios = mine[nonzero] / theirs[nonzero]
    k = float(np.median(ratios))
    if abs(k - 1) < 1e-6 or k == 0 or np.max(np.abs(ratios - k)) > 1e-6 * abs(k):
        return None
    return k


@contextmanager
def _reference_kernels():
    """tinycnn's own gradients come from the reference (NumPy) kernels: nothing to compile."""
    previous = get_backend()
    set_backend("numpy")
    try:
        yield
    finally:
        set_backend(previous)


def check(exercise, fn, path, seed=0):
    """Print one PASS/FAIL line per array and case; returns the names of the failed arrays.
    Raises NotImplementedError if fn does (a stub not filled in yet)."""
    failed = []
    rng = np.random.default_rng(seed)
    for number, (obj, x, labels) in enumerate(exercise.cases(rng), 1):
        print(f"case {number}: {_describe(obj, x, exercise is EXERCISES['winograd_conv2d_backward'])}")
        dy_or_labels, reference = _tinycnn_gradients(obj, x, labels, rng)
        try:
            mine = _run(exercise, fn, path, obj, x, dy_or_labels)
        except ExerciseError as err:
            print(f"  {err}")
            return failed + [err.array or "your function raised an error"]
        learner = _with_learner_backward(obj, lambda layer, x, dy: _run(
            exercise, fn, path, layer, x, dy if labels is None else labels), exercise.outputs[0])
        by_fd = gradcheck(learner, x, labels=labels).errors
        for name in exercise.outputs:
            fd_err = by_fd["x" if name == exercise.outputs[0] else name[1:]]
            ours = _relative_error(mine[name], reference[name])
            ok = fd_err < FD_TOL and ours < TINYCNN_TOL
            if not ok:
                failed.append(name)
            print(f"  {'PASS' if ok else 'FAIL'} {name:<6} finite differences {fd_err:.1e}"
                  f"{'' if fd_err < FD_TOL else ' (too large)'}   tinycnn {ours:.1e}"
                  f"{'' if ours < TINYCNN_TOL else ' (too large)'}")
            if ours >= TINYCNN_TOL:
                print(f"       {_worst_element(name, mine[name], reference[name])}")
                scale = _constant_ratio(mine[name], reference[name])
                if scale == -1:
                    print("       yours is -1 x tinycnn's everywhere: right but for the sign")
                elif scale is not None:
                    print(f"       yours is {scale:.4g} x tinycnn's everywhere: right but for a constant factor "
                          f"({exercise.scale_hint})")
    return failed


def _load(path, name):
    """The function `name` from the file at path, or an ExerciseError saying why not."""
    spec = importlib.util.spec_from_file_location(f"exercise_{name}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as err:
        raise ExerciseError(f"could not load {path}: {_learner_error(err, path)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ExerciseError(f"{path} defines no function {name}(...); the exercise asks for "
                            f"{EXERCISES[name].signature}")
    return fn


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m tinycnn.exercises",
        description="Check an exercise: its name is the file's name. Exercises: "
                    + ", ".join(sorted(EXERCISES)))
    parser.add_argument("path", help="e.g. ~/tinycnn-exercises/dense_backward.py, a copy of docs/exercises/dense_backward.py")
    args = parser.parse_args(argv)
    path = Path(args.path)
    name = path.stem
    if name not in EXERCISES:
        print(f"{parser.prog}: error: {path.name}: not an exercise name; the exercises are "
              f"{', '.join(sorted(EXERCISES))} (the file name says which one)", file=sys.stderr)
        return 2
    if not path.is_file():
        kind = describe_non_file(path)
        what = f"is {kind}, not a Python file" if kind else "no such file"
        print(f"{parser.prog}: error: {path}: {what} (the stub to copy and fill in is docs/exercises/{name}.py)",
              file=sys.stderr)
        return 2
    exercise = EXERCISES[name]
    print(f"Checking {exercise.signature}  from {path}  (derived in docs/{exercise.chapter})")
    print(f"Expected errors: below {FD_TOL:.0e} against finite differences (a right formula "
          f"gives 1e-12 to 4e-7), below {TINYCNN_TOL:.0e} against tinycnn; a wrong formula is "
          "usually off by 1e-2 or more.")
    try:
        fn = _load(path, name)
        with _reference_kernels():
            failed = check(exercise, fn, path)
    except NotImplementedError as err:
        print(f"not written yet: {name} in {path} raises NotImplementedError.")
        if str(err):
            print(f"hint: {err}")
        print(f"Fill it in, then run: python -m tinycnn.exercises {path}")
        return 1
    except ExerciseError as err:
        print(f"  {err}")
        return 1
    except SystemExit as err:        # from the learner's function, called inside the gradient check
        print(f"  ERROR your function raised {_learner_error(err, path)}")
        return 1
    except KeyboardInterrupt:        # the way out of a loop that does not end: one line, as tinycnn's
        print("\ninterrupted", file=sys.stderr)
        return 130
    if failed:
        print(f"failed: {', '.join(dict.fromkeys(failed))} (see above)")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
