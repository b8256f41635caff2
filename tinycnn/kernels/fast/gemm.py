"""The matrix product the GEMM convolution runs on: NumPy's own single-precision BLAS."""
import ctypes

import numpy as np
from numba import types
from numba.extending import overload

from ...runtime import single_threaded_scipy_blas
from .parallel import JIT

single_threaded_scipy_blas()      # np.dot below is called from several threads at once

# Numba's np.dot calls SciPy's BLAS. For this library's thin products NumPy's own OpenBLAS
# is up to 2x faster (measured single-threaded: LeNet's 6x25 @ 25x4704 at 13 GFLOP/s via
# np.dot in Numba, 34 via NumPy's BLAS; 16x150 @ 150x3400 at 33 and 65; convnet's
# 64x288 @ 288x363 at 60 and 80), so float32 products call NumPy's cblas_sgemm directly,
# through ctypes (runtime.one_thread_pool holds that BLAS to one thread while a model runs,
# so each of Numba's threads runs its own product). The function is passed to the kernels as an argument (a ctypes function
# is a first-class value in Numba, and its address is not baked into the cached code).
# Where it cannot be found (a NumPy built on another BLAS) and for float64, gemm is None
# and the kernels use np.dot.

def _find_numpy_sgemm():
    """NumPy's cblas_sgemm as a ctypes function, or None."""
    try:
        import threadpoolctl
        for info in threadpoolctl.threadpool_info():
            if info["user_api"] == "blas" and "numpy" in info["filepath"].lower():
                lib = ctypes.CDLL(info["filepath"])
                for name, index in (("scipy_cblas_sgemm64_", ctypes.c_int64), ("cblas_sgemm64_", ctypes.c_int64),
                                    ("cblas_sgemm", ctypes.c_int)):
                    fn = getattr(lib, name, None)
                    if fn is not None:
                        i, f, p = index, ctypes.c_float, ctypes.c_void_p
                        # (order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
                        fn.argtypes = [ctypes.c_int] * 3 + [i, i, i, f, p, i, p, i, f, p, i]
                        fn.restype = None
                        return fn
    except Exception:          # any surprise here just means the np.dot path
        return None
    return None


SGEMM = _find_numpy_sgemm()


def gemm_for(dtype):
    """NumPy's sgemm for float32 (passed to the kernels as their `gemm`), else None (np.dot)."""
    return SGEMM if dtype == np.float32 else None


def matmul(gemm, a, trans_a, b, trans_b, c, beta):
    """c = op(a) @ op(b) + beta * c, op(m) = m.T when trans_*; a, b, c C-contiguous.
    For jitted code only: the overload below picks _matmul_blas or, when gemm is None,
    _matmul_dot while the caller is typed, so only the one in use is compiled. (One function
    with `if gemm is None:` compiled both branches, and np.dot brings its error messages'
    string formatting with it: 1.5-2 s of CPU per kernel on a first run, for a path float32
    never takes.)"""
    raise TypeError("matmul runs inside jitted kernels only")


def _matmul_blas(gemm, a, trans_a, b, trans_b, c, beta):
    M, N = c.shape
    K = a.shape[0] if trans_a else a.shape[1]
    # CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112
    gemm(101, 112 if trans_a else 111, 112 if trans_b else 111, M, N, K, 1.0,
         a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], beta, c.ctypes.data, N)


def _matmul_dot(gemm, a, trans_a, b, trans_b, c, beta):
    aa = np.ascontiguousarray(a.T) if trans_a else a
    bb = np.ascontiguousarray(b.T) if trans_b else b
    if beta == 0:
        c[:] = np.dot(aa, bb)
    else:
        c *= beta
        c += np.dot(aa, bb)


@overload(matmul, jit_options=JIT)
def _matmul_typed(gemm, a, trans_a, b, trans_b, c, beta):
    return _matmul_dot if isinstance(gemm, types.NoneType) else _matmul_blas
