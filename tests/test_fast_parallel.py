"""How the fast kernels share work among threads (tinycnn/kernels/fast/parallel.py): the
same shares give the same results bit for bit on Numba's threads and on Python threads
(the first run's mode), and on a first run fit switches from one to the other."""
import numba
import numpy as np
import pytest
from numba import njit

import tinycnn
from tinycnn import warmup
from tinycnn.kernels.fast import conv_blocked, parallel
from tinycnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.model import Sequential

from cold import run_with_empty_cache


def _model():
    """Every fast kernel family: direct and GEMM convolutions (one fused with its pooling),
    batch norm, separate max pooling, ReLU."""
    layers = [Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2),          # direct, fused
              Conv2D(4, 24, 3), BatchNorm2D(24), ReLU(), MaxPool2D(2),    # GEMM (C*F = 96)
              Flatten(), Dense(96, 3)]
    return Sequential(layers, input_shape=(1, 14, 14), seed=0)


def _one_step(model, x, labels):
    """Outputs, loss gradient w.r.t. the input and every parameter gradient of one step."""
    loss = SoftmaxCrossEntropy()
    out = model.forward(x, training=True)
    loss.forward(out, labels)
    dx = model.backward(loss.backward(), need_dx=True)
    return [out, dx] + [g.copy() for layer in model.layers for g in layer.grads.values()]


def _blocked_model():
    """The register-blocked forward convolution (fast/conv_blocked.py): 16 channels and 8
    columns are whole blocks of 16 channels and 4 (AVX-512: 8) columns; the second layer's 144 taps
    take it with AVX-512 too (conv_blocked.MIN_TAPS), the first layer's 49 there do not."""
    layers = [Conv2D(1, 16, 7, activation="relu"), Conv2D(16, 16, 3, padding=1), MaxPool2D(2), ReLU(),
              Flatten(), Dense(16 * 4 * 4, 3)]                            # 14x14 -> 8x8 -> 8x8 -> 4x4
    return Sequential(layers, input_shape=(1, 14, 14), seed=0)


@pytest.mark.parametrize("make_model", [_model, _blocked_model])
def test_python_threads_give_the_same_bits_as_numba_threads(monkeypatch, make_model):
    tinycnn.set_backend("numba")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 1, 14, 14)).astype(np.float32)
    labels = rng.integers(0, 3, 9)
    run_shares_calls = []
    real = parallel._run_shares
    monkeypatch.setattr(parallel, "_run_shares", lambda *a: run_shares_calls.append(a[0]) or real(*a))
    on_numba = _one_step(make_model(), x, labels)
    assert run_shares_calls
    if make_model is _blocked_model:
        ran = {key[0] for key, pointer in parallel._pointers.items() if pointer in run_shares_calls}
        assert conv_blocked._forward_share in ran
    run_shares_calls.clear()
    try:
        parallel.on_python_threads_until(lambda: False)
        on_python = _one_step(make_model(), x, labels)
    finally:
        parallel.on_python_threads_until(None)
    assert not run_shares_calls
    assert len(on_numba) == len(on_python) >= 8          # outputs, dx and every parameter gradient
    for a, b in zip(on_numba, on_python):
        assert a.dtype == b.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_python_threads_until_done_then_numba_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(parallel, "_run_shares", lambda pointer, nchunks, args: calls.append("numba"))
    monkeypatch.setattr(parallel, "_on_python_threads", lambda share, nchunks, args: calls.append("python"))
    clock = [100.0]
    monkeypatch.setattr(parallel.time, "monotonic", lambda: clock[0])
    done = [False]
    x, y, mask = np.zeros(8, np.float32), np.empty(8, np.float32), np.empty(8, np.bool_)
    share = tinycnn.kernels.fast.relu._relu_forward_share
    try:
        parallel.on_python_threads_until(lambda: done[0])
        parallel.in_parallel(share, 2, x, y, mask)
        done[0] = True
        parallel.in_parallel(share, 2, x, y, mask)     # done() is asked again only 0.2 s later
        clock[0] += 0.21
        parallel.in_parallel(share, 2, x, y, mask)
        parallel.in_parallel(share, 2, x, y, mask)
    finally:
        parallel.on_python_threads_until(None)
    assert calls == ["python", "python", "numba", "numba"]


def test_a_cold_fit_trains_on_python_threads_until_the_background_compile_is_done(monkeypatch):
    """On a cold cache fit compiles the shares, starts the background compile, trains on
    Python threads while its lock is held and goes back to Numba's threads once it is gone."""
    tinycnn.set_backend("numba")
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "1")
    monkeypatch.setattr(warmup, "fast_kernels_ready", lambda model, training=False, input_shape=None: False)
    monkeypatch.setattr(warmup, "_two_processes", lambda since: False)
    held = [True]
    monkeypatch.setattr(warmup, "_lock_held", lambda path: held[0])
    started = []
    monkeypatch.setattr(warmup, "compile_in_background", started.append)
    modes = []
    for name, mode in (("_run_shares", "numba"), ("_on_python_threads", "python")):
        real = getattr(parallel, name)
        monkeypatch.setattr(parallel, name, lambda *a, real=real, mode=mode: modes.append(mode) or real(*a))
    model = _model()
    rng = np.random.default_rng(1)
    x, labels = rng.standard_normal((16, 1, 14, 14)).astype(np.float32), rng.integers(0, 3, 16)
    lines = []
    try:
        tinycnn.fit(model, SoftmaxCrossEntropy(), tinycnn.optim.SGD(model, 0.01), x, labels, epochs=1, batch_size=8,
                    progress=False, log=lines.append)
        assert started == [model] and modes and set(modes) == {"python"}
        assert lines[0] == "compiling the fast kernels this model uses (once: Numba caches them) ..."
        held[0] = False
        parallel._next_check = 0.0
        modes.clear()
        model.forward(x, training=False)
        assert modes and set(modes) == {"numba"}
    finally:
        parallel.on_python_threads_until(None)


@njit(nogil=True)
def _allocating_share(t, nchunks, out, n):
    scratch = np.empty(n, dtype=np.float64)          # a share's scratch buffer
    out[t] = scratch.size


@pytest.mark.parametrize("python_threads", [False, True])
def test_a_failed_allocation_inside_a_share_is_raised_not_swallowed(python_threads):
    """A share reached through its pointer cannot raise into the loop (Numba reports the
    error to sys.unraisablehook); in_parallel must raise it, not return half-written arrays."""
    out = np.zeros(2)
    try:
        if python_threads:
            parallel.on_python_threads_until(lambda: False)
        parallel.in_parallel(_allocating_share, 2, out, 10)
        assert out.tolist() == [10, 10]
        with pytest.raises(ValueError, match="array is too big"):
            parallel.in_parallel(_allocating_share, 2, out, 1 << 60)
        parallel.in_parallel(_allocating_share, 2, out, 5)           # and nothing is left over
        assert out.tolist() == [5, 5]
    finally:
        parallel.on_python_threads_until(None)


@njit(nogil=True)
def _scaling_share(t, nchunks, out, k):
    out[t] = k * (t + 1)


class _Stopped(Exception):
    pass


def test_on_python_threads_a_share_is_compiled_on_the_calling_thread_only():
    """warmup's readiness probe stops a compilation on its own thread (it must not compile);
    no pool thread may then compile the share anyway. Here the calling thread's compilation
    is stopped: nothing else may compile the share."""
    import threading
    import time
    from numba.core import event
    caller, compiled_on = threading.get_ident(), []

    class StopOnTheCaller(event.Listener):
        def on_start(self, ev):
            if threading.get_ident() == caller:
                raise _Stopped()
            compiled_on.append(threading.get_ident())

        def on_end(self, ev):
            pass

    out = np.zeros(3)
    try:
        parallel.on_python_threads_until(lambda: False)
        with event.install_listener("numba:compile", StopOnTheCaller()):
            with pytest.raises(_Stopped):
                parallel.in_parallel(_scaling_share, 3, out, 2.0)
            time.sleep(0.5)                          # time for a pool thread to have started one
        assert compiled_on == [] and not _scaling_share.signatures
        parallel.in_parallel(_scaling_share, 3, out, 2.0)
    finally:
        parallel.on_python_threads_until(None)
    assert out.tolist() == [2.0, 4.0, 6.0]


def test_no_kernel_is_compiled_twice_for_a_constant_argument(tmp_path):
    """Numba compiles a jitted function once per literal value it is passed as a constant
    (Literal[int](0), Literal[bool](True)): four calls of one helper with constant arguments
    were four compilations on a first run. With an empty cache (a subprocess: helpers loaded
    inside a cached kernel are never compiled on their own), every fast kernel and helper a
    model with convolutions by all three methods and batch norm runs is compiled once per
    argument types."""
    code = ("import sys, numpy as np\n"
            "from numba import types\n"
            "from numba.core.registry import CPUDispatcher\n"
            "from tinycnn import models\n"
            "from tinycnn.kernels.fast import parallel\n"
            "parallel.on_python_threads_until(lambda: False)\n"     # (no parallel loops to compile)
            "model = models.convnet_bn()\n"
            "y = model.forward(np.zeros((2, 1, 28, 28), np.float32), training=True)\n"
            "model.backward(np.ones_like(y), need_dx=False)\n"
            "model.forward(np.zeros((2, 1, 28, 28), np.float32), training=False)\n"
            "for name, module in list(sys.modules.items()):\n"
            "    if name.startswith('tinycnn.kernels.fast'):\n"
            "        for attr, d in vars(module).items():\n"
            "            if isinstance(d, CPUDispatcher) and d.signatures:\n"
            "                plain = {tuple(types.unliteral(a) for a in s) for s in d.signatures}\n"
            "                print(attr, len(d.signatures), len(plain))\n")
    rows = [line.split() for line in run_with_empty_cache(code, tmp_path).splitlines()]
    names = {name for name, _, _ in rows}
    assert {"_backward_share", "_forward_share", "_row_sums", "_stats_share"} <= names, names
    assert [row for row in rows if row[1] != row[2]] == []
    assert ["_row_sums", "1", "1"] in rows           # (its shift once an int 0: a second, float64 copy)


def test_recording_shares_on_one_thread_leaves_the_others_computing():
    """warmup's planning pass runs nothing on its own thread only: a prediction on another
    thread meanwhile gets real results."""
    import threading
    out, other = np.zeros(2), np.zeros(2)
    with parallel.recording_shares() as found:
        parallel.in_parallel(_scaling_share, 2, out, 3.0)                  # recorded, not run
        worker = threading.Thread(target=parallel.in_parallel, args=(_scaling_share, 2, other, 3.0))
        worker.start()
        worker.join()
    assert out.tolist() == [0.0, 0.0] and other.tolist() == [3.0, 6.0]
    assert [share for share, _ in found] == [_scaling_share]


def test_slp_shares_compile_with_the_slp_vectoriser_and_only_they(monkeypatch):
    # Numba reads NUMBA_SLP_VECTORIZE (off by default) whenever it optimises a function:
    # compile_share turns it on while a marked share compiles, and back after, error or not.
    assert conv_blocked._forward_share in parallel.SLP_SHARES
    before = numba.config.SLP_VECTORIZE

    class Share:
        def __init__(self, fails=False):
            self.seen, self.fails = [], fails

        def compile(self, signature):
            self.seen.append(numba.config.SLP_VECTORIZE)
            if self.fails:
                raise RuntimeError("compile failed")

    plain, marked, failing = Share(), parallel.slp_share(Share()), parallel.slp_share(Share(fails=True))
    parallel.compile_share(plain, ())
    parallel.compile_share(marked, ())
    with pytest.raises(RuntimeError, match="compile failed"):
        parallel.compile_share(failing, ())
    assert (plain.seen, marked.seen, failing.seen) == ([before], [1], [1])
    assert numba.config.SLP_VECTORIZE == before
    parallel.SLP_SHARES.discard(marked)
    parallel.SLP_SHARES.discard(failing)


def test_slp_setting_holds_while_two_threads_compile_marked_shares():
    # Without the compiler lock around the switch, one thread restored the setting while
    # the other was compiling (that share was built without SLP), and the setting stayed on.
    import threading
    import time
    from numba.core.compiler_lock import global_compiler_lock
    before = numba.config.SLP_VECTORIZE
    seen = {}

    class Share:
        def __init__(self, name):
            self.name = name

        def compile(self, signature):
            with global_compiler_lock:            # as numba's Dispatcher.compile does
                time.sleep(0.05)
                seen[self.name] = numba.config.SLP_VECTORIZE

    shares = [parallel.slp_share(Share(name)) for name in "AB"]
    try:
        threads = [threading.Thread(target=parallel.compile_share, args=(share, ())) for share in shares]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for share in shares:
            parallel.SLP_SHARES.discard(share)
    assert seen == {"A": 1, "B": 1} and numba.config.SLP_VECTORIZE == before


def test_the_blocked_kernel_is_vectorised_only_with_the_slp_vectoriser():
    # conv_blocked's speed rests on LLVM packing its 64 (or 128) scalar accumulators into vector
    # fused multiply-adds (vfmadd...ps on ymm or zmm registers). Compiled here afresh (not
    # from the disk cache, whose code cannot be inspected), with and without the switch.
    import re
    from numba import njit as jit
    F = conv_blocked.BLOCK_F                       # one block of channels (16 on every CPU)
    x = np.zeros((1, 2, 10, 10), np.float32)
    Wt, offsets = np.zeros((18, F), np.float32), np.zeros(18, np.intp)
    args = (0, 1, x, Wt, offsets, np.zeros(F, np.float32), np.zeros((1, F, 64), np.float32),
            np.zeros((0, 0, 0), np.int8), 0, 0, 8, 8, False, False, False)
    # (with AVX-512, the 16-channel block's sums fill whole 512-bit registers: zmm)
    packed_fma = re.compile(r"vfmadd\d+ps\b[^\n]*%zmm" if conv_blocked.WIDE else r"vfmadd\d+ps\b[^\n]*%[yz]mm")
    found = {}
    for slp in (0, 1):
        share = jit(fastmath={"contract"}, nogil=True)(conv_blocked._forward_share.py_func)
        before = numba.config.SLP_VECTORIZE
        numba.config.SLP_VECTORIZE = slp
        try:
            share(*args)
        finally:
            numba.config.SLP_VECTORIZE = before
        found[slp] = len(packed_fma.findall(next(iter(share.inspect_asm().values()))))
    assert found[0] == 0 and found[1] >= 8, found
