"""How tinycnn sets up the process for speed on a CPU, in one place. Importing tinycnn
changes nothing process-wide: what follows happens only where this file says.

Two pools of threads, one job at a time. Numba's parallel kernels run on OpenMP threads;
NumPy's matrix products run on OpenBLAS threads. Each pool keeps its threads spinning for
a while after a job, so when the two alternate (kernel, GEMM, kernel, ...) each steals the
cores the other needs: measured on a 2-core machine, a convnet training step took 2-7x
longer than with one pool. tinycnn therefore does every heavy step of a convolution inside
its Numba kernels (including the matrix products, called per block of images from the
Numba threads), and runs every model forward and backward pass (and so training and
prediction) inside `one_thread_pool()`. While the fast kernels are selected, that block
holds every BLAS in the process to one thread: NumPy's, and SciPy's (the one behind
Numba's np.dot, called from several Numba threads at once), leaving the cores to Numba's
pool; on leaving it the previous thread counts come back. A fast kernel called on its own,
outside such a block, holds them the same way while it runs (`blas_held()`). Otherwise, and
whenever the reference (NumPy) kernels are selected, no thread count is touched.

Large arrays. glibc returns big freed blocks to the OS and maps fresh ones on the next
allocation; touching a fresh page costs ~3 us on these virtual machines, so a training step
that allocates 50 MB of temporaries pays ~40 ms in page faults alone. `keep_freed_memory()`
asks glibc to keep freed memory for reuse instead (memory then stays at its high-water
mark). This is a setting of the whole process, for every library in it, and cannot be
undone, so tinycnn never makes it on import: the main job (`examples/train_mnist.py`,
`tinycnn train`), the `tinycnn` command and the benchmarks call it first thing; call it
yourself before training from Python for the same speed. TINYCNN_KEEP_MEMORY=0 turns the
call into a no-op.

Exit. A process that has run Numba's compiler spends 0.3-0.4 s at exit collecting the
objects it made; `quick_exit()` (the `tinycnn` command, the main job and the compiling
processes call it) lets the operating system take them back instead.
"""
import atexit
import contextlib
import ctypes
import gc
import sys

import threadpoolctl

from .backend import get_backend
from .environment import flag

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory():
    """Ask glibc to serve blocks up to 32 MB from the heap and never trim it, for the rest
    of the process. True if it did; False on other C libraries and with TINYCNN_KEEP_MEMORY=0."""
    if not sys.platform.startswith("linux") or not flag("TINYCNN_KEEP_MEMORY"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
                    and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):       # not glibc (e.g. musl)
        return False


def quick_exit():
    """Let this process exit without tearing down what Numba's compiler and LLVM built, one
    object at a time: at exit, an atexit hook freezes the garbage collector (gc.freeze), so
    the interpreter's last collections skip those objects and the operating system takes the
    memory back at once. Measured: a process that ran fastnet's fast kernels took 0.34 s to
    exit, 0.04 s with this. Only the exit changes (atexit hooks and module clean-up still
    run; tinycnn writes every file inside a `with` block, closed long before). The `tinycnn`
    command, the main job and tinycnn's own compiling processes call it; registered once."""
    atexit.unregister(gc.freeze)       # (a second call replaces the first registration)
    atexit.register(gc.freeze)


def single_threaded_scipy_blas():
    """Make the BLAS that Numba's np.dot calls (SciPy's) single-threaded while tinycnn's
    fast kernels run: load it now, so that `one_thread_pool()` finds it among the BLAS
    libraries it holds to one thread. Changes no thread count by itself."""
    global _blas_libs
    import scipy.linalg.cython_blas  # noqa: F401  (loads the library Numba will call)
    _blas_libs = None                # look for the libraries again on the next block


_blas_libs = None


def _numpy_blas():
    """The BLAS libraries' controllers, found once (threadpoolctl's own context manager
    searches them on every entry, ~2 ms; setting a count directly costs microseconds)."""
    global _blas_libs
    if _blas_libs is None:
        controller = threadpoolctl.ThreadpoolController()
        _blas_libs = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    return _blas_libs


@contextlib.contextmanager
def one_thread_pool():
    """Within this block every BLAS runs single-threaded, so Numba's threads have the cores.
    Only while the fast (Numba) kernels are selected: the reference kernels' matrix products
    are NumPy's own and keep all its threads. Re-entrant; the previous thread counts are
    restored on exit."""
    if get_backend() != "numba":
        yield
        return
    with blas_held():
        yield


_held = 0       # how many blas_held() blocks are open


def blas_holding():
    """Whether a blas_held() block is open (a model's pass, or a fast kernel's own call)."""
    return _held > 0


@contextlib.contextmanager
def blas_held():
    """Every BLAS held to one thread within the block, whichever kernels are selected: what
    one_thread_pool() does for the fast kernels, and what a fast kernel called on its own
    does for itself (kernels/fast/parallel.py: called bare, its Numba threads each called
    NumPy's BLAS, whose own threads then fought them for the cores; a small convolution took
    8 ms per call instead of 0.07-0.11 on a 2-core AMD EPYC). The previous thread counts
    come back on exit."""
    global _held
    libs = _numpy_blas()
    before = [lib.num_threads for lib in libs]
    for lib, n in zip(libs, before):
        if n != 1:
            lib.set_num_threads(1)
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        for lib, n in zip(libs, before):
            if n != 1:
                lib.set_num_threads(n)

