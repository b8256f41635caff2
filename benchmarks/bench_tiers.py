"""One convolution's forward + backward on each kernel tier: loops, reference, fast.

    python benchmarks/bench_tiers.py [--quick] [--repeats N] [--json out.json]

x (8, 16, 12, 12), W (32, 16, 3, 3), stride 1, no padding, float32: a small layer, so the
loop tier finishes in about a second. Wall time: the median of --repeats calls (the loop tier:
at most 3), in one process, on all cores; CPU time: the process's, averaged over the timed calls. Shows how far each step down the
tiers (tinycnn/kernels/loops.py -> reference.py -> fast/) moves the same computation.
"""
import time

import numpy as np

from common import machine, machine_line, median_ms, repeats_from_args, table, write_json

from tinycnn.runtime import keep_freed_memory
from tinycnn.kernels import fast, loops, reference


def main():
    args = repeats_from_args(__doc__, default=50, quick=10)
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16, 12, 12)).astype(np.float32)
    w = (rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32)
    b = np.zeros(32, dtype=np.float32)
    dy = rng.standard_normal((8, 32, 10, 10)).astype(np.float32)

    def step(impl):
        y, cache = impl.conv2d_forward(x, w, b, (1, 1), (0, 0))
        return impl.conv2d_backward(dy, cache, x.shape, w, (1, 1), (0, 0))

    rows, results = [], {}
    for impl in (loops, reference, fast):
        repeats = min(args.repeats, 3) if impl is loops else args.repeats
        for _ in range(1 if impl is loops else 3):              # warm up (fast: load / compile)
            step(impl)
        cpu = time.process_time()
        ms = median_ms(lambda: step(impl), repeats, warmup=0)
        cpu_ms = (time.process_time() - cpu) / repeats * 1e3
        results[impl.__name__] = {"wall_ms": ms, "cpu_ms": cpu_ms}
        rows.append({"tier": impl.__name__, "ms per forward+backward": ms, "CPU ms (mean)": cpu_ms,
                     "loops' time / this": results["tinycnn.kernels.loops"]["wall_ms"] / ms})
    print(machine_line())
    print(table(rows, ("tier", "ms per forward+backward", "CPU ms (mean)", "loops' time / this")))
    write_json(args.json, {"machine": machine(), "ms": results})


if __name__ == "__main__":
    main()
