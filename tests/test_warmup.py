"""The first run on a machine (tinycnn/warmup.py): compile time reported apart from training,
and small predictions answered on the reference kernels, identically, while the fast ones compile."""
import os
import time

import numpy as np
import pytest
from numba.core import event

import tinycnn
from tinycnn import kernels, warmup
from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.model import Sequential
from tinycnn.optim import SGD

from cold import compiled_nothing, run_with_empty_cache

def _small_convnet():
    layers = [Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2), Flatten(), Dense(4 * 3 * 3, 3)]
    return Sequential(layers, input_shape=(1, 8, 8), seed=0)


def test_epoch_time_excludes_a_simulated_compile(monkeypatch):
    """fit compiles before the clock starts and says so; the epoch's seconds are training only."""
    tinycnn.set_backend("numba")

    def slow_compile(model, training, input_shape=None):                 # what a cold Numba cache looks like
        with event.trigger_event("numba:compile", data={}):
            time.sleep(0.4)

    monkeypatch.setattr(warmup, "_run_once", slow_compile)
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "0")    # one process (no second one to share with)
    model = Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)   # no Numba kernels
    x = np.random.default_rng(0).standard_normal((8, 1, 4, 4)).astype(np.float32)
    lines = []
    history = tinycnn.fit(model, SoftmaxCrossEntropy(), SGD(model, 0.1), x, np.arange(8) % 3, epochs=1,
                          batch_size=8, progress=False, log=lines.append)
    assert lines[0] == "compiling the fast kernels this model uses (once: Numba caches them) ..."
    head, seconds = lines[1].rsplit(": ", 1)
    assert head == "compiling the fast kernels this model uses (once: Numba caches them)" and seconds.endswith(" s")
    assert float(seconds[:-2]) >= 0.8                  # two passes (training, eval), 0.4 s each
    assert history["seconds"][0] < 0.2, history["seconds"]
    assert lines[2].startswith("epoch 1/1") and len(lines) == 3


def test_no_compile_line_when_the_kernels_are_cached(monkeypatch):
    monkeypatch.setattr(warmup, "_run_once", lambda *args: None)
    model = Sequential([Flatten(), Dense(16, 3)], input_shape=(1, 4, 4), seed=0)
    lines = []
    tinycnn.fit(model, SoftmaxCrossEntropy(), SGD(model, 0.1), np.zeros((4, 1, 4, 4), np.float32),
                np.zeros(4, int), progress=False, log=lines.append)
    assert not any("compiling" in line for line in lines)


def test_cold_prediction_runs_on_reference_kernels_and_equals_the_fast_one(monkeypatch):
    """While the fast kernels are not compiled, a small batch runs on the reference kernels
    (and starts the background compile once); its answer equals the fast kernels' answer."""
    tinycnn.set_backend("numba")
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "1")
    model = _small_convnet()
    x = np.random.default_rng(1).standard_normal((5, 1, 8, 8)).astype(np.float32)
    started, reference_calls = [], []
    real = kernels.reference.conv2d_forward        # (the reference kernels run unfused)
    monkeypatch.setattr(kernels.reference, "conv2d_forward",
                        lambda *a, **k: reference_calls.append(1) or real(*a, **k))
    monkeypatch.setattr(warmup, "compile_in_background", started.append)
    monkeypatch.setattr(warmup, "fast_kernels_ready", lambda model, training=False: False)
    cold = model.predict_proba(x)
    assert reference_calls and started == [model]
    monkeypatch.setattr(warmup, "fast_kernels_ready", lambda model, training=False: True)
    reference_calls.clear()
    fast = model.predict_proba(x)
    assert not reference_calls
    assert cold.dtype == fast.dtype == np.float32
    np.testing.assert_array_equal(cold.argmax(axis=1), fast.argmax(axis=1))
    np.testing.assert_allclose(cold, fast, rtol=0, atol=1e-5)


def test_large_batches_and_the_switch_keep_the_fast_kernels(monkeypatch):
    monkeypatch.setattr(warmup, "fast_kernels_ready", lambda model, training=False: False)
    monkeypatch.setattr(warmup, "compile_in_background", lambda model: pytest.fail("started a compile"))
    model = _small_convnet()
    tinycnn.set_backend("numba")
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "1")
    with warmup.kernels_for_inference(model, warmup.SMALL_BATCH + 1):
        assert kernels.current() is kernels.fast
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "0")
    with warmup.kernels_for_inference(model, 1):
        assert kernels.current() is kernels.fast


def test_probe_on_an_empty_cache_compiles_nothing(tmp_path):
    """fast_kernels_ready on a cold cache answers False without compiling (a subprocess with
    an empty NUMBA_CACHE_DIR; a compile would take seconds and leave files in it)."""
    code = ("import time, numpy as np\n"
            "from tinycnn import warmup, models\n"
            "m = models.lenet5()\n"
            "t = time.process_time(); ready = warmup.fast_kernels_ready(m, training=True)\n"
            "print(ready, round(time.process_time() - t, 2))\n")
    ready, seconds = run_with_empty_cache(code, tmp_path).split()
    assert ready == "False" and float(seconds) < 2.0, (ready, seconds)
    assert compiled_nothing(tmp_path)


def test_the_plan_lists_every_share_once_longest_first_and_compiles_none(tmp_path):
    """The two compiling processes split the model's kernels by a plan made without compiling
    them (a subprocess with an empty NUMBA_CACHE_DIR: a share compiled would leave files)."""
    code = ("from tinycnn import warmup, models\n"
            "m = models.convnet()\n"
            "plan = warmup._plan(m, m.input_shape)\n"
            "print(' '.join(warmup._kernel_name(share) for share, _ in plan))\n"
            "print(all(not share.overloads for share, _ in plan))\n")
    names, checks = run_with_empty_cache(code, tmp_path).splitlines()
    # convnet: conv 1->32 (direct forward, GEMM backward), conv 32->64 (Winograd), longest first
    assert names.split() == ["conv_winograd._backward_share", "conv_gemm._backward_share",
                             "conv_winograd._forward_share", "conv_direct._forward_share"], names
    assert checks == "True"                                     # none of them compiled
    assert compiled_nothing(tmp_path)


class _FakeShare:
    """Stands in for a jitted share: records what it was asked to compile."""

    def __init__(self, name):
        self.overloads, self.compiled = {}, []
        self.py_func = lambda: None
        self.py_func.__qualname__ = name

    def compile(self, signature):
        self.compiled.append(signature)
        self.overloads[signature] = object()


def test_a_kernel_the_other_process_holds_is_left_to_it(monkeypatch, tmp_path):
    monkeypatch.setattr(warmup.tempfile, "gettempdir", lambda: str(tmp_path))
    mine, theirs, done = _FakeShare("mine"), _FakeShare("theirs"), _FakeShare("done")
    done.overloads[("sig",)] = object()                         # compiled already: nothing to do
    assert warmup._take_lock(warmup._kernel_lock(theirs, ("sig",)))     # the other process's
    warmup._compile_plan([(mine, ("sig",)), (theirs, ("sig",)), (done, ("sig",))])
    assert mine.compiled == [("sig",)] and theirs.compiled == [] and done.compiled == []
    assert not os.path.exists(warmup._kernel_lock(mine, ("sig",)))      # released after compiling


class _Process:
    def __init__(self, running):
        self.running = running

    def poll(self):
        return None if self.running else 0


def test_a_kernel_the_other_process_holds_is_waited_for_then_loaded_while_it_runs(monkeypatch, tmp_path):
    """The first process, done with its part, waits for the other's kernels and loads them
    as they are written, rather than after the other exits; not once the other has stopped."""
    import threading
    monkeypatch.setattr(warmup.tempfile, "gettempdir", lambda: str(tmp_path))
    theirs = _FakeShare("theirs")
    lock = warmup._kernel_lock(theirs, ("sig",))
    assert warmup._take_lock(lock)
    warmup._compile_plan([(theirs, ("sig",))], _Process(running=False))      # stopped: not waited for
    assert theirs.compiled == []
    threading.Timer(0.2, os.remove, [lock]).start()                           # done in 0.2 s
    t0 = time.perf_counter()
    warmup._compile_plan([(theirs, ("sig",))], _Process(running=True))
    assert theirs.compiled == [("sig",)] and time.perf_counter() - t0 >= 0.15


def test_the_split_gives_the_later_process_less_and_every_kernel_to_one_of_them(monkeypatch):
    """A second process started a second later (a new interpreter) gets that much less: the
    cut that finishes first."""
    shares = {name: _FakeShare(name) for name in ("big", "mid", "small", "tiny", "wee")}
    monkeypatch.setattr(warmup, "_kernel_name", lambda share: share.py_func.__qualname__)
    monkeypatch.setattr(warmup, "_COMPILE_SECONDS", {"big": 2.5, "mid": 2.1, "small": 1.6, "tiny": 0.2})
    plan = [(shares[name], ("sig",)) for name in ("big", "mid", "small", "tiny", "wee")]   # (wee: 0.3 s)
    mine, theirs = warmup._split(plan, late=1.0)
    # this process 2.1 + 1.6 (+ 0.2) = 3.9 s, the other 1.0 late + 2.5 (+ 0.3) = 3.8 s; giving
    # this process the longest instead would end at 2.5 + 1.6 = 4.1 s or later
    assert [k[0].py_func.__qualname__ for k in mine] == ["mid", "small", "tiny"]
    assert [k[0].py_func.__qualname__ for k in theirs] == ["big", "wee"]
    monkeypatch.setattr(warmup, "_COMPILE_SECONDS", {})
    many = [(_FakeShare(f"k{i}"), ("sig",)) for i in range(30)]     # past the 12 tried every way
    mine, theirs = warmup._split(many, late=1.0)
    assert sorted(map(id, mine + theirs)) == sorted(map(id, many)) and len(mine) > len(theirs)


def test_a_lock_of_a_process_that_died_is_taken_over_at_once(tmp_path):
    """A compiling process stopped by Ctrl-C is killed mid-compile: its kernel lock stayed,
    and both processes skipped that kernel for 15 minutes."""
    import subprocess
    import sys
    path = str(tmp_path / "k.lock")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(path, "w") as f:
        f.write(dead.stdout.strip())                          # (that process has exited)
    assert warmup._take_lock(path, owned=True)
    assert open(path).read() == str(os.getpid())              # now this process's
    assert not warmup._take_lock(path, owned=True)            # held by a live one
    os.remove(path)
    assert warmup._take_lock(path) and not warmup._take_lock(path)   # no id in it: held while young


@pytest.mark.skipif(not warmup._FORK, reason="the second process is forked on Linux only")
def test_a_fork_that_fails_leaves_the_work_to_this_process(monkeypatch, tmp_path):
    monkeypatch.setattr(warmup.tempfile, "gettempdir", lambda: str(tmp_path))

    def no_fork():
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(warmup.os, "fork", no_fork)
    compiled = []
    monkeypatch.setattr(warmup, "_compile_plan", lambda plan, *args: compiled.append(plan))
    model = _small_convnet()
    warmup._share_work(model, model.input_shape)            # returns: compile_for then compiles it all
    assert compiled == [] and os.listdir(tmp_path) == []


@pytest.mark.skipif(not warmup._FORK, reason="the second process is forked on Linux only")
def test_a_forked_child_reaped_by_the_system_counts_as_finished():
    """With SIGCHLD ignored (inherited from a supervisor, say) the kernel reaps the child
    itself and waitpid fails with ECHILD: training stopped with '[Errno 10] No child processes'."""
    import signal
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        child = warmup._Forked(pid)
        assert child.wait(10) == 0
    finally:
        signal.signal(signal.SIGCHLD, previous)


def test_idle_cores_count_this_processs_own_work_as_free(monkeypatch):
    """Measured across the probe, during which this process kept one core busy: 40 ticks of
    2 cores' time, 20 of them idle, 0.2 s of this process's CPU in 0.2 s: one core idle
    besides it, and its own, free once it stops to compile."""
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(warmup, "_cpu_sample", lambda: (10.2, 5.2, (120, 240)))
    assert warmup._idle_cores((10.0, 5.0, (100, 200)), least=0) == pytest.approx(2.0)
    monkeypatch.setattr(warmup, "_cpu_sample", lambda: (10.2, 5.2, (102, 240)))     # another process busy
    assert warmup._idle_cores((10.0, 5.0, (100, 200)), least=0) == pytest.approx(1.1)
    assert not warmup._two_processes((10.0, 5.1, (100, 200)))          # 0.1 + 0.5 cores: not one idle


def test_kernel_locks_one_owner_and_stale_ones_taken_over(tmp_path):
    path = str(tmp_path / "k.lock")
    assert warmup._take_lock(path) and not warmup._take_lock(path)
    old = time.time() - warmup._LOCK_STALE - 1
    os.utime(path, (old, old))                                  # its process died long ago
    assert warmup._take_lock(path)


def test_a_model_that_cannot_be_saved_still_predicts_while_cold(monkeypatch):
    """No background compile without a model file for it (a user's own layer type), and no
    error either: the prediction is served, and the lock file is not left behind."""
    import tinycnn.io
    tinycnn.set_backend("numba")

    def refuse(model, path):
        raise ValueError("unknown layer type")

    monkeypatch.setattr(tinycnn.io, "save_model", refuse)
    monkeypatch.setenv("TINYCNN_BACKGROUND_COMPILE", "1")
    monkeypatch.setattr(warmup, "fast_kernels_ready", lambda model, training=False: False)
    model = _small_convnet()
    assert warmup.compile_in_background(model) is None
    lock = os.path.join(warmup.tempfile.gettempdir(), f"tinycnn-compile-{warmup._model_key(model)}.lock")
    assert not os.path.exists(lock)
    assert model.predict(np.zeros((1, 1, 8, 8), np.float32)).shape == (1,)


def test_of_two_processes_taking_the_same_fresh_locks_exactly_one_gets_each(tmp_path):
    """Creating the lock file is the test of who has it: two processes racing for the same
    2,000 locks never both get one (before, each removed what it took for a stale file first:
    both held 17,194 of 20,000 in a review's run)."""
    import subprocess
    import sys
    code = ("import sys, time\n"
            "from tinycnn import warmup\n"
            "while time.time() < float(sys.argv[2]):\n"              # start together
            "    pass\n"
            "got = [i for i in range(2000) if warmup._take_lock(f'{sys.argv[1]}/{i}.lock')]\n"
            "print(' '.join(map(str, got)))\n")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    start = str(time.time() + 3)
    runs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), start], env=env, stdout=subprocess.PIPE,
                             text=True) for _ in range(2)]
    taken = [set(map(int, run.communicate(timeout=120)[0].split())) for run in runs]
    assert not taken[0] & taken[1]
    assert taken[0] | taken[1] == set(range(2000))


class _Child:
    """Stands in for the second process."""

    def __init__(self):
        self.killed, self.pid = False, 4_000_000          # (no such process)

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 0

    def kill(self):
        self.killed = True


@pytest.mark.parametrize("fork", [True, False])
def test_the_second_process_is_stopped_on_ctrl_c_and_files_are_not_left(monkeypatch, tmp_path, fork):
    monkeypatch.setattr(warmup.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(warmup, "_FORK", fork)
    child = _Child()
    monkeypatch.setattr(warmup, "_start_process", lambda args, **options: child)
    monkeypatch.setattr(warmup, "_fork_sharer", lambda mine, theirs: child)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(warmup, "_compile_plan", interrupted)
    model = _small_convnet()
    (share, signature), _ = warmup._plan(model, model.input_shape)
    with open(warmup._kernel_lock(share, signature), "w") as f:
        f.write(str(child.pid))                       # the kernel it was killed in the middle of
    with pytest.raises(KeyboardInterrupt):
        warmup._share_work(model, model.input_shape)
    assert child.killed and os.listdir(tmp_path) == []          # its lock removed too


@pytest.mark.skipif(not warmup._FORK, reason="the second process is forked on Linux only")
def test_a_forked_child_is_polled_waited_for_and_killed_like_a_subprocess():
    import subprocess
    pid = os.fork()
    if pid == 0:                                     # the child: sleeps until killed
        try:
            time.sleep(60)
        finally:
            os._exit(0)
    child = warmup._Forked(pid)
    assert child.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        child.wait(0.05)
    child.kill()
    assert child.wait(10) == -9 and child.poll() == -9


def test_no_second_process_to_start_means_compiling_here(monkeypatch, tmp_path):
    """A frozen app has no Python to start: the work is done in this process, no file left."""
    monkeypatch.setattr(warmup.tempfile, "gettempdir", lambda: str(tmp_path))

    def no_python(args, **options):
        raise FileNotFoundError("no such file: python")

    monkeypatch.setattr(warmup, "_start_process", no_python)
    monkeypatch.setattr(warmup, "_FORK", False)                         # (a new interpreter's path)
    model = _small_convnet()
    warmup._share_work(model, model.input_shape)                       # returns, having done nothing
    assert warmup.compile_in_background(model) is None
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fork", [True, False])
def test_two_processes_on_an_empty_cache_compile_every_share_and_leave_no_file(tmp_path, fork):
    """The whole first-run path with its second process (forced on: the test machine may have
    no idle core), in a subprocess with an empty cache and its own temp folder; forked (Linux),
    and as a new interpreter (elsewhere). A forked child takes its part at once, so there this
    process compiles only its own part and loads the other from the disk cache."""
    if fork and not warmup._FORK:
        pytest.skip("the second process is forked on Linux only")
    code = ("import numpy as np\n"
            "from tinycnn import warmup\n"
            "from tinycnn.layers import Conv2D, Dense, Flatten, MaxPool2D\n"
            "from tinycnn.model import Sequential\n"
            f"warmup._FORK = {fork}\n"
            "warmup._two_processes = lambda since: True\n"
            "warmup._finish_in_background = lambda model: None\n"    # (the parallel loops: not this test's)
            "model = Sequential([Conv2D(1, 4, 3, activation='relu'), MaxPool2D(2), Flatten(), Dense(36, 3)],\n"
            "                   input_shape=(1, 8, 8), seed=0)\n"
            "seconds = warmup.compile_for(model)\n"
            "plan = warmup._plan(model, model.input_shape)\n"
            "loaded = [share._cache_hits[signature] > 0 for share, signature in plan]\n"   # from the disk cache
            "print(seconds > 0, len(plan), all(signature in share.overloads for share, signature in plan),\n"
            "      sum(loaded))\n")
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"TINYCNN_BACKGROUND_COMPILE": "1", "TMPDIR": str(temp)}
    fine, kernels, compiled, loaded = run_with_empty_cache(code, tmp_path / "cache", env).split()
    assert [fine, kernels, compiled] == ["True", "2", "True"]
    if fork:
        assert loaded == "1"                         # the other kernel: compiled by the child
    assert os.listdir(temp) == []                    # no lock, no model file left behind
