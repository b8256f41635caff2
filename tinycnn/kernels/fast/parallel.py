"""How a fast kernel shares its work among threads, and why it is laid out so.

Every parallel kernel here is an ordinary jitted function that does one thread's share:
`share(t, nchunks, *args)` handles the t-th of nchunks contiguous runs of the work (images,
blocks of images, planes, channels) and writes only its own part of the outputs.
`in_parallel(share, nchunks, *args)` runs share(0..nchunks-1) at the same time, on Numba's
threads (a `prange` loop). Because each share is fixed by (t, nchunks) and not by which
thread ran it or when, results never depend on timing; sums that several shares contribute
to (a weight gradient) are kept per share and added in a fixed order (`add_thread_parts`).

Why not put the kernel's loop body straight inside the prange loop? Compile time. Numba turns
a prange loop into three nested functions (the loop body as a "gufunc", a wrapper that calls
it, and the kernel that calls the wrapper), and every function a level calls is linked into
it and optimised again with it. A convolution kernel written that way cost 9-12 s of CPU to
compile, and a model's first training step on a new machine (an empty Numba cache) 33-46 s.
Here the prange loop is one small generic function, `_run_shares`, and the share reaches it
as a first-class function (a pointer, `_SharePointer`), so nothing is linked into it: each
share is compiled once as an ordinary function, and the loop once per share signature, in
a fraction of a second (benchmarks/bench_startup.py --kernels prints the table).
"""
import contextlib
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import _dispatcher, njit, prange, types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.typing.typeof import typeof_impl

from ... import runtime

JIT = dict(cache=True, nogil=True)     # every kernel: compiled once per machine, runs without the GIL

SLP_SHARES = set()     # shares compiled with LLVM's SLP vectoriser on (see slp_share)


def slp_share(share):
    """Mark a share to be compiled with LLVM's SLP vectoriser, which packs straight-line
    scalar code (conv_blocked.py's 64 accumulators) into vector instructions. Numba leaves
    it off (NUMBA_SLP_VECTORIZE=0) and reads that setting each time it optimises a
    function, so compile_share turns it on for these shares only, while they compile."""
    SLP_SHARES.add(share)
    return share


def compile_share(share, signature):
    """share.compile(signature) (or its load from the disk cache), with the SLP vectoriser
    on for the shares marked so. The setting is changed under Numba's own compiler lock
    (reentrant: compile takes it again), so no other thread compiles anything while it is
    on. (The disk cache does not record it: a marked share compiled some other way would
    be cached, and loaded from then on, without it.)"""
    if share not in SLP_SHARES:
        share.compile(signature)
        return
    with global_compiler_lock:
        saved = numba.config.SLP_VECTORIZE
        numba.config.SLP_VECTORIZE = 1
        try:
            share.compile(signature)
        finally:
            numba.config.SLP_VECTORIZE = saved


@njit(parallel=True, **JIT)
def _run_shares(share, nchunks, args):
    """share(t, nchunks, *args) for t = 0 .. nchunks-1, one per Numba thread."""
    for t in prange(nchunks):
        share(np.int64(t), nchunks, *args)


class _SharePointer(types.WrapperAddressProtocol):
    """A share, compiled for one set of argument types, as a function pointer Numba can
    call (its C entry point). Numba asks for the address and the signature when it is passed."""

    def __init__(self, share, signature):
        compile_share(share, signature)                           # (or loads it from the disk cache)
        compiled = share.overloads[signature]
        self._signature = compiled.signature
        self._address = compiled.library.get_pointer_to_function(compiled.fndesc.llvm_cfunc_wrapper_name)
        self.numba_type = types.FunctionType(compiled.signature)

    def __wrapper_address__(self):
        return self._address

    def signature(self):
        return self._signature


@typeof_impl.register(_SharePointer)
def _typeof_share_pointer(pointer, context):
    """Its Numba type, made once (Numba would otherwise build it again at every call: ~6 us)."""
    return pointer.numba_type


_pointers = {}      # (share, the arguments' Numba fingerprints) -> _SharePointer


def _key(share, args):
    """A quick key for (share, its arguments' types): compute_fingerprint is Numba's own
    (~0.1 us per argument), where numba.typeof takes microseconds."""
    return (share, *map(_dispatcher.compute_fingerprint, args))


def _signature(args):
    """The Numba signature a share is compiled for, (t, nchunks, *args)."""
    return (types.int64, types.int64, *map(numba.typeof, args))


def in_parallel(share, nchunks, *args):
    """Run share(t, nchunks, *args) for t = 0 .. nchunks-1 on Numba's threads (or, while
    `on_python_threads_until` says so, on Python threads). A share returns nothing: it
    writes into the arrays it is given. An error inside one (out of memory) is raised here."""
    if _recordings and _this_thread.recording is not None:     # (a global test first: this is
        _this_thread.recording.append((share, _signature(args)))   # every kernel call's path)
        return
    # Every BLAS held to one thread while the shares run (shares call NumPy's sgemm from
    # each thread): a model's pass holds it already, a kernel called on its own here.
    with contextlib.nullcontext() if runtime.blas_holding() else runtime.blas_held():
        if _python_threads_wanted():
            _on_python_threads(share, nchunks, args)
            return
        key = _key(share, args)
        pointer = _pointers.get(key)
        if pointer is None:
            pointer = _pointers[key] = _SharePointer(share, _signature(args))
            _catch_share_errors()
        _run_shares(pointer, nchunks, args)
    if _share_errors:
        error = _share_errors.pop()
        _share_errors.clear()
        raise error


class _ThisThread(threading.local):
    recording = None       # a list while recording_shares() runs on this thread


_this_thread = _ThisThread()
_recordings = 0            # how many threads are recording now
_recordings_lock = threading.Lock()


@contextlib.contextmanager
def recording_shares():
    """Within this block, on this thread, in_parallel runs nothing: it appends (share, the
    signature it would be compiled for) to the list this yields. tinycnn.warmup learns so,
    in a fraction of a second, which kernels a model's first run will compile. The kernels'
    outputs are left unwritten, so whatever the pass computes from them is meaningless.
    (Other threads, say one predicting while this one starts training, run as usual.)"""
    global _recordings
    _this_thread.recording = found = []
    with _recordings_lock:
        _recordings += 1
    try:
        yield found
    finally:
        _this_thread.recording = None
        with _recordings_lock:
            _recordings -= 1


# A share called through its pointer (its C entry point) cannot pass an exception back to the
# loop: Numba hands it to sys.unraisablehook ("Exception ignored in: <numba.core.cpu.CPUContext>")
# and carries on. The one thing these shares can raise is a failed allocation of a scratch
# buffer (out of memory), and a kernel must not then return half-written arrays: so from
# the first parallel call on, a hook in front of the existing one keeps such reports and
# in_parallel raises them after the loop. Everything else goes on to the previous hook.
_share_errors = []


def _catch_share_errors():
    previous = sys.unraisablehook
    if getattr(previous, "_tinycnn", False):
        return

    def hook(unraisable):
        if isinstance(unraisable.object, str) and "numba" in unraisable.object and unraisable.exc_value is not None:
            _share_errors.append(unraisable.exc_value)
        else:
            previous(unraisable)
    hook._tinycnn = True
    sys.unraisablehook = hook


@njit(inline="always", **JIT)
def share_range(t, nchunks, jobs):
    """The contiguous run lo..hi-1 of range(jobs) that share t of nchunks handles."""
    return t * jobs // nchunks, (t + 1) * jobs // nchunks


def threads_for(jobs):
    """How many shares to cut `jobs` units of work into: one per thread, at most one per job."""
    return max(1, min(numba.get_num_threads(), jobs))


def add_thread_parts(dW_parts, db_parts):
    """The weight and bias gradients from each share's partial sums (dW_parts (T, ...) in
    the kernel's dtype, db_parts (T, F) in float64), added in share order, so the result
    does not depend on timing. db is returned in dW's dtype."""
    dW = dW_parts[0].copy()
    for part in dW_parts[1:]:
        dW += part
    db = db_parts[0].copy()
    for part in db_parts[1:]:
        db += part
    return dW, db.astype(dW.dtype)


# -- the first run on a new machine ---------------------------------------------------------
# With an empty Numba cache, _run_shares is compiled once per share signature: 0.3-0.6 s of
# CPU each, 5 to 10 per model (it is a prange loop, and Numba's parallel machinery is slow
# to compile even for a loop this small). Until that is done the shares can run on Python
# threads instead: `nogil=True` lets them run at the same time, and they are the same shares
# with the same (t, nchunks), so the results are the same bit for bit; only each hand-off
# costs more (~100 us against ~5 us). tinycnn.warmup does this on a first run while a
# background process compiles _run_shares into the disk cache.

_threads = None            # (process id, the Python threads), made on first use in each process
_until = None              # while not None: shares run on Python threads until _until() is true
_next_check = 0.0


def on_python_threads_until(done):
    """From now on, run shares on Python threads until done() returns True (asked at most
    every 0.2 s); done=None goes back to Numba's threads at once."""
    global _until, _next_check
    _until, _next_check = done, 0.0


def _python_threads_wanted():
    global _until, _next_check
    if _until is None:
        return False
    now = time.monotonic()
    if now < _next_check:
        return True
    _next_check = now + 0.2
    if _until():
        _until = None
        return False
    return True


_compiled = set()          # _key()s of the shares compiled for _on_python_threads


def _on_python_threads(share, nchunks, args):
    """share(t, nchunks, *args) for t = 1 .. nchunks-1 on a pool of Python threads, t = 0 on
    this one; returns when all are done. (A process made by fork inherits the pool object
    but none of its threads, so each process makes its own.)"""
    global _threads
    key = _key(share, args)
    if key not in _compiled:
        # Compile (or load) the share here, before a pool thread calls it: tinycnn.warmup's
        # readiness probe stops a compilation on this thread (it must not compile), and a
        # pool thread would then compile the share all the same, for seconds. (Before the
        # first run's plan, the second process's locks stopped them too: a second compile.)
        compile_share(share, _signature(args))
        _compiled.add(key)
    if nchunks > 1 and (_threads is None or _threads[0] != os.getpid()):
        _threads = os.getpid(), ThreadPoolExecutor(max(1, numba.config.NUMBA_NUM_THREADS - 1), "tinycnn")
    others = [_threads[1].submit(share, t, nchunks, *args) for t in range(1, nchunks)]
    share(0, nchunks, *args)
    for job in others:
        job.result()
