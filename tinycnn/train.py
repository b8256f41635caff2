"""The training loop: mini-batches, validation, history, checkpoints, resume.

    history = fit(model, SoftmaxCrossEntropy(), Adam(model), x, y, epochs=3,
                  validation=(x_val, y_val), schedule=OneCycle(3e-3), checkpoint="ckpt.npz")

One step: forward in training mode, the loss, backward (gradients land in each layer's
`grads`), then optimizer.step(). The order of examples is a seeded permutation per epoch,
so a fixed seed on the same machine gives the same loss curve and the same weights, and a
run resumed from a checkpoint reaches exactly the weights of an uninterrupted one.
"""
import itertools
import math
import os
import signal
import sys
import threading
import time
import types

import numpy as np

from . import warmup
from .checks import class_labels, whole_number
from .fileutil import check_writable, describe_non_file
from .io import load_checkpoint, save_checkpoint
from .layers.base import is_real, is_whole
from .optim import Optimizer
from .runtime import one_thread_pool

try:
    from tqdm.auto import tqdm
except ImportError:
    tqdm = None


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during fit(); `checkpoint` is where the state was saved, `epoch` and `step`
    (from 1) where training stopped."""

    def __init__(self, message, checkpoint, epoch=None, step=None):
        super().__init__(message)
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


# One entry per epoch each; "lr" is the learning rate of the epoch's last step (a schedule
# changes it every step), "seconds" and "images_per_second" count training only.
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds",
                "images_per_second")
GRAD_NORM_TRACE_EVERY = 10     # history["grad_norm_steps"] keeps every 10th step's norms


def gradient_norms(model):
    """{layer name: L2 norm of the gradient of all its parameters together}, for the
    layers with parameters, from the gradients the last backward pass left in `grads`:

        ||g_layer|| = sqrt( sum over the layer's arrays (W, b, gamma, ...) of sum_i g_i^2 )

    Why watch it: by the chain rule, layer l's gradient is the loss gradient times the
    Jacobians of every layer after it, dL/dW_l = dL/dy_L . dy_L/dy_(L-1) ... dy_(l+1)/dy_l
    . dy_l/dW_l. If those factors shrink the gradient (a sigmoid's derivative is at most
    1/4), the norms fall geometrically towards the first layer: vanishing gradients. If
    they grow, they explode. One number per layer, not per array (W and b together): the
    layer is the unit the gradient passes through, and one line per layer keeps the
    figure (plotting.plot_gradient_norms) readable.
    np.vdot(g, g) is sum_i g_i^2 as one BLAS dot product, so the whole call takes 17-25 us
    for fastnet's 153,754 gradients: 0.02% of the CPU time of a training step at batch 256
    (python benchmarks/bench_grad_norms.py; busy shared machine). Cheap enough for fit() to
    measure it at every step.
    """
    return {name: math.sqrt(sum(float(np.vdot(g, g)) for g in layer.grads.values()))
            for name, layer in zip(model.names, model.layers) if layer.grads}


def _norm_history(model):
    """Empty history["grad_norm"] and history["grad_norm_steps"] for `model`."""
    names = list(gradient_norms(model))
    return {"grad_norm": {name: [] for name in names},
            "grad_norm_steps": {"epoch": [], **{name: [] for name in names}}}


def _epoch_sums(model):
    """The running totals of one epoch (saved in checkpoints, so a resumed epoch goes on)."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "steps": 0,
            "grad_norm": {name: 0.0 for name in gradient_norms(model)}}


def evaluate(model, loss, x, y, batch_size=256):
    """(mean loss, accuracy) of `model` on (x, y), in eval mode and in batches."""
    x, y = _check_data(model, x, y, "x", caller="evaluate")
    _check_labels(model, x, y, "y", caller="evaluate")
    whole_number(batch_size, 1, "evaluate", "batch_size")
    return _evaluate(model, loss, x, y, batch_size)


def _evaluate(model, loss, x, y, batch_size=256, caller="evaluate"):
    """evaluate without the checks: fit checked its validation data once, not every epoch.
    Slices of batch_size, fewer for a model whose arrays are large per example (as in
    predict_proba: at most modelcheck.MAX_SLICE_VALUES values in one array)."""
    total_loss, correct = 0.0, 0
    step = model.inference_slice(batch_size, x.shape[1:])
    for start in range(0, len(x), step):
        xb, yb = x[start:start + step], y[start:start + step]
        logits = model.forward(xb, training=False)      # forward holds the thread policy
        # (argmax of a NaN row is 0: the accuracy would look like a real one)
        if not np.isfinite(logits).all():
            bad = ~np.isfinite(logits).all(axis=1)
            raise FloatingPointError(
                f"{caller}: the model's output is NaN or infinite for {int(bad.sum())} of the {len(xb)} "
                f"inputs from index {start} (first: index {start + int(np.argmax(bad))}); its weights "
                "are broken (NaN or infinite), or too large for the input")
        total_loss += loss.forward(logits, yb) * len(xb)
        correct += int((logits.argmax(axis=1) == yb).sum())
    return total_loss / len(x), correct / len(x)


class _InterruptFlag:
    """Turn the first Ctrl-C into a flag checked between steps, so the checkpoint is taken
    at a clean step boundary; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.raised:
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _snapshot(model):
    return [({k: v.copy() for k, v in l.params.items()}, {k: v.copy() for k, v in l.state.items()})
            for l in model.layers]


def _restore(model, snapshot):
    for layer, (params, state) in zip(model.layers, snapshot):
        for k, v in params.items():
            layer.params[k][...] = v
        for k, v in state.items():
            layer.state[k][...] = v


def _shapes(model):
    """[(layer type, {array name: shape})]: what a checkpoint must match to be resumed."""
    return [(l.name, {k: v.shape for k, v in {**l.params, **l.state}.items()}) for l in model.layers]


def _damaged(path, err):
    return ValueError(f"fit: checkpoint {path}: its training state is incomplete or damaged "
                      f"({type(err).__name__}: {err})")


def _shown(value):
    """A file's value in a message: repr (escapes control characters), at most 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _numbers(field, values):
    """A list of numbers at `field`, or a ValueError."""
    if not isinstance(values, list):
        raise ValueError(f"{field} must be a list, got {_shown(values)}")
    if bad := [v for v in values if not is_real(v)]:
        raise ValueError(f"{field} must hold numbers, got {_shown(bad[0])}")
    return values


def _per_layer(field, table, layers):
    """A dict keyed by exactly the model's layers with parameters, or a ValueError."""
    if not isinstance(table, dict) or set(table) != layers:
        raise ValueError(f"{field} must have one entry per layer with parameters "
                         f"({', '.join(sorted(layers))}), got {_shown(table)}")
    return table


def _check_resumed(model, state, history, sums):
    """The rest of a checkpoint's training state, every field fit() (and run.py) reads,
    checked before anything is changed or trained: a damaged or hand-edited file is refused
    now, naming the field, not by a crash after minutes of work (sums.seen 0 divides the
    epoch's loss; a list where a dict goes fails at the first step; a string best_val_loss at
    the first validation; a short history.seconds in run.py's summary). `history` and `sums`
    are the file's over the defaults (a checkpoint from before the gradient norms were
    recorded lacks them). Raises ValueError naming the field."""
    for key in ("epoch", "step", "epochs", "steps_per_epoch", "best_epoch", "bad_epochs"):
        if not is_whole(state[key]):
            raise ValueError(f"{key} must be a whole number, got {_shown(state[key])}")
    epoch, step, epochs, steps_per_epoch = (state[k] for k in ("epoch", "step", "epochs", "steps_per_epoch"))
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs and steps_per_epoch must be >= 1, got {epochs}, {steps_per_epoch}")
    # What the saver writes: (epoch + 1, 0) after each epoch, so (epochs, 0) at the end, and
    # (epoch, step + 1) on Ctrl-C, so step == steps_per_epoch after an epoch's last step
    # (its summary, from sums, is still to do).
    if epoch == epochs and step:
        raise ValueError(f"step must be 0 after the last epoch ({epochs}), got {step}")

    # history: one entry per epoch done (validation: none when there is none)
    for key in HISTORY_KEYS:
        values = _numbers(f"history.{key}", history[key])
        if len(values) != epoch and not (key in ("val_loss", "val_acc") and not values):
            raise ValueError(f"history.{key} must have one entry per epoch done ({epoch}), got {len(values)}")
    if history["epoch"] != list(range(1, epoch + 1)):     # (bounded: its length is epoch)
        raise ValueError(f"history.epoch must count the epochs done (1 to {epoch}), got {_shown(history['epoch'])}")
    if not all(math.isfinite(s) and s > 0 for s in history["seconds"]):    # run.py divides by them
        raise ValueError(f"history.seconds must be > 0 and finite, got {_shown(history['seconds'])}")
    layers = set(gradient_norms(model))
    for name, values in _per_layer("history.grad_norm", history["grad_norm"], layers).items():
        if len(_numbers(f"history.grad_norm.{name}", values)) > epoch:
            raise ValueError(f"history.grad_norm.{name} has {len(values)} entries for {epoch} epochs done")
    traced = history["grad_norm_steps"]
    if not isinstance(traced, dict):
        raise ValueError(f"history.grad_norm_steps must be an object, got {_shown(traced)}")
    _per_layer("history.grad_norm_steps", {k: v for k, v in traced.items() if k != "epoch"}, layers)
    lengths = {len(_numbers(f"history.grad_norm_steps.{k}", traced.get(k))) for k in ("epoch", *layers)}
    if len(lengths) != 1:       # (plotted against each other)
        raise ValueError(f"history.grad_norm_steps: its lists differ in length ({sorted(lengths)})")

    # sums: the running totals of the epoch in progress
    if not (is_real(sums["loss"]) and math.isfinite(sums["loss"])):        # (a loss of one's own may be < 0)
        raise ValueError(f"sums.loss must be a finite number, got {_shown(sums['loss'])}")
    if not (is_real(sums["seconds"]) and math.isfinite(sums["seconds"]) and sums["seconds"] >= 0):
        raise ValueError(f"sums.seconds must be a finite number >= 0, got {_shown(sums['seconds'])}")
    for key in ("correct", "seen", "steps"):
        if not (is_whole(sums[key]) and sums[key] >= 0):
            raise ValueError(f"sums.{key} must be a whole number >= 0, got {_shown(sums[key])}")
    # Mid-epoch (step > 0) the sums are divided by at the epoch's end: a real checkpoint has
    # counted the steps it ran (an old one has no steps; its norms restart at the resume).
    needed = ("seen", "seconds") + (("steps",) if "steps" in state["sums"] else ())
    if step and (zero := [k for k in needed if not sums[k]]):
        raise ValueError(f"sums.{zero[0]} is 0 at step {step}; a checkpoint saved after a step counts it")
    if step and "steps" in state["sums"] and sums["steps"] > step:
        raise ValueError(f"sums.steps must be at most step ({step}), got {sums['steps']}")
    if sums["correct"] > sums["seen"]:
        raise ValueError(f"sums.correct ({sums['correct']}) must be at most sums.seen ({sums['seen']})")
    for name, total in _per_layer("sums.grad_norm", sums["grad_norm"], layers).items():
        if not (is_real(total) and math.isfinite(total) and total >= 0):
            raise ValueError(f"sums.grad_norm.{name} must be a finite number >= 0, got {_shown(total)}")

    # best: the lowest validation loss so far (inf before any) and its epoch (-1 before any)
    if not (is_real(state["best_val_loss"]) and not math.isnan(state["best_val_loss"])):
        raise ValueError(f"best_val_loss must be a number, got {_shown(state['best_val_loss'])}")
    if not -1 <= state["best_epoch"] <= epoch:
        raise ValueError(f"best_epoch must be -1 to {epoch}, got {state['best_epoch']}")
    if not 0 <= state["bad_epochs"] <= epoch:
        raise ValueError(f"bad_epochs must be 0 to {epoch}, got {state['bad_epochs']}")


def _free_path(stem, suffix):
    """The first of stem+suffix, stem-2+suffix, ... that does not exist, created empty
    (O_EXCL: a file or link that appears meanwhile is never taken over), so that a save
    there replaces only this placeholder, never a file of the user's."""
    for i in itertools.count(1):
        path = f"{stem}{'' if i == 1 else f'-{i}'}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return path
        except FileExistsError:
            continue


def _check_roles(model, loss, optimizer, validation, schedule):
    """A string or a number where an object belongs (Keras habits: "adam", validation=0.1,
    schedule=1e-3) would fail deep inside the first step with an AttributeError."""
    for what, obj, needs, example in [("loss", loss, ("forward", "backward"), "tinycnn.losses.SoftmaxCrossEntropy()"),
                                      ("optimizer", optimizer, ("step",), "tinycnn.optim.Adam(model, lr=1e-3)")]:
        if not all(callable(getattr(obj, name, None)) for name in needs):
            raise TypeError(f"fit: {what} must be an object with {' and '.join(n + '()' for n in needs)} "
                            f"method{'s' * (len(needs) > 1)}, "
                            f"e.g. {example}; got {type(obj).__name__} {obj!r:.40}")
    if validation is not None and not (isinstance(validation, (tuple, list)) and len(validation) == 2):
        raise TypeError(f"fit: validation must be a pair (x_val, y_val), got {type(validation).__name__} "
                        f"{validation!r:.40}; to hold out part of the training data, split it first "
                        "(tinycnn.datasets.train_val_split)")
    if schedule is not None and not callable(schedule):
        raise TypeError(f"fit: schedule must be a callable (step, total_steps) -> lr, e.g. "
                        f"tinycnn.schedules.OneCycle(3e-3), got {type(schedule).__name__} {schedule!r:.40}; "
                        "for a fixed learning rate, give it to the optimiser and leave schedule=None")


def _check_data(model, x, y, what, caller="fit"):
    """x and y as arrays: as many labels as inputs, not empty, x floating point and finite in
    the model's dtype."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"{caller}: {what} has {len(x)} inputs but {len(y)} labels")
    if len(x) == 0:
        raise ValueError(f"{caller}: {what} is empty")
    if x.dtype.kind != "f":
        raise TypeError(f"{caller}: {what} must be floating point, got {x.dtype}; scale images first "
                        "(model.preprocess(images) applies the model's own recipe)")
    _check_finite(x, f"{caller}: {what}", model.dtype)
    # once here rather than batch by batch (float64 data from images / 255, float16 data,
    # which augmentation's kernels do not take)
    return x.astype(model.dtype, copy=False), y


def _check_finite(x, what, dtype=np.float32):
    """A NaN in the data would show up later as a NaN loss blamed on the learning rate; so
    would a float64 value past the largest float32 (3.4e38), which the model's float32
    forward pass turns into infinity."""
    if np.asarray(x).dtype.kind in "fc":
        flat = x.reshape(len(x), -1)
        bad = ~np.isfinite(flat).all(axis=1)
        if bad.any():
            raise ValueError(f"{what} has NaN or infinite values ({int(bad.sum())} examples, the first "
                             f"at index {int(np.argmax(bad))})")
        limit = np.finfo(dtype).max
        if np.finfo(x.dtype).max > limit:      # (max and min: no temporary array the size of x)
            bad = (flat.max(axis=1) > limit) | (flat.min(axis=1) < -limit)
            if bad.any():
                raise ValueError(f"{what} has values beyond {np.dtype(dtype).name}'s range (+-{limit:.3g}), "
                                 f"the model's dtype, where they become infinite ({int(bad.sum())} examples, "
                                 f"the first at index {int(np.argmax(bad))}); scale the data")


def _check_labels(model, x, y, what, caller="fit"):
    """Integer class labels (N,), each one of the model's outputs: a bad one found now rather
    than at the batch that holds it (after the model has been updated in place) or after the
    first epoch (validation)."""
    try:
        outputs = model.output_shapes(x.shape[1:])[-1]
    except (ValueError, TypeError, AttributeError, NotImplementedError):    # (its forward says why)
        outputs = ()
    classes = outputs[0] if len(outputs) == 1 else None
    class_labels(y, classes, caller, f"{what} labels", f" (the model's {classes} outputs)" if classes else "")


def _check_checkpoint(path):
    """A checkpoint path that cannot be written, found now rather than when the first epoch
    is saved (after minutes of training, as a bare IsADirectoryError)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"fit: checkpoint must be a file path, got {type(path).__name__} {path!r:.40}") from None
    if kind := describe_non_file(path):
        raise ValueError(f"fit: checkpoint {path!s} is {kind}, not a file; give the path of a file "
                         "to write, e.g. checkpoint='run/checkpoint.npz'")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"fit: checkpoint {path!s}: its folder {folder} does not exist; create it "
                         "first (os.makedirs) or choose another path")
    try:
        check_writable(folder)
    except OSError as err:
        raise ValueError(f"fit: checkpoint {path!s}: cannot write in its folder {folder} "
                         f"({err.strerror or err}); choose another path") from None


def _check_optimizer(model, optimizer):
    """An optimiser updates the arrays it was given when it was made. model.to(float64) (or
    reset_parameters) gives the model new ones: an optimiser made before, or made for
    another model, would update arrays the model no longer uses, and training would change
    nothing, without an error. (It may hold a part of the model's arrays: the rest stay
    frozen.) One identity test per array, once."""
    if not isinstance(optimizer, Optimizer):        # (one of one's own: nothing to compare)
        return
    current = {(id(p), id(g)) for _, _, p, g in model.parameters()}
    for key, p, g in optimizer.params:
        if (id(p), id(g)) not in current:
            raise ValueError(f"fit: the optimiser was made for other arrays: its {key} is not this model's "
                             "(a model.to(...) that changes the dtype, or reset_parameters, gives the model new "
                             f"arrays). Make it after model.to(...), or for this model: "
                             f"{type(optimizer).__name__}(model, ...)")


def _scheduled_lr(schedule, global_step, total_steps, epoch, step):
    """The schedule's learning rate for this step, checked: a negative one trains uphill, a
    NaN or infinite one wrecks the weights, all without an error of their own. (0 is fine: a
    step that does not move, as a schedule that decays to 0 ends.)"""
    lr = schedule(global_step, total_steps)
    try:
        value = float(lr)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 <= value < math.inf:
        name = schedule.__name__ if isinstance(schedule, types.FunctionType) else _shown(schedule)
        raise ValueError(f"fit: schedule {name} gave the learning rate {lr!r} for epoch {epoch + 1}, "
                         f"step {step + 1} (called as schedule({global_step}, {total_steps})); a learning rate "
                         "must be a finite number >= 0")
    return value


def _last_good(checkpoint):
    """The end of a TrainingDiverged message: where the last good weights are, if anywhere."""
    return f" The last good checkpoint is {checkpoint}." if checkpoint and os.path.exists(checkpoint) else ""


def _check_weights(model, epoch, lr, checkpoint):
    """The loss is checked before each update, so the last update of a run is never checked
    by it: NaN or infinite weights would be returned (and saved) as a success."""
    for name, layer in zip(model.names, model.layers):
        for key, array in {**layer.params, **layer.state}.items():
            if not np.isfinite(array).all():
                raise TrainingDiverged(f"the weights of {name} ({key}) became NaN or infinite in epoch "
                                       f"{epoch + 1} (lr {lr:g}); try a lower learning rate.{_last_good(checkpoint)}")


TRAIN_FURTHER = ("To train further, fit the model again as a new run: model = tinycnn.load_model(checkpoint), "
                 "then fit(model, ...) with a new optimizer and schedule")


def fit(model, loss, optimizer, x, y, epochs=1, batch_size=128, validation=None, schedule=None,
        seed=0, augment=None, early_stopping=None, keep_best=False, checkpoint=None, resume=None,
        progress=None, log=print):
    """Train `model` and return its history (a dict of per-epoch lists, see HISTORY_KEYS),
    with the gradient's size per layer (see gradient_norms):
        history["grad_norm"]        {layer: [per epoch, the mean over its steps of ||g||]}
        history["grad_norm_steps"]  {"epoch": [epochs done at every GRAD_NORM_TRACE_EVERY-th
                                               step: step / steps per epoch],
                                     layer: [||g|| at that step]}

    x, y:           inputs (N, C, H, W) as the model takes them (float, after
                    model.preprocess) and integer class labels (N,)
    seed:           the order of examples, the augmentation and, for a model made without
                    a seed (Sequential(layers), load_model), dropout's masks: the same call
                    gives the same weights
    validation:     (x_val, y_val), evaluated after every epoch
    schedule:       callable (step, total_steps) -> lr (see tinycnn.schedules); None keeps
                    the optimiser's lr
    augment:        callable (x_batch, rng) -> x_batch applied to each training batch
    early_stopping: stop when the validation loss has not improved for this many epochs
                    (a whole number; None or 0: never)
    keep_best:      at the end, restore the weights of the epoch with the lowest val loss
    checkpoint:     path of a checkpoint written after every epoch (and on Ctrl-C); without
                    one, Ctrl-C saves to the first free name of interrupted-checkpoint.npz,
                    interrupted-checkpoint-2.npz, ... (never over an existing file)
    resume:         path of a checkpoint to continue from: it finishes an interrupted run
                    (same model and optimiser types, data, epochs and batch size); to train
                    a finished model further, fit tinycnn.load_model(path) as a new run
    progress:       show a progress bar (default: when stderr is a terminal)
    log:            where one line per epoch goes (None: silent)
    """
    # Every argument is checked here, before anything is compiled or trained: a mistake found
    # after an epoch has changed the caller's model in place.
    _check_roles(model, loss, optimizer, validation, schedule)
    x, y = _check_data(model, x, y, "training data")
    if validation is not None:
        validation = _check_data(model, *validation, "validation data")
        if validation[0].shape[1:] != x.shape[1:]:
            raise ValueError(f"fit: validation data has examples of shape {validation[0].shape[1:]}, the "
                             f"training data {x.shape[1:]}; prepare both the same way")
    if not all(is_whole(v) for v in (epochs, batch_size)):
        raise ValueError(f"fit: epochs and batch_size must be whole numbers, got {epochs!r}, {batch_size!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"fit: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    if early_stopping is not None and not (is_whole(early_stopping) and early_stopping >= 0):
        raise ValueError(f"fit: early_stopping must be a whole number of epochs >= 1 (None or 0: no "
                         f"early stopping), got {early_stopping!r}")
    whole_number(seed, 0, "fit", "seed")
    if augment is not None and not callable(augment):
        raise TypeError(f"fit: augment must be a callable (x_batch, rng) -> x_batch, e.g. "
                        f"tinycnn.augment.RandomAffine(), or None; got {type(augment).__name__} {augment!r:.40}")
    if (early_stopping or keep_best) and validation is None:
        raise ValueError("fit: early_stopping and keep_best need validation data")
    _check_labels(model, x, y, "training data")
    if validation is not None:
        _check_labels(model, *validation, "validation data")
    if checkpoint:
        _check_checkpoint(checkpoint)
    _check_optimizer(model, optimizer)
    if progress is None:
        progress = sys.stderr.isatty()
    log = log or (lambda *a, **k: None)
    n = len(x)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = epochs * steps_per_epoch
    shuffle_rng = np.random.default_rng(seed)
    augment_rng = np.random.default_rng([seed, 1])
    if model.seed is None:
        # Dropout draws its masks from the model's generator. A model made without a seed
        # (Sequential(layers), load_model) had an unseeded one: the same fit gave other weights.
        model.set_rng(np.random.default_rng([seed, 2]))
    history = {k: [] for k in HISTORY_KEYS}
    history.update(_norm_history(model))
    start_epoch, start_step = 0, 0
    sums = _epoch_sums(model)
    best = {"val_loss": math.inf, "epoch": -1, "weights": None, "bad_epochs": 0}

    if resume is not None:
        saved, opt_state, state = load_checkpoint(resume)
        if _shapes(saved) != _shapes(model):
            raise ValueError(f"fit: checkpoint {resume} holds a different architecture "
                             f"({', '.join(l.name for l in saved.layers)}) from the model being "
                             f"trained ({', '.join(l.name for l in model.layers)}), or other sizes")
        try:
            # (a checkpoint written before the norms were recorded starts them from here)
            history = {**_norm_history(model), **state["history"]}
            sums = {**_epoch_sums(model), **state["sums"]}
            start_epoch, start_step = state["epoch"], state["step"]
            made_with = state["epochs"], state["steps_per_epoch"]
            # (the epoch and step are checked against the run the checkpoint was made in: a
            # resume with other data or settings is told so below, not called damaged)
            if not (all(isinstance(history[k], list) for k in HISTORY_KEYS)
                    and all(isinstance(sums[k], (int, float)) for k in ("loss", "correct", "seen", "seconds"))
                    and all(isinstance(v, int) for v in (start_epoch, start_step, *made_with))
                    and 0 <= start_epoch <= made_with[0] and 0 <= start_step <= made_with[1]):
                raise TypeError("history, sums, epoch or step out of shape")
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise _damaged(resume, err) from None
        if made_with != (epochs, steps_per_epoch):
            raise ValueError(f"fit: checkpoint {resume} was made with {made_with[0]} "
                             f"epoch{'s' * (made_with[0] != 1)} of {made_with[1]} steps, this run has "
                             f"{epochs} of {steps_per_epoch}; resume finishes an interrupted run, with "
                             f"the same data, epochs and batch size. {TRAIN_FURTHER}")
        generators = {"epoch_rng": shuffle_rng, "model_rng": model.rng, "augment_rng": augment_rng}
        try:
            _check_resumed(model, state, history, sums)
            for key, generator in generators.items():     # tried on a scratch generator first
                type(generator.bit_generator)().state = state[key]
            best_state = dict(val_loss=state["best_val_loss"], epoch=state["best_epoch"],
                              bad_epochs=state["bad_epochs"])
            optimizer.load_state_dict(opt_state)          # checks everything before it changes anything
        except (KeyError, TypeError, AttributeError, ValueError) as err:    # ValueError: an RNG state
            raise _damaged(resume, err) from None
        # All checked: from here on nothing can fail half-way through the user's objects.
        for key, generator in generators.items():
            generator.bit_generator.state = state[key]
        best.update(best_state)
        _restore(model, _snapshot(saved))
        if start_epoch >= epochs:
            log(f"{resume}: all {epochs} epochs of that run are done: nothing left to train. {TRAIN_FURTHER}")
        else:
            log(f"Resuming from {resume}: epoch {start_epoch + 1}, step {start_step + 1}")

    def train_state(epoch, step, epoch_rng):
        return {"epoch": epoch, "step": step, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                "history": history, "sums": sums, "epoch_rng": epoch_rng,
                "model_rng": model.rng.bit_generator.state,
                "augment_rng": augment_rng.bit_generator.state, "seed": seed,
                "best_val_loss": best["val_loss"], "best_epoch": best["epoch"],
                "bad_epochs": best["bad_epochs"]}

    warmup.compile_for(model, log, x.shape[1:], augment)   # before the clock starts: not an epoch's time
    with _InterruptFlag() as interrupt, one_thread_pool():
        for epoch in range(start_epoch, epochs):
            epoch_rng = shuffle_rng.bit_generator.state      # to redo this epoch's order
            order = shuffle_rng.permutation(n)
            first = start_step if epoch == start_epoch else 0
            if first == 0:
                sums = _epoch_sums(model)
            bar = None
            if progress and tqdm is not None:
                bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{epochs}",
                           unit="batch", leave=True, dynamic_ncols=True)
            for step in range(first, steps_per_epoch):
                t0 = time.perf_counter()
                global_step = epoch * steps_per_epoch + step
                if schedule is not None:
                    optimizer.lr = _scheduled_lr(schedule, global_step, total_steps, epoch, step)
                idx = order[step * batch_size:(step + 1) * batch_size]
                xb, yb = x[idx], y[idx]
                if augment is not None:
                    xb = augment(xb, augment_rng)
                logits = model.forward(xb, training=True)
                value = loss.forward(logits, yb)
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"loss became {value} at epoch {epoch + 1}, step {step + 1} (lr "
                        f"{optimizer.lr:g}); try a lower learning rate.{_last_good(checkpoint)}")
                model.backward(loss.backward(), need_dx=False)
                norms = gradient_norms(model)      # before step(): the gradient of this batch's loss
                for name, norm in norms.items():
                    sums["grad_norm"][name] += norm
                sums["steps"] += 1
                if global_step % GRAD_NORM_TRACE_EVERY == 0:
                    history["grad_norm_steps"]["epoch"].append(round(global_step / steps_per_epoch, 4))
                    for name, norm in norms.items():
                        history["grad_norm_steps"][name].append(norm)
                optimizer.step()
                sums["loss"] += value * len(idx)
                sums["correct"] += int((logits.argmax(axis=1) == yb).sum())
                sums["seen"] += len(idx)
                sums["seconds"] += time.perf_counter() - t0
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{sums['loss'] / sums['seen']:.4f}",
                                    acc=f"{sums['correct'] / sums['seen']:.4f}", refresh=False)
                if interrupt.raised:
                    if bar is not None:
                        bar.close()
                    path = checkpoint or _free_path("interrupted-checkpoint", ".npz")
                    try:
                        save_checkpoint(path, model, optimizer, train_state(epoch, step + 1, epoch_rng))
                    except BaseException:
                        if not checkpoint:          # the empty placeholder _free_path made
                            os.remove(path)
                        raise
                    raise TrainingInterrupted(
                        f"interrupted at epoch {epoch + 1}, step {step + 1}; checkpoint saved to "
                        f"{path}. Resume with fit(..., resume={path!r}) on the same data, with the "
                        "same settings", path, epoch + 1, step + 1)
            if bar is not None:
                bar.close()
            _check_weights(model, epoch, optimizer.lr, checkpoint)    # before they are validated or saved
            seconds = sums["seconds"]
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(sums["loss"] / sums["seen"])
            history["train_acc"].append(sums["correct"] / sums["seen"])
            history["lr"].append(optimizer.lr)
            history["seconds"].append(seconds)
            history["images_per_second"].append(sums["seen"] / seconds)
            for name, total in sums["grad_norm"].items():
                if sums["steps"]:       # (0: resumed at an epoch's end from a checkpoint without norms)
                    history["grad_norm"][name].append(total / sums["steps"])
            line = (f"epoch {epoch + 1}/{epochs}: loss {history['train_loss'][-1]:.4f} "
                    f"acc {history['train_acc'][-1]:.4f}")
            stop = False
            if validation is not None:
                try:
                    val_loss, val_acc = _evaluate(model, loss, *validation, caller="fit: validation")
                except FloatingPointError as err:    # finite weights, but too large: diverging
                    raise TrainingDiverged(f"{err}; in epoch {epoch + 1} (lr {optimizer.lr:g}): try a lower "
                                           f"learning rate.{_last_good(checkpoint)}") from None
                history["val_loss"].append(val_loss)
                history["val_acc"].append(val_acc)
                line += f" | val loss {val_loss:.4f} acc {val_acc:.4f}"
                if val_loss < best["val_loss"]:
                    best.update(val_loss=val_loss, epoch=epoch + 1, bad_epochs=0)
                    if keep_best:
                        best["weights"] = _snapshot(model)
                else:
                    best["bad_epochs"] += 1
                    stop = bool(early_stopping) and best["bad_epochs"] >= early_stopping
            log(line + f" | {seconds:.1f}s, {sums['seen'] / seconds:,.0f} img/s")
            if checkpoint:
                save_checkpoint(checkpoint, model, optimizer,
                                train_state(epoch + 1, 0, shuffle_rng.bit_generator.state))
            if stop:
                log(f"early stopping: val loss has not improved for {early_stopping} epochs "
                    f"(best {best['val_loss']:.4f} at epoch {best['epoch']})")
                break
    if keep_best and best["weights"] is not None:
        _restore(model, best["weights"])
        log(f"restored the weights of epoch {best['epoch']} (val loss {best['val_loss']:.4f})")
    return history
