"""Shared by the benchmark scripts: options, timing, tables, JSON, machine facts, optional PyTorch."""
import argparse
import json
import os
import platform
import resource
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def repeats_from_args(doc, default, quick):
    """Parse --quick, --repeats and --json (a script's docstring as help); args.repeats is
    filled in: `default` timed calls per figure, `quick` with --quick."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed calls per figure (default {default}, quick {quick})")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    args.repeats = args.repeats or (quick if args.quick else default)
    return args


def median_ms(fn, repeats, warmup=3):
    """Median wall time of fn() in milliseconds over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def images_per_second(step, batch, steps, warmup=5):
    """Throughput of `step(i)` (one training step on batch i) over `steps` timed calls that
    follow `warmup` untimed ones."""
    for i in range(warmup):
        step(i)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return batch * steps / (time.perf_counter() - t)


def torch_or_none():
    """PyTorch if installed (optional: `pip install torch==2.13.0`), set to 2 threads."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def matmul_peak_gflops(repeats=20):
    """float32 GEMM throughput of NumPy's BLAS on this machine (all threads), 1024^3."""
    a = np.random.rand(1024, 1024).astype(np.float32)
    b = np.random.rand(1024, 1024).astype(np.float32)
    ms = median_ms(lambda: a @ b, repeats)
    return 2 * 1024 ** 3 / (ms * 1e-3) / 1e9


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_model():
    """The CPU's name from /proc/cpuinfo (Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def simd():
    """The widest vector instructions the CPU offers: "AVX-512", "AVX2" or what is known."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return platform.machine()
    return "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()


def blas_kernel():
    """Which of its CPU-specific kernels NumPy's OpenBLAS runs (threadpoolctl), e.g.
    "Haswell" (256-bit FMA) or "SkylakeX" (512-bit), or None when not known."""
    try:
        import threadpoolctl
        return next((i.get("architecture") for i in threadpoolctl.threadpool_info()
                     if i["user_api"] == "blas" and "numpy" in i["filepath"].lower()), None)
    except Exception:
        return None


def machine():
    import numba
    from llvmlite import binding
    torch = torch_or_none()
    return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
            "simd": simd(), "llvm_cpu": numba.config.CPU_NAME or binding.get_host_cpu_name(),
            "blas_kernel": blas_kernel(),
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "torch": torch.__version__ if torch else None}


def machine_line(peak=None):
    """One line for a benchmark's header: the CPU, its vector width, the kernel NumPy's
    OpenBLAS runs and the matmul peak, which together say what a figure was measured on.
    (Some machines here set OPENBLAS_CORETYPE, which holds OpenBLAS to an older kernel: on
    an AVX-512 EPYC, Haswell's 256-bit one reaches about half the peak of SkylakeX's.)
    `peak`: GFLOP/s a benchmark has measured already (else measured here)."""
    info = machine()
    peak = matmul_peak_gflops() if peak is None else peak
    forced = f", forced by OPENBLAS_CORETYPE={info['openblas_coretype']}" if info["openblas_coretype"] else ""
    return (f"CPU: {info['cpu']} ({info['llvm_cpu']}, {info['simd']}), {info['cpus']} cores; NumPy's OpenBLAS "
            f"runs its {info['blas_kernel'] or 'unknown'} kernel{forced}; matmul peak (NumPy float32 1024^3, "
            f"all threads) {peak:.0f} GFLOP/s.")


def table(rows, columns):
    """A Markdown table of dict rows."""
    fmt = lambda v: f"{v:,.2f}" if isinstance(v, float) else ("-" if v is None else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path, payload):
    if path:
        with open(path, "w") as f:
            json.dump(payload, f, indent=1)
        print(f"\nwrote {path}")
