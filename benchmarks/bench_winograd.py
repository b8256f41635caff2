"""Winograd F(2x2, 3x3) against the fast kernels' convolution, on the models' 3x3 layers.

    python benchmarks/bench_winograd.py [--quick] [--repeats R] [--json out.json]
    TINYCNN_BENCH_THREADS=1 python benchmarks/bench_winograd.py    # one thread each

(One thread each compares the methods' arithmetic without the threads' waiting: Numba's
OpenMP threads spin while they wait, and that counts as CPU time.)

For each 3x3 layer of tinycnn.models (batch 128, float32) and each pass (forward; backward
without dx, as a first layer runs it; backward with dx) this times
tinycnn.kernels.fast.conv2d_forward / conv2d_backward (the method fast.py picks for the
shape) and tinycnn.kernels.winograd's; for convnet's conv2 also the fused convolution +
ReLU + 2x2 max pooling (conv2d_relu_maxpool2_*), as its training step runs it. Everything
runs in one process, in interleaved rounds: each round times every layer, pass and method
in turn (`--repeats` calls each), so a load that comes and goes on the machine falls on
all methods alike. Reported per figure:
the median over the rounds of wall-clock ms per call with its range (min-max), the
median process CPU ms per call (user + system, all threads: steadier than wall-clock time
when other jobs share the cores), and fast / winograd (above 1: Winograd is faster).
Winograd runs twice: its default (thread chunks on Python threads) and "winograd-prange"
(the same chunks from one Numba parallel kernel).
"""
import os
import resource
import time

import numba
import numpy as np

from common import machine, matmul_peak_gflops, repeats_from_args, table, write_json

from tinycnn.kernels import fast, winograd
from tinycnn.runtime import keep_freed_memory, one_thread_pool

# name, C, F, H (= W), padding, ReLU built in, bias, 2x2 max pooling fused (as convnet's
# training runs its conv2: tinycnn/layers/fused.py)
LAYERS = [
    ("convnet conv1 1->32, 28x28", 1, 32, 28, 0, True, True, False),
    ("convnet conv2 32->64, 13x13", 32, 64, 13, 0, True, True, False),
    ("convnet conv2 + max pool 2, fused", 32, 64, 13, 0, True, True, True),
    ("bnnet conv2 32->64, 12x12", 32, 64, 12, 0, False, False, False),
    ("bnnet conv3 64->64, 10x10", 64, 64, 10, 0, False, False, False),
]
BATCH = 128


class _WinogradOnNumbaThreads:
    """winograd's kernels with their chunks run by the parallel (prange) kernel instead of
    Python threads (winograd.PYTHON_THREADS)."""

    @staticmethod
    def _with_prange(fn, *args, **kwargs):
        before, winograd.PYTHON_THREADS = winograd.PYTHON_THREADS, False
        try:
            return fn(*args, **kwargs)
        finally:
            winograd.PYTHON_THREADS = before

    def conv2d_forward(self, *args, **kwargs):
        return self._with_prange(winograd.conv2d_forward, *args, **kwargs)

    def conv2d_backward(self, *args, **kwargs):
        return self._with_prange(winograd.conv2d_backward, *args, **kwargs)

    def conv2d_relu_maxpool2_forward(self, *args, **kwargs):
        return self._with_prange(winograd.conv2d_relu_maxpool2_forward, *args, **kwargs)

    def conv2d_relu_maxpool2_backward(self, *args, **kwargs):
        return self._with_prange(winograd.conv2d_relu_maxpool2_backward, *args, **kwargs)


# fast: what tinycnn runs now; winograd: chunks on Python threads (its default);
# winograd-prange: the same chunks on Numba's threads, from one parallel kernel
METHODS = {"fast": fast, "winograd": winograd, "winograd-prange": _WinogradOnNumbaThreads()}
PASSES = ("fwd", "bwd no dx", "bwd")


def layer_case(C, F, H, p, relu, bias, pool, seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((BATCH, C, H, H)), 0).astype(np.float32)   # post-ReLU input
    w = (rng.standard_normal((F, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = (0.1 * rng.standard_normal(F)).astype(np.float32) if bias else None
    return x, w, b, ((1, 1), (p, p)), relu, pool


def calls(module, x, w, b, args, relu, pool):
    """The three passes of one method as argument-less functions."""
    if pool:
        forward = lambda: module.conv2d_relu_maxpool2_forward(x, w, b, *args)
        backward = module.conv2d_relu_maxpool2_backward
    else:
        forward = lambda: module.conv2d_forward(x, w, b, *args, relu=relu)
        backward = module.conv2d_backward
    y, cache = forward()
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    return {"fwd": forward,
            "bwd no dx": lambda: backward(dy, cache, x.shape, w, *args, need_dx=False),
            "bwd": lambda: backward(dy, cache, x.shape, w, *args, need_dx=True)}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def time_per_call(fn, repeats):
    """(wall ms, process CPU ms) per call, averaged over `repeats` calls."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - wall) * 1e3 / repeats, (cpu_seconds() - cpu) * 1e3 / repeats


def main():
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    args = repeats_from_args(__doc__, default=10, quick=3)
    threads = int(os.environ.get("TINYCNN_BENCH_THREADS", numba.get_num_threads()))
    numba.set_num_threads(threads)          # (the methods' thread chunks follow this count)
    rounds = 3 if args.quick else 7
    info = machine()
    info["matmul_peak_gflops"] = matmul_peak_gflops()
    info["threads"] = threads
    with one_thread_pool():
        fns = {(layer[0], m): calls(module, *layer_case(*layer[1:]))
               for layer in LAYERS for m, module in METHODS.items()}
        for fn_set in fns.values():                                  # compile and warm up
            for fn in fn_set.values():
                fn()
        samples = {(name, m, p): [] for (name, m) in fns for p in PASSES}
        for _ in range(rounds):
            for (name, m), fn_set in fns.items():
                for p, fn in fn_set.items():
                    samples[name, m, p].append(time_per_call(fn, args.repeats))
    info["numba_threading_layer"] = numba.threading_layer()     # (known once a parallel kernel ran)
    print(f"machine: {info}\n")
    rows = []
    for layer in LAYERS:
        for p in PASSES:
            row = {"layer": layer[0], "pass": p}
            for m in METHODS:
                wall = [s[0] for s in samples[layer[0], m, p]]
                cpu = [s[1] for s in samples[layer[0], m, p]]
                row[f"{m} ms"], row[f"{m} cpu ms"] = float(np.median(wall)), float(np.median(cpu))
                row[f"{m} range"] = f"{min(wall):.2f}-{max(wall):.2f}"
            for m in list(METHODS)[1:]:
                row[f"fast / {m}"] = row["fast ms"] / row[f"{m} ms"]
                row[f"fast / {m} (cpu)"] = row["fast cpu ms"] / row[f"{m} cpu ms"]
            rows.append(row)
    print(f"Milliseconds per call, batch {BATCH}, float32: median of {rounds} interleaved rounds of "
          f"{args.repeats} calls (range min-max); cpu = process CPU time per call, all threads; "
          "fast / x above 1: x is faster\n")
    print(table(rows, ["layer", "pass"] + [f"{m} {k}" for m in METHODS for k in ("ms", "range")]
                + [f"fast / {m}" for m in list(METHODS)[1:]]))
    print()
    print(table(rows, ["layer", "pass"] + [f"{m} cpu ms" for m in METHODS]
                + [f"fast / {m} (cpu)" for m in list(METHODS)[1:]]))
    write_json(args.json, {"machine": info, "batch": BATCH, "rounds": rounds, "repeats": args.repeats,
                           "rows": rows})


if __name__ == "__main__":
    main()
