"""tinycnn changes process-wide settings only where runtime.py says: importing it and
training through the Python API leave glibc's malloc alone, keep_freed_memory() changes it
(unless TINYCNN_KEEP_MEMORY=0), and BLAS thread counts change only inside one_thread_pool()
while the fast kernels are selected, and while a fast kernel called on its own runs."""
import gc
import json
import os
import subprocess
import sys

import pytest
import threadpoolctl

import tinycnn
from tinycnn.runtime import one_thread_pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run in a fresh process. Two independent witnesses of a mallopt call:
#  - every function looked up through ctypes.CDLL is recorded (installed before tinycnn is
#    imported), so a Python-level mallopt lookup anywhere shows up by name;
#  - glibc's behaviour: by default a 30 MB block is mmapped (glibc's dynamic threshold never
#    rises above 32 MB, and only after freeing a mapped block that large), so mallinfo2's
#    mapped bytes grow by 30 MB; after mallopt(M_MMAP_THRESHOLD, 32 MB) it comes from the heap.
PROBE = r"""
import ctypes, json, sys
looked_up = []
_getitem = ctypes.CDLL.__getitem__
def spy(self, name):
    looked_up.append(name)
    return _getitem(self, name)
ctypes.CDLL.__getitem__ = spy

import numpy as np
import tinycnn
tinycnn.set_backend("numpy")           # the model code paths, without compiling fast kernels
rng = np.random.default_rng(0)
x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
model = tinycnn.models.lenet5()
tinycnn.fit(model, tinycnn.losses.SoftmaxCrossEntropy(), tinycnn.optim.Adam(model), x, y,
            epochs=1, batch_size=16, log=None)
model.predict(x)
kept = tinycnn.runtime.keep_freed_memory() if sys.argv[1] == "call" else None

class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
before = libc.mallinfo2().hblkhd
block = libc.malloc(30 << 20)
mapped = libc.mallinfo2().hblkhd - before
libc.free(block)
print(json.dumps({"mallopt_looked_up": "mallopt" in looked_up, "kept": kept,
                  "mapped_mb": mapped / 2 ** 20}))
"""


def probe(mode, **env):
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT, **env), timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or
                                os.confstr("CS_GNU_LIBC_VERSION") is None or
                                tuple(map(int, os.confstr("CS_GNU_LIBC_VERSION").split()[1].split(".")[:2])) < (2, 33),
                                reason="needs glibc >= 2.33 (mallinfo2)")


@glibc_only
def test_import_and_training_leave_malloc_alone():
    got = probe("none")
    assert got["mallopt_looked_up"] is False
    assert got["mapped_mb"] >= 30           # glibc's default: a large block is its own mapping


@glibc_only
def test_keep_freed_memory_sets_malloc_for_the_process():
    got = probe("call", TINYCNN_KEEP_MEMORY="1")
    assert got["kept"] is True and got["mallopt_looked_up"] is True
    assert got["mapped_mb"] == 0            # the 30 MB block now comes from the heap


@glibc_only
def test_keep_memory_0_opts_out():
    got = probe("call", TINYCNN_KEEP_MEMORY="0")
    assert got["kept"] is False and got["mallopt_looked_up"] is False
    assert got["mapped_mb"] >= 30


def blas_threads():
    return [lib.num_threads for lib in threadpoolctl.ThreadpoolController().lib_controllers
            if lib.user_api == "blas"]


def test_blas_threads_change_only_inside_the_block_with_fast_kernels():
    import scipy.linalg.cython_blas  # noqa: F401  (SciPy's BLAS, which the fast kernels load, must be seen too)
    previous = tinycnn.get_backend()
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        assert len(blas_threads()) >= 2 and set(blas_threads()) == {2}     # NumPy's and SciPy's
        try:
            tinycnn.set_backend("numba")
            with one_thread_pool():
                assert set(blas_threads()) == {1}
                with one_thread_pool():                  # re-entrant
                    assert set(blas_threads()) == {1}
                assert set(blas_threads()) == {1}
            assert set(blas_threads()) == {2}            # restored on leaving
            tinycnn.set_backend("numpy")
            with one_thread_pool():
                assert set(blas_threads()) == {2}        # reference kernels: BLAS keeps its threads
        finally:
            tinycnn.set_backend(previous)


def test_a_fast_kernel_called_on_its_own_holds_blas_to_one_thread_while_it_runs(monkeypatch):
    # Outside any block (a learner calling tinycnn.kernels.fast directly), each kernel holds
    # every BLAS to one thread while its shares run, then gives the threads back; inside a
    # model's block it changes nothing.
    import numpy as np
    import scipy.linalg.cython_blas  # noqa: F401
    from tinycnn.kernels import fast
    from tinycnn.kernels.fast import parallel
    seen, real = [], parallel._run_shares
    monkeypatch.setattr(parallel, "_run_shares", lambda *a: seen.append(set(blas_threads())) or real(*a))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((4, 32, 6, 6), dtype=np.float32), rng.standard_normal((8, 32, 3, 3), dtype=np.float32)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        fast.conv2d_forward(x, w, None, (1, 1), (0, 0))
        assert seen and all(threads == {1} for threads in seen)
        assert set(blas_threads()) == {2}                # given back
        seen.clear()
        with tinycnn.runtime.blas_held():
            fast.conv2d_forward(x, w, None, (1, 1), (0, 0))
            assert seen and all(threads == {1} for threads in seen)
        assert set(blas_threads()) == {2}


# At exit: an atexit hook registered before quick_exit() runs after its gc.freeze (atexit is
# last in, first out) and reports how many objects the final collections will then skip,
# and whether a file written in a `with` block and a result printed at the end are intact.
EXIT_PROBE = r"""
import atexit, gc, sys
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
import tinycnn
from tinycnn import cli, run
if sys.argv[1] == "cli":
    cli.main(["summary", "lenet5"])
elif sys.argv[1] == "call":
    tinycnn.runtime.quick_exit()
    tinycnn.runtime.quick_exit()                       # (registered once)
    with open(sys.argv[2], "w") as f:
        f.write("all of it")
print("done")
"""


@pytest.mark.parametrize("how", ["none", "call", "cli"])
def test_quick_exit_freezes_the_collector_only_at_exit(tmp_path, how):
    out = subprocess.run([sys.executable, "-c", EXIT_PROBE, how, str(tmp_path / "f.txt")], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-2:] == ["done", f"frozen at exit: {how != 'none'}"], out.stdout
    assert gc.get_freeze_count() == 0           # (the hook runs at exit only, never before)
    if how == "call":
        assert (tmp_path / "f.txt").read_text() == "all of it"
