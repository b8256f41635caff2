"""The first run on a machine: compiling the fast kernels, and answering while they compile.

Numba compiles each fast kernel the first time it runs and keeps the machine code on disk
(`cache=True`, in __pycache__ or NUMBA_CACHE_DIR). With an empty cache a model's first
training step compiles every kernel the model uses: 5-15 s of CPU per model after the cuts
described in kernels/fast.py (30-40 s before them). This module makes that cost visible and,
for small inference jobs, avoids waiting for it:

- `compile_for(model)` runs the model once on a two-image batch (training and eval passes,
  on a copy, so nothing in the model changes) and returns how long compiling took. `fit`
  calls it before the first epoch and logs "compiling fast kernels (first run only): 4.2 s"
  when it compiled anything, so an epoch's time and images/s count training only.
- `kernels_for_inference(model, n)` is used by `Sequential.predict_proba`. When the fast
  kernels this model needs are not compiled yet (a probe that forbids compiling finds out in
  milliseconds) and the batch is small (<= SMALL_BATCH images), the batch runs on the
  reference NumPy kernels, which answer one image in milliseconds, and a separate process
  starts compiling the fast kernels into the on-disk cache (a process, not a thread: Numba
  holds the GIL while it compiles). Later calls, and later runs, use the fast kernels.
  The two kernel sets compute the same function; tests/test_warmup.py holds their answers
  equal (same classes, probabilities within 1e-5).

TINYCNN_BACKGROUND_COMPILE=0 turns the background process and the reference fallback off:
every call then compiles what it needs in the foreground, as before.
"""
import contextlib
import copy
import hashlib
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np
from numba.core import event

from . import kernels
from .backend import get_backend

SMALL_BATCH = 64          # inference batches up to this size may run on the reference kernels
_PROBE_INTERVAL = 1.0     # seconds between two probes of a model found cold
_LOCK_STALE = 900         # a lock file older than this (seconds) is from a compile that died


class _Cold(Exception):
    """A fast kernel was about to be compiled during a probe."""


class _CompileListener(event.Listener):
    """Counts Numba compilations and their time (outermost ones only: a kernel's helpers
    compile inside it); with forbid=True, stops the first one by raising _Cold."""

    def __init__(self, forbid=False, on_first=None):
        self.forbid, self.on_first = forbid, on_first
        self.depth, self.count, self.seconds, self._t0 = 0, 0, 0.0, 0.0

    def on_start(self, ev):
        if self.forbid:
            raise _Cold(ev.data["dispatcher"].py_func.__name__)
        if self.depth == 0:
            if self.count == 0 and self.on_first is not None:
                self.on_first()
            self.count += 1
            self._t0 = time.perf_counter()
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1
        if self.depth == 0:
            self.seconds += time.perf_counter() - self._t0


def _run_once(model, training, input_shape=None):
    """One tiny forward (and, training, backward) pass on a copy of `model`."""
    probe = copy.deepcopy(model)
    x = np.zeros((2, *(input_shape or model.input_shape)), dtype=model.dtype)
    if training:
        y = probe.forward(x, training=True)
        probe.backward(np.ones_like(y), need_dx=False)
    else:
        probe.forward(x, training=False)


def compile_for(model, log=None, input_shape=None):
    """Compile (or load from Numba's cache) every fast kernel `model` uses, for training and
    inference, on inputs of `input_shape` (default: the model's). Returns the seconds spent
    compiling (0.0 when all were cached, or when the backend is "numpy" or the input shape is
    unknown). With `log`, says when compiling starts and how long it took."""
    input_shape = input_shape or model.input_shape
    if get_backend() != "numba" or input_shape is None:
        return 0.0
    first = (lambda: log("compiling fast kernels (first run only) ...")) if log else None
    listener = _CompileListener(on_first=first)
    with event.install_listener("numba:compile", listener):
        _run_once(model, True, input_shape)
        _run_once(model, False, input_shape)
    if log and listener.count:
        log(f"compiling fast kernels (first run only): {listener.seconds:.1f} s")
    return listener.seconds


_ready = {}       # model key -> True, or the time of the last probe that found it cold


def fast_kernels_ready(model, training=False):
    """Whether `model`'s fast kernels are compiled (in memory or in Numba's disk cache).
    Never compiles: a probe pass stops at the first kernel that would need it."""
    key = (_model_key(model), training)
    state = _ready.get(key)
    if state is True:
        return True
    if state is not None and time.monotonic() - state < _PROBE_INTERVAL:
        return False
    try:
        with event.install_listener("numba:compile", _CompileListener(forbid=True)):
            _run_once(model, training)
    except _Cold:
        _ready[key] = time.monotonic()
        return False
    _ready[key] = True
    return True


@contextlib.contextmanager
def kernels_for_inference(model, n):
    """Run the block on the reference kernels when the fast ones would first have to be
    compiled for `model` and `n` images are few; start compiling them in the background."""
    if (get_backend() != "numba" or n > SMALL_BATCH or model.input_shape is None
            or os.environ.get("TINYCNN_BACKGROUND_COMPILE", "1") == "0"
            or fast_kernels_ready(model)):
        yield
        return
    compile_in_background(model)
    with kernels.using(kernels.reference):
        yield


def _model_key(model):
    """Names what decides which kernels are compiled (layers, their settings, shapes, dtype)
    and where they are cached."""
    text = repr([(layer.name, layer.config()) for layer in model.layers])
    text += repr((model.input_shape, str(model.dtype), numba.config.CACHE_DIR, kernels.fast.__file__))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def compile_in_background(model):
    """Start a separate, low-priority process that compiles `model`'s fast kernels into
    Numba's disk cache and exits. At most one per model at a time (a lock file in the temp
    folder). Returns the process, or None when one is already running."""
    from .io import save_model
    folder = tempfile.gettempdir()
    key = _model_key(model)
    lock = os.path.join(folder, f"tinycnn-compile-{key}.lock")
    try:
        if time.time() - os.path.getmtime(lock) < _LOCK_STALE:
            return None
        os.remove(lock)
    except OSError:
        pass
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    spec = os.path.join(folder, f"tinycnn-compile-{key}-{os.getpid()}.npz")
    save_model(model, spec)
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "tinycnn.warmup", spec, lock], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)      # survives the command that started it


def _main(spec, lock):
    """The background process: compile the kernels of the model saved at `spec`."""
    try:
        os.nice(10)
        from .io import load_model
        compile_for(load_model(spec))
    finally:
        for path in (spec, lock):
            with contextlib.suppress(OSError):
                os.remove(path)


if __name__ == "__main__":
    _main(*sys.argv[1:3])
