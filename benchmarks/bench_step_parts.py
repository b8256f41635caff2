"""Where one training step's time goes, part by part: the batch gather, augmentation, each
layer's (or fused run's) forward and backward pass, the loss, the gradient norms fit()
records and the optimiser step, run in the order fit() runs them, on real MNIST.

    python benchmarks/bench_step_parts.py [--arch fastnet] [--batch 256] [--steps 40] [--threads 2,1]
                                          [--torch cl+jemalloc] [--json out.json]

The default is the main job's: fastnet, batch 256, Adam with its betas, augmentation on,
the fast kernels, the allocator setting the main job makes. Each part is timed by wall
clock and by process CPU time (all threads; a busy machine disturbs it less); the table
gives the medians over --steps steps after 5 warm-up steps, and each part's share of the
summed medians. With several --threads counts, the steps alternate between them.

--torch SETTING (one of bench_train.py's: cl+jemalloc, cl+tunables, ...; PyTorch installed)
then runs the model's PyTorch twin in a process of its own with that setting (bench_train's
environment and checks), the same batch size and Adam settings, no augmentation, and prints
its step time and its operators' own times per step (torch.profiler, grouped by operator and
input shapes; the profiler's "self CPU" time of each operator on the calling thread, which
includes the work of PyTorch's intra-op threads it waits for). Its rows name the same
layers by their shapes, so the two tables show, layer by layer, where each library spends
a step. The step time is measured without the profiler.

What it showed (November 30, `--threads 2,1 --steps 30`, on the 2-core machine while other
jobs kept one core busy: absolute figures are inflated, the proportions are the point).
With one Numba thread (the work itself, 60.5 ms CPU per step) the convolutions take 89%:
the second one's backward 44%, forward 21%, the first one's 15% and 12%. Everything else is
about 10%: dense 512->256 forward and backward 4.2% (NumPy's BLAS at ~80 GFLOP/s, its
one-thread peak), augmentation 2.5%, Adam 0.8% (0.43-0.49 ms for 153,754 parameters),
the loss 0.3%, the batch gather 0.3%, the gradient norms 0.2%, the ReLU on the (256, 256)
dense output 0.3%; Flatten returns a view (no copy) and fastnet has no dropout. With two
threads on the busy machine, every parallel kernel also paid for waking its second thread:
the same ReLU took 7.1 ms forward and 7.6 ms backward instead of 0.14 and 0.05, the
augmentation 12 ms instead of 1.5. Tried and dropped, each measured interleaved in one
process: Adam as one Numba pass (bitwise equal to the NumPy update, but LLVM does not
vectorise a loop that writes p, m and v: 0.40 ms against NumPy's 0.26; as three loops,
0.44-0.46 ms), and an augmentation kernel with the four taps unrolled and unsigned indices
(bitwise equal; 1.23 against 1.22 ms on one thread, 0.71 against 0.62 on two).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numba
import numpy as np

from bench_train import JEMALLOC, TORCH_SETTINGS, check_allocator, mnist_batches, torch_model, worker_env
from common import ROOT, machine, machine_line, table, torch_or_none, write_json

from tinycnn import datasets, models
from tinycnn.augment import RandomAffine
from tinycnn.layers import fused
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.run import RECIPES
from tinycnn.runtime import keep_freed_memory, one_thread_pool
from tinycnn.train import gradient_norms
from tinycnn import optim


class PartTimer:
    """Wall and process-CPU seconds of named parts, one list per part (a value per step)."""

    def __init__(self):
        self.wall, self.cpu = {}, {}

    def __call__(self, name, fn, *args, **kwargs):
        w, c = time.perf_counter(), time.process_time()
        out = fn(*args, **kwargs)
        self.cpu.setdefault(name, []).append(time.process_time() - c)
        self.wall.setdefault(name, []).append(time.perf_counter() - w)
        return out


def units(model):
    """[(label, first layer index, number of layers)] as Sequential.forward runs them."""
    out, i = [], 0
    while i < len(model.layers):
        n = fused.run_length(model.layers, i) or 1
        label = " + ".join(f"{model.names[k]}" for k in range(i, i + n))
        out.append((label, i, n))
        i += n
    return out


def timed_step(model, loss, opt, augment, x, y, idx, rng, timer):
    """One training step as fit() runs it, every part through `timer`."""
    xb, yb = timer("batch gather x[idx]", lambda: (x[idx], y[idx]))
    if augment is not None:
        xb = timer("augment", augment, xb, rng)
    xb = timer("input check/cast", model._as_input, xb)
    states = []
    with one_thread_pool():
        for label, i, n in units(model):
            layers = model.layers[i:i + n]
            if n > 1:
                xb, state = timer(f"fwd {label}", fused.forward, layers, xb, True)
            else:
                xb, state = timer(f"fwd {label}", layers[0].forward, xb, training=True), None
            states.append((label, i, n, state))
        timer("loss forward", loss.forward, xb, yb)
        dy = timer("loss backward", loss.backward)
        for label, i, n, state in reversed(states):
            layer = model.layers[i]
            if n > 1:
                dy = timer(f"bwd {label}", fused.backward, layer, state, dy, i > 0)
            elif i == 0 and layer.name == "Conv2D":
                dy = timer(f"bwd {label}", layer.backward, dy, need_dx=False)
            else:
                dy = timer(f"bwd {label}", layer.backward, dy)
        timer("gradient norms", gradient_norms, model)
        timer("optimiser step", opt.step)


def torch_worker(arch, batch, steps, data_dir, allocator):
    """In its own process: PyTorch's twin trained as timed_step trains tinycnn's model (same
    batch, Adam's lr and betas from the recipe; no augmentation), its step time, and each
    operator's self time per step (ms), by torch.profiler."""
    check_allocator(allocator)
    torch = torch_or_none()
    from torch.profiler import ProfilerActivity, profile
    recipe = RECIPES[arch]
    x, y, source = mnist_batches(batch, 8, data_dir)
    x = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(y)
    model = torch_model(torch, arch).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], betas=recipe["betas"])
    lossf = torch.nn.CrossEntropyLoss()

    def step(i):
        i %= 8
        opt.zero_grad()
        lossf(model(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch]).backward()
        opt.step()
    for i in range(5):
        step(i)
    walls = []
    for i in range(steps):
        t = time.perf_counter()
        step(i)
        walls.append(time.perf_counter() - t)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(steps):
            step(i)
    ops = [{"op": e.key, "shapes": str([s for s in e.input_shapes if s])[1:-1],
            "ms": e.self_cpu_time_total / 1e3 / steps}
           for e in prof.key_averages(group_by_input_shape=True) if e.self_cpu_time_total > 0]
    return {"wall_ms": 1e3 * float(np.median(walls)), "ops": sorted(ops, key=lambda o: -o["ms"]),
            "data": source, "torch": torch.__version__}


def torch_table(arch, batch, steps, data_dir, setting, top=16):
    """Runs torch_worker in a process with bench_train's environment for `setting`; prints
    and returns its result."""
    layout, allocator = TORCH_SETTINGS[setting]
    if layout != "channels_last":
        raise SystemExit(f"--torch {setting}: this table profiles PyTorch's channels_last settings only")
    if allocator == "jemalloc" and not os.path.exists(JEMALLOC):
        raise SystemExit(f"--torch {setting}: {JEMALLOC} not found (apt-get install libjemalloc2)")
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-worker", arch, str(batch), str(steps),
                          data_dir, allocator], capture_output=True, text=True, cwd=ROOT, env=worker_env(allocator))
    if out.returncode != 0:
        raise SystemExit(f"the PyTorch worker failed:\n{out.stderr}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    ops, total = result["ops"], sum(o["ms"] for o in result["ops"])
    rows = [{"PyTorch operator": o["op"], "input shapes": o["shapes"], "ms per step": o["ms"],
             "% of op time": 100 * o["ms"] / total} for o in ops[:top]]
    rest = sum(o["ms"] for o in ops[top:])
    rows += [{"PyTorch operator": f"the other {len(ops) - top} operators", "input shapes": "",
              "ms per step": rest, "% of op time": 100 * rest / total},
             {"PyTorch operator": "sum (profiled)", "input shapes": "", "ms per step": total, "% of op time": 100.0}]
    print(f"\nPyTorch {result['torch']} twin, {setting} (its own process), batch {batch}, Adam as above, no "
          f"augmentation, {result['data']}: {result['wall_ms']:.2f} ms per step (median of {steps}, "
          f"unprofiled); operators' self time per step, under torch.profiler:\n")
    print(table(rows, ["PyTorch operator", "input shapes", "ms per step", "% of op time"]))
    return {"setting": setting, **result}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fastnet", choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the arch's recipe's)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps (default 40)")
    parser.add_argument("--no-augment", action="store_true", help="without augmentation")
    parser.add_argument("--threads", default=None,
                        help="Numba thread counts, comma-separated, alternated step by step in this one "
                             "process, e.g. 2,1: 1 shows each part's work without the cost of waking a "
                             "second thread, which a busy shared machine inflates (default: all threads)")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"))
    parser.add_argument("--torch", metavar="SETTING", help="also profile PyTorch's twin in this bench_train.py "
                        "setting, e.g. cl+jemalloc (PyTorch's best on this machine), in its own process")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--torch-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        arch, batch, steps, data_dir, allocator = args.torch_worker
        print(json.dumps(torch_worker(arch, int(batch), int(steps), data_dir, allocator)))
        return
    # (Only now: numba.get_num_threads() starts Numba's thread pool, whose threads, in the
    # PyTorch worker's process, made PyTorch's steps 1.7x slower.)
    args.threads = args.threads or str(numba.get_num_threads())
    if args.torch is not None:
        if args.torch not in TORCH_SETTINGS:
            parser.error(f"--torch must be one of {', '.join(TORCH_SETTINGS)}, got {args.torch!r}")
        if torch_or_none() is None:
            parser.error("--torch needs PyTorch (pip install torch)")
    try:
        counts = [int(n) for n in args.threads.split(",")]
    except ValueError:
        counts = []
    if not counts or not all(1 <= n <= numba.config.NUMBA_NUM_THREADS for n in counts):
        parser.error(f"--threads must be counts from 1 to {numba.config.NUMBA_NUM_THREADS}, got {args.threads!r}")
    keep_freed_memory()                          # as the main job runs (tinycnn/runtime.py)
    recipe = RECIPES[args.arch]
    batch = args.batch or recipe["batch_size"]
    (x_u8, y), _ = datasets.load_mnist(data_dir=args.data_dir, download=False)
    x = datasets.add_channel_axis(datasets.standardize(datasets.to_float(x_u8))[0])
    model = models.ARCHITECTURES[args.arch](seed=0)
    loss = SoftmaxCrossEntropy()
    opt = optim.Adam(model, lr=recipe["lr"], betas=recipe["betas"])
    augment = None if args.no_augment else RandomAffine()
    rng, order = np.random.default_rng(1), np.random.default_rng(0).permutation(len(x))
    timers = {n: PartTimer() for n in counts}
    warmup = 5 * len(counts)
    for s in range(warmup + args.steps * len(counts)):
        n = counts[s % len(counts)]
        if s == warmup:                          # warm-up steps (compiling, first allocations) not counted
            timers = {n: PartTimer() for n in counts}
        numba.set_num_threads(n)
        idx = order[(s * batch) % (len(x) - batch):][:batch]
        timed_step(model, loss, opt, augment, x, y, idx, rng, timers[n])
    rows, columns = [], ["part"]
    for n, timer in timers.items():
        wall = {k: 1e3 * float(np.median(v)) for k, v in timer.wall.items()}
        cpu = {k: 1e3 * float(np.median(v)) for k, v in timer.cpu.items()}
        wall["sum of the medians"], cpu["sum of the medians"] = sum(wall.values()), sum(cpu.values())
        if not rows:
            rows = [{"part": k} for k in wall]
        for row in rows:
            k = row["part"]
            row.update({f"{n}T wall ms": wall[k], f"{n}T CPU ms": cpu[k],
                        f"{n}T CPU %": 100 * cpu[k] / cpu["sum of the medians"]})
        columns += [f"{n}T wall ms", f"{n}T CPU ms", f"{n}T CPU %"]
    print(f"{args.arch}, batch {batch}, Adam lr {recipe['lr']:g} betas {recipe['betas']}, augmentation "
          f"{'off' if augment is None else 'on'}; medians of {args.steps} steps per thread count "
          f"(nT: n Numba threads, steps alternated; milliseconds; CPU = process CPU time, all threads)")
    print(machine_line() + "\n")
    print(table(rows, columns))
    torch_result = torch_table(args.arch, batch, args.steps, args.data_dir, args.torch) if args.torch else None
    write_json(args.json, {"machine": machine(), "arch": args.arch, "batch": batch, "steps": args.steps,
                           "wall_ms": {n: t.wall for n, t in timers.items()},
                           "cpu_ms": {n: t.cpu for n, t in timers.items()}, "rows": rows, "torch": torch_result})

if __name__ == "__main__":
    main()
