"""The first run on a machine: compiling the fast kernels, and answering while they compile.

Numba compiles each fast kernel the first time it runs and keeps the machine code on disk
(`cache=True`, in __pycache__ or NUMBA_CACHE_DIR). With an empty cache a model's first
training step compiles every kernel the model uses: 6-11 s of CPU per built-in model on
these 2-core machines for the shares, 2.6-5.6 s more for the parallel loops (33-46 s
before the kernels were written as shares: see kernels/fast/parallel.py;
benchmarks/bench_startup.py measures it). This module makes that cost visible, shares it
between two processes, defers part of it, and for small inference jobs avoids waiting:

- `compile_for(model)` runs the model once on a two-image batch (training and eval passes,
  on a copy, so nothing in the model changes) and returns how long compiling took. `fit`
  calls it before the first epoch and logs "compiling the fast kernels this model uses (once:
  Numba caches them): 5.4 s"
  when it compiled anything, so an epoch's time and images/s count training only. On a cold
  cache it compiles only the kernels' shares, with a second process (on Linux, a fork of
  this one) taking part of them when a core is idle (_share_work); the parallel loop that
  runs the shares is compiled by a background process, and until that is done the shares
  run on Python threads (the same results, bit for bit).
- `kernels_for_inference(model, n)` is used by `Sequential.predict_proba`. When the fast
  kernels this model needs are not compiled yet (a probe that forbids compiling finds out in
  milliseconds) and the batch is small (<= SMALL_BATCH images), the batch runs on the
  reference NumPy kernels, which answer one image in milliseconds, and a separate process
  starts compiling the fast kernels into the on-disk cache (a process, not a thread: Numba
  holds the GIL while it compiles). Later calls, and later runs, use the fast kernels.
  The two kernel sets compute the same function; tests/test_warmup.py holds their answers
  equal (same classes, probabilities within 1e-5).

TINYCNN_BACKGROUND_COMPILE=0 turns the second process, the background process and the
reference fallback off: every call then compiles what it needs in the foreground.
"""
import contextlib
import copy
import hashlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numba
import numpy as np
from numba.core import event
from numba.core.compiler_lock import global_compiler_lock

from . import kernels
from .augment import RandomAffine
from .backend import get_backend
from .environment import flag
from .fileutil import process_alive
from .kernels.fast import parallel

# Inference batches up to this size may run on the reference kernels: 64 images took 4-29 ms
# of CPU there (lenet5 .. bnnet; 1 image 0.3-1.0 ms), against 8-15 s to compile the fast ones.
SMALL_BATCH = 64
# What fit says before and after compiling (a model of other layer shapes may need kernels
# the first did not, and compiles those: "first run only" misled)
COMPILING = "compiling the fast kernels this model uses (once: Numba caches them)"
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
            raise _Cold()
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


@contextlib.contextmanager
def saying_when_compiling(say):
    """Calls say() once, when Numba starts compiling anything inside the `with` block: a
    first call that compiles for many seconds is not silent."""
    with event.install_listener("numba:compile", _CompileListener(on_first=say)):
        yield


def _run_once(model, training, input_shape=None):
    """One tiny forward (and, training, backward) pass on a copy of `model`."""
    probe = copy.deepcopy(model)
    x = np.zeros((2, *(input_shape or model.input_shape)), dtype=model.dtype)
    if training:
        y = probe.forward(x, training=True)
        probe.backward(np.ones_like(y), need_dx=False)
    else:
        probe.forward(x, training=False)


def compile_for(model, log=None, input_shape=None, augment=None):
    """Compile (or load from Numba's cache) every fast kernel `model` uses, for training and
    inference, on inputs of `input_shape` (default: the model's), and `augment`'s if it is a
    RandomAffine. Returns the seconds it took
    when anything had to be compiled, else 0.0 (also when the backend is "numpy" or the input
    shape is unknown). With `log`, says when compiling starts and how long it took.
    On a cold cache, unless TINYCNN_BACKGROUND_COMPILE=0: a second process shares the work
    when a core is idle (_share_work), and only the kernels' shares are compiled here; the
    parallel loop that runs them is compiled by a background process, and until it is done
    the shares run on Python threads (kernels/fast/parallel.py: same results, bit for bit)."""
    input_shape = tuple(input_shape or model.input_shape or ())
    if get_backend() != "numba" or not input_shape:
        return 0.0
    t0 = time.perf_counter()
    say_start = ((lambda: log(f"{COMPILING} ...")) if log else (lambda: None))
    before = _cpu_sample()           # (the idle cores are measured across the probe)
    cold = _background_allowed() and not fast_kernels_ready(model, True, input_shape)
    if cold:
        say_start()
        parallel.on_python_threads_until(lambda: False)
    listener = _CompileListener(on_first=None if cold else say_start)
    with event.install_listener("numba:compile", listener):
        if cold and _two_processes(before):
            _share_work(model, input_shape, isinstance(augment, RandomAffine))
        _run_once(model, True, input_shape)             # loads what the other process compiled
        _run_once(model, False, input_shape)
        if isinstance(augment, RandomAffine):          # (a callable of the user's own is left alone)
            augment(np.zeros((2, *input_shape), dtype=model.dtype), np.random.default_rng(0))
    if cold:
        _finish_in_background(model)
    if not (cold or listener.count):
        return 0.0
    seconds = time.perf_counter() - t0
    if log:
        log(f"{COMPILING}: {seconds:.1f} s")
    return seconds


def _background_allowed():
    return flag("TINYCNN_BACKGROUND_COMPILE")


def _finish_in_background(model):
    """Start the background compile of what is left (the parallel loops) and keep the shares
    on Python threads until it has finished (its lock file is gone)."""
    compile_in_background(model)
    lock = _compile_lock(model)
    parallel.on_python_threads_until(lambda: not _lock_held(lock))


def _two_processes(since):
    """Whether a second compiling process would help: only with a core idle now (since
    `since`, a _cpu_sample). (Measured on a shared 2-core machine with no idle core, with an
    earlier version of the kernels, fastnet's cold first step took 7.4 s in one process and
    10.2 s in two: the second process's start and Numba's set-up in it, ~1-2 s of CPU, are
    then pure overhead.)"""
    return (os.cpu_count() or 1) > 1 and _idle_cores(since) >= 0.9 and _background_allowed()


def _cpu_sample():
    """(wall clock, this process's CPU seconds, /proc/stat's idle and total ticks or None)."""
    try:
        with open("/proc/stat") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:]]
        proc = ticks[3] + ticks[4], sum(ticks[:8])           # idle + iowait; user .. steal
    except (OSError, ValueError, IndexError):
        proc = None
    return time.monotonic(), time.process_time(), proc


def _idle_cores(since, least=0.1):
    """How many cores other processes left free since `since` (a _cpu_sample taken at least
    `least` seconds ago, else this waits): the idle share of all cores (Linux's /proc/stat)
    plus what this process used itself, so the same as measured over a sleep of its own, as
    before, but across the readiness probe (0.1 s sooner). On a quiet 2-core machine 2, with
    one other busy process 1 (which still passes _two_processes: its threshold is that of
    the earlier measurements). Elsewhere: cores minus the 1-minute load average, which lags
    by about a minute."""
    cores = os.cpu_count() or 1
    time.sleep(max(0.0, since[0] + least - time.monotonic()))
    wall, cpu, proc = _cpu_sample()
    if proc is None or since[2] is None or proc[1] <= since[2][1]:
        return cores - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    idle = cores * (proc[0] - since[2][0]) / (proc[1] - since[2][1])
    return idle + (cpu - since[1]) / max(wall - since[0], 1e-9)


# -- two processes, one cache --------------------------------------------------------------
# Numba compiles on one core (and holds the GIL), so on a cold cache a second process takes
# part of the kernels. Both first list what a training step and an eval pass of the model
# (and the main job's augmentation) would run (_plan: a pass with parallel.recording_shares,
# which compiles none of the shares), and cut the list in two by estimated compile time
# (_split: a second process that starts later gets that much less). On Linux the second
# process is a fork of this one, made once the plan is known: it starts compiling at once,
# with Numba set up and the plan in hand (_fork_sharer); elsewhere it is a new interpreter
# that imports tinycnn and makes the same plan itself. Each compiles its part, then helps
# with the other's, last kernels first: before compiling a kernel a process takes a lock file
# named after the kernel and its signature, and a kernel whose lock the other holds is left
# to it, except that this process, at the end, waits for it and loads it from the disk cache
# as soon as it is written. Then this process runs the whole model, which finds everything
# compiled (and compiles whatever the plan missed).

# CPU seconds each share took to compile here (`python benchmarks/bench_startup.py
# --kernels`, November 30): estimates, for splitting the plan. Other shares count as 0.3 s.
# A table of December 1's timings (Winograd backward 3.5, blocked forward 2.7, GEMM backward
# 2.5, Winograd forward 2.0) split worse: cold first steps with the forked second process, 3
# runs alternated, medians, this table against that one: convnet 4.97 / 5.28 s, bnnet 6.76 /
# 6.92, LeNet-5 3.95 / 4.10.
_COMPILE_SECONDS = {"conv_winograd._backward_share": 2.9, "conv_gemm._backward_share": 2.4,
                    "conv_winograd._forward_share": 2.3, "conv_gemm._forward_share": 2.2,
                    "conv_direct._backward_share": 2.2, "conv_direct._forward_share": 1.7,
                    "pooling._maxpool_forward_share": 0.8, "batchnorm._backward_share": 0.7,
                    "conv_blocked._forward_share": 3.2}
# conv_blocked's share: 3.2 s of CPU for the 16 x 8 block on a 2-core AMD EPYC "Zen 5"
# (AVX-512), where the table's other shares take about 0.7x the figures above; 3.1-3.3 s for
# the 16 x 4 block on a 2-core AMD EPYC Zen 4 with AVX2, where they take 0.9-1.2x
# (GEMM backward 2.8, Winograd backward 3.3, forward 2.2, direct forward 1.9; one process,
# each share alone, session 17). It counted as 0.3 s on every CPU until session 16, and on
# AVX2 CPUs until session 17. Listed at 3.2, the plan split better on both: cold first
# training steps, 3 runs alternated, medians, 3.2 against 0.3: on the Zen 5 fastnet 3.27 /
# 4.78 s, bnnet 5.45 / 5.91 (session 16; listed at 4.8, a little worse: 3.48 and 5.69); on
# the Zen 4 fastnet 3.78 / 4.03, LeNet-5 5.44 / 5.96, bnnet 8.28 / 8.74 (session 17, in a
# slow spell of the machine).
# The second process is a fork of this one on Linux; elsewhere (macOS's system libraries are
# not safe to use in a forked child, Windows has no fork) a new interpreter, which starts
# compiling about a second later (its start-up and imports: measured 0.9-1.0 s).
_FORK = sys.platform.startswith("linux") and hasattr(os, "fork")
_SECOND_PROCESS_LATE = {"fork": 0.05, "spawn": 1.0}     # s, by how it is started
_SHARE_TIMEOUT = 300            # s: a second process not done by then (it hangs) is stopped


def _kernel_name(share):
    return f"{share.py_func.__module__.rsplit('.', 1)[-1]}.{share.py_func.__qualname__}"


def _plan(model, input_shape, augment=False):
    """[(share, signature)] for every share a training step and an eval pass of `model` run
    (and, with augment, RandomAffine), each once, longest to compile first; None if the
    recording pass fails (a layer of the user's own that checks the meaningless values it
    gets, say: everything then compiles in this process, as without a plan)."""
    try:
        with parallel.recording_shares() as found, np.errstate(all="ignore"):
            _run_once(model, True, input_shape)
            _run_once(model, False, input_shape)
            if augment:
                RandomAffine()(np.zeros((2, *input_shape), dtype=model.dtype), np.random.default_rng(0))
    except Exception:                        # (meaningless values met a check): no plan
        return None
    plan = list(dict.fromkeys(found))        # first occurrences, in order
    return sorted(plan, key=lambda kernel: -_compile_seconds(kernel))


def _compile_seconds(kernel):
    return _COMPILE_SECONDS.get(_kernel_name(kernel[0]), 0.3)


def _split(plan, late):
    """(this process's kernels, the second process's): the division of the plan with which
    the later of the two would finish soonest, by _COMPILE_SECONDS, the second process
    starting `late` seconds later. Every division of the 12 longest kernels is tried
    (4,096 at most); the rest, which are short, go one by one to whichever would be free first."""
    big, small = plan[:12], plan[12:]
    costs = [_compile_seconds(kernel) for kernel in big]
    best = None
    for mask in range(1 << len(big)):        # bit i set: big[i] is this process's
        mine = sum(cost for i, cost in enumerate(costs) if mask >> i & 1)
        finish = max(mine, late + sum(costs) - mine)
        if best is None or finish < best[0]:
            best = finish, mask
    mine = [kernel for i, kernel in enumerate(big) if best[1] >> i & 1]
    theirs = [kernel for i, kernel in enumerate(big) if not best[1] >> i & 1]
    for kernel in small:
        busy_mine = sum(map(_compile_seconds, mine))
        busy_theirs = late + sum(map(_compile_seconds, theirs))
        (mine if busy_mine <= busy_theirs else theirs).append(kernel)
    return mine, theirs


def _compile_plan(plan, other=None, deadline=math.inf):
    """Compile (or load from the disk cache) each kernel of the plan that the other process
    has not taken. With `other` (that process), a kernel it is compiling is waited for, until
    time.monotonic() passes `deadline`, and then loaded, while it runs, instead of being left
    to it."""
    for share, signature in plan:
        if signature in share.overloads:
            continue
        lock = _kernel_lock(share, signature)
        while not _take_lock(lock, owned=True):  # the other process is compiling it
            if other is None or other.poll() is not None or time.monotonic() > deadline:
                break                        # (left to it; or it has stopped: see compile_for)
            time.sleep(0.02)
        else:                                # (only once the lock is taken)
            try:
                parallel.compile_share(share, signature)
            finally:
                with contextlib.suppress(OSError):
                    os.remove(lock)


def _kernel_lock(share, signature):
    """The lock file of one kernel: its function, signature and cache."""
    name = f"{share.py_func.__module__}.{share.py_func.__qualname__}{signature}{_where_cached()}"
    return os.path.join(tempfile.gettempdir(), f"tinycnn-kernel-{hashlib.sha1(name.encode()).hexdigest()[:16]}.lock")


def _compile_lock(model):
    """The lock file a background compile of `model` holds while it runs."""
    return os.path.join(tempfile.gettempdir(), f"tinycnn-compile-{_model_key(model)}.lock")


def _lock_held(path):
    """Whether the lock file `path` exists, is younger than _LOCK_STALE and, when it names the
    process that took it, that process is alive (a compiling process stopped by Ctrl-C is
    killed mid-compile and leaves its lock: the kernel was then skipped by both processes
    for 15 minutes)."""
    try:
        if time.time() - os.path.getmtime(path) >= _LOCK_STALE:
            return False
        owner = _lock_owner(path)
    except OSError:
        return False
    return owner is None or process_alive(owner)


def _lock_owner(path):
    """The id of the process that took the lock file `path` (_take_lock with owned), or None."""
    with open(path) as f:
        owner = f.read(32).strip()
    return int(owner) if owner.isdigit() else None


def _take_lock(path, owned=False):
    """Create the lock file `path` (with owned, holding this process's id); False if another
    process holds it (_lock_held). Creating is the test: of two processes creating it at once
    exactly one succeeds. Only a stale file (its process died) is removed first."""
    if _create(path, owned):
        return True
    if _lock_held(path):
        return False
    with contextlib.suppress(OSError):
        os.remove(path)                                  # left by a process that died
    return _create(path, owned)


def _create(path, owned=False):
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        if owned:
            os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
    return True


def _share_work(model, input_shape, augment=False):
    """Compile `model`'s kernels (and, with augment, RandomAffine's) with a second process
    going down the same plan."""
    plan = _plan(model, input_shape, augment)
    if plan is None:
        return                               # compile_for then compiles all of it here
    start = "fork" if _FORK else "spawn"
    mine, theirs = _split(plan, _SECOND_PROCESS_LATE[start])
    spec = None
    if _FORK:
        try:
            other = _fork_sharer(mine, theirs)
        except OSError:                      # no process to be had (a limit, no memory): all of it here
            return
    else:
        spec = os.path.join(tempfile.gettempdir(), f"tinycnn-share-{_model_key(model)}-{os.getpid()}.npz")
        if not _saved(model, spec):
            return
        try:
            other = _start_process(["--share", spec, ",".join(map(str, input_shape)), str(int(augment))])
        except OSError:                      # no Python to start (a frozen app): all of it here
            os.remove(spec)
            return
    deadline = time.monotonic() + _SHARE_TIMEOUT
    try:
        _compile_plan(mine)
        _compile_plan(theirs[::-1], other, deadline)      # its last ones first; wait for the rest
        other.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:        # it hangs: stop it (the final pass compiles the rest)
        other.kill()
    except BaseException:                    # Ctrl-C, say: stop it too, rather than wait for it
        other.kill()
        raise
    finally:
        other.wait()
        for share, signature in plan:        # a kernel it was killed in the middle of
            lock = _kernel_lock(share, signature)
            with contextlib.suppress(OSError):
                if _lock_owner(lock) == other.pid:
                    os.remove(lock)
        if spec is not None:
            with contextlib.suppress(OSError):
                os.remove(spec)


def _fork_sharer(mine, theirs):
    """A copy of this process (os.fork) that compiles `theirs`, then helps with `mine` from
    its end, and exits. It starts at once, with Numba imported and the plan in hand, where a
    new interpreter spends about a second importing them; it compiles only (no BLAS, no
    kernel runs), writes nowhere but the disk cache and the lock files, and leaves by
    os._exit (no cleanup of the parent's that it could run twice). Numba's compiler lock is
    held across the fork, so no other thread of this process is part-way through compiling."""
    with global_compiler_lock, warnings.catch_warnings():
        # Python 3.12+ warns about forking a process with threads (NumPy's BLAS starts some):
        # the child runs none of their code and takes none of their locks.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid:
        return _Forked(pid)
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):                 # nothing of it on the user's terminal
            os.dup2(devnull, fd)
        warnings.simplefilter("ignore")
        _compile_plan(theirs + mine[::-1])
        code = 0
    finally:
        os._exit(code)


class _Forked:
    """A forked child, with the calls _share_work makes of a subprocess.Popen."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:        # reaped already (SIGCHLD ignored): as Popen does
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        end = math.inf if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > end:
                raise subprocess.TimeoutExpired("tinycnn compile (forked)", timeout)
            time.sleep(0.005)
        return self.returncode

    def kill(self):
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)


_ready = {}       # model key -> True, or the time of the last probe that found it cold


def fast_kernels_ready(model, training=False, input_shape=None):
    """Whether `model`'s fast kernels are compiled (in memory or in Numba's disk cache).
    Never compiles: a probe pass stops at the first kernel that would need it."""
    input_shape = tuple(input_shape or model.input_shape)
    key = (_model_key(model), training, input_shape)
    state = _ready.get(key)
    if state is True:
        return True
    if state is not None and time.monotonic() - state < _PROBE_INTERVAL:
        return False
    try:
        with event.install_listener("numba:compile", _CompileListener(forbid=True)):
            _run_once(model, training, input_shape)
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
            or not _background_allowed()
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
    text += repr((model.input_shape, str(model.dtype), _where_cached()))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _where_cached():
    """Names the Numba cache in use: NUMBA_CACHE_DIR, or __pycache__ beside this tinycnn."""
    return f"{numba.config.CACHE_DIR}|{os.path.abspath(kernels.fast.__file__)}"


def compile_in_background(model):
    """Start a separate, low-priority process that compiles `model`'s fast kernels into
    Numba's disk cache and exits. At most one per model at a time (a lock file in the temp
    folder). Returns the process, or None when one is already running."""
    lock = _compile_lock(model)
    if not _take_lock(lock):
        return None
    spec = os.path.join(tempfile.gettempdir(), f"tinycnn-compile-{_model_key(model)}-{os.getpid()}.npz")
    if not _saved(model, spec):
        os.remove(lock)
        return None
    try:
        return _start_process([spec, lock], start_new_session=True)   # outlives the command that started it
    except OSError:                          # (the kernels then compile here, when first used)
        for path in (spec, lock):
            os.remove(path)
        return None


def _saved(model, path):
    """Save `model` for the other process; False if it cannot be saved (a layer type of the
    user's own: the model's kernels are then compiled in this process, when first used)."""
    from .io import save_model
    try:
        save_model(model, path)
        return True
    except Exception:                        # whatever the layer raised: it only costs speed
        with contextlib.suppress(OSError):
            os.remove(path)
        return False


def _start_process(args, **options):
    """`python -m tinycnn.warmup ARGS` with this tinycnn on its path, no console."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "tinycnn.warmup", *args], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **options)


def _main(argv):
    """The other process: `--share SPEC SHAPE AUGMENT` goes down the plan with this one (_share_work);
    `SPEC LOCK` compiles the model saved at SPEC in the background (compile_in_background)."""
    from .io import load_model
    from .runtime import quick_exit
    quick_exit()                              # (it exits 0.4 s sooner: see runtime.quick_exit)
    if argv[0] == "--share":                  # the shares only, as compile_for does here
        spec, shape, augment = argv[1], tuple(int(s) for s in argv[2].split(",")), argv[3:] == ["1"]
        plan = _plan(load_model(spec), shape, augment)
        if plan is not None:
            mine, theirs = _split(plan, _SECOND_PROCESS_LATE["spawn"])
            _compile_plan(theirs + mine[::-1])
        return
    spec, lock = argv[:2]
    try:
        os.nice(10)
        os.environ["TINYCNN_BACKGROUND_COMPILE"] = "0"   # all of it, in this process
        model = load_model(spec)
        augment = RandomAffine() if len(model.input_shape or ()) == 3 else None   # the main job's
        compile_for(model, augment=augment)
    finally:
        for path in (spec, lock):
            with contextlib.suppress(OSError):
                os.remove(path)


if __name__ == "__main__":
    _main(sys.argv[1:])
