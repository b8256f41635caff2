"""Running code as on a new machine: a fresh process with an empty Numba cache."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_with_empty_cache(code, cache_dir, env=None):
    """stdout of `python -c code` on the fast kernels, with NUMBA_CACHE_DIR=cache_dir (empty)
    and, unless `env` says otherwise, no second or background compiling process."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "TINYCNN_BACKGROUND_COMPILE": "0", "PYTHONPATH": ROOT,
           "TINYCNN_BACKEND": "numba", **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out.stdout


def compiled_nothing(cache_dir):
    """True if Numba wrote no machine code into cache_dir."""
    return not any(name.endswith(".nbc") for _, _, files in os.walk(cache_dir) for name in files)
