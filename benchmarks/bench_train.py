"""Training and inference speed of whole models on real MNIST batches, tinycnn against
PyTorch's same model (when installed) in several settings, with the ratios that issue goals
are stated in, the GEMM-bound limit of this machine, peak memory and start-up time.

Each measurement runs in its own process (so peak memory is its own, the two libraries'
thread pools never meet, and each process has its own allocator setting). Training:
`--steps` Adam steps at the given batch size after 5 warm-up steps; images/s = images /
wall time; seconds per epoch = 60,000 / images/s. Inference: batches of 1000 in eval mode,
for at least a second after one warm-up batch; PyTorch's channels_last settings also time
the model as its inference guidance tunes it (torch.jit.optimize_for_inference of the
scripted model: frozen, batch norm folded, oneDNN's kernels) and count the faster of the
two. Each worker also reports its minor page faults and process CPU time per training step
(resource.getrusage), which show whether its allocator setting took effect and how busy the
machine was.

PyTorch runs in these settings (`--torch`, default all; see TORCH_SETTINGS):
    nchw          NCHW, glibc's default allocator settings: PyTorch untuned
    cl            channels_last, glibc's defaults
    cl+mallopt    channels_last, and the worker first calls tinycnn.runtime.keep_freed_memory()
                  (glibc's mallopt: serve blocks up to 32 MB from the heap, never trim it),
                  the call tinycnn's main job and its own worker make
    cl+tunables   channels_last, the same setting through the environment:
                  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824
    cl+jemalloc   channels_last, jemalloc preloaded (LD_PRELOAD of Debian's libjemalloc2,
                  skipped when not installed) with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1
                  (keep freed pages: with jemalloc's default decay PyTorch still faulted
                  ~3,500 pages per fastnet step here)
The headline ratios are against the best PyTorch setting per model (highest median
images/s), with the untuned one (nchw) beside them. glibc's default is adaptive: freeing a
block it had mapped (above 128 KB) raises its mapping threshold to that block's size, up to
32 MB, so a process that has prepared its data (a worker here frees float32 copies of its
images, 26 MB at the defaults) often runs close to the kept setting anyway (fastnet in
channels_last, batch 128: 4,300 page faults per step in a fresh process, 0-6 after one
26 MB array was allocated and freed).
The faults/step column shows what each setting's process actually did.

These machines' speed drifts by 10-30% over minutes, so the measurements are taken in
`--rounds` rounds (default 3); within a round each model's tinycnn and PyTorch processes run
back to back. Images/s are the medians over the rounds; each ratio is the median of the
rounds' own ratios (the JSON keeps every round).

    python benchmarks/bench_train.py [--quick] [--rounds 3] [--models convnet,lenet5,fastnet,bnnet] [--json out.json]
    python benchmarks/bench_train.py --models fastnet --torch nchw,cl+mallopt   # some settings only
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from common import (ROOT, images_per_second, machine, machine_line, matmul_peak_gflops, peak_rss_mb, table,
                    torch_or_none, write_json)

HERE = os.path.abspath(__file__)
EPOCH = 60_000

# PyTorch's settings, each run in its own process: name -> (memory layout, allocator).
TORCH_SETTINGS = {"nchw": ("nchw", "default"), "cl": ("channels_last", "default"),
                  "cl+mallopt": ("channels_last", "mallopt"), "cl+tunables": ("channels_last", "tunables"),
                  "cl+jemalloc": ("channels_last", "jemalloc")}
UNTUNED = "nchw"
GLIBC_KEEP = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"
JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
JEMALLOC_KEEP = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def worker_env(allocator):
    """The environment of a worker process with this allocator setting ("default" and
    "mallopt" clear the variables the other settings use, so a user's own do not leak in)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "MALLOC_CONF")}
    if allocator == "tunables":
        env["GLIBC_TUNABLES"] = GLIBC_KEEP
    elif allocator == "jemalloc":
        env.update(LD_PRELOAD=JEMALLOC, MALLOC_CONF=JEMALLOC_KEEP)
    return env


def check_allocator(allocator):
    """Inside a worker: make the in-process setting, and check the preloaded one is there."""
    if allocator == "mallopt":
        from tinycnn.runtime import keep_freed_memory
        if not keep_freed_memory():
            raise RuntimeError("keep_freed_memory() made no change (not glibc, or TINYCNN_KEEP_MEMORY=0)")
    elif allocator == "jemalloc":
        with open("/proc/self/maps") as f:
            if "libjemalloc" not in f.read():
                raise RuntimeError(f"{JEMALLOC} is not loaded in the worker")


def mnist_batches(batch, count, data_dir):
    """`count` batches of real, standardised MNIST training images (random data if absent)."""
    from tinycnn import datasets
    try:
        (x, y), _ = datasets.load_mnist(data_dir=data_dir, download=False)
        source = "real MNIST"
    except (FileNotFoundError, ValueError):
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (batch * count, 28, 28), dtype=np.uint8), rng.integers(0, 10, batch * count)
        source = "random images (MNIST not found)"
    n = batch * count
    x = ((x[:n].astype(np.float32) / 255 - 0.1307) / 0.3081)[:, None]
    return x, y[:n].astype(np.int64), source


def train_flops_per_image(arch):
    """Multiply-adds x 2 of one forward pass, x 3 for training (forward, dW, dx)."""
    import tinycnn
    model = tinycnn.models.ARCHITECTURES[arch]()
    flops = 0
    for layer, out in zip(model.layers, model.output_shapes(model.input_shape)):
        if layer.name == "Conv2D":
            kh, kw = layer.kernel_size
            flops += 2 * layer.in_channels * kh * kw * int(np.prod(out))
        elif layer.name == "Dense":
            flops += 2 * layer.in_features * layer.out_features
    return 3 * flops


# -- workers (one process each) -----------------------------------------------------------

def inference_images_per_second(predict, batch, seconds=1.0):
    """Throughput of predict() on one batch: one warm-up call, then calls until `seconds`
    have passed (at least 5)."""
    predict()
    calls, t = 0, time.perf_counter()
    while calls < 5 or time.perf_counter() - t < seconds:
        predict()
        calls += 1
    return calls * batch / (time.perf_counter() - t)


def timed_training(step, batch, steps, warmup=5):
    """images/s of `step(i)` over `steps` timed calls after `warmup` untimed ones, with the
    minor page faults and the process CPU milliseconds (all threads) per timed step."""
    for i in range(warmup):
        step(i)
    before = resource.getrusage(resource.RUSAGE_SELF)
    rate = images_per_second(lambda i: step(warmup + i), batch, steps, warmup=0)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"train_img_s": rate, "faults_per_step": (after.ru_minflt - before.ru_minflt) / steps,
            "cpu_ms_per_step": 1e3 * cpu / steps}


def worker_tinycnn(arch, batch, steps, data_dir, layout):
    import tinycnn
    from tinycnn.losses import SoftmaxCrossEntropy
    x, y, source = mnist_batches(batch, steps + 5, data_dir)
    model = tinycnn.models.ARCHITECTURES[arch](seed=0)
    loss, opt = SoftmaxCrossEntropy(), tinycnn.optim.Adam(model, lr=1e-3)

    def step(i):
        xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
        loss.forward(model.forward(xb, training=True), yb)
        model.backward(loss.backward(), need_dx=False)
        opt.step()
    train = timed_training(step, batch, steps)
    xi = np.ascontiguousarray(x[:1000]) if len(x) >= 1000 else np.repeat(x, -(-1000 // len(x)), 0)[:1000]
    infer = inference_images_per_second(lambda: model.predict_proba(xi, batch_size=1000), len(xi))
    return {**train, "infer_img_s": infer, "peak_rss_mb": peak_rss_mb(), "data": source}


TORCH_TWINS = ("convnet", "lenet5", "fastnet", "bnnet")      # the models torch_model can build


def torch_model(torch, arch):
    """PyTorch's twin of tinycnn.models.ARCHITECTURES[arch]: the same layers in the same
    order, the same shapes, biases where tinycnn has them, BatchNorm's defaults (momentum
    0.1, eps 1e-5) as tinycnn's."""
    nn = torch.nn
    if arch == "convnet":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))
    if arch == "lenet5":
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(),
                             nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))
    if arch == "fastnet":
        return nn.Sequential(nn.Conv2d(1, 24, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(24, 32, 5),
                             nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(512, 256), nn.ReLU(),
                             nn.Linear(256, 10))
    if arch == "bnnet":
        return nn.Sequential(nn.Conv2d(1, 32, 5, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                             nn.Conv2d(64, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(1024, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU(),
                             nn.Dropout(0.3), nn.Linear(128, 10))
    raise ValueError(f"no PyTorch twin for {arch!r}; there are: {', '.join(TORCH_TWINS)}")


def copy_weights(model, twin):
    """tinycnn's parameters and BN statistics into the twin, layer by layer in order (the
    twin's parameter-free layers, ReLU and pooling, are skipped on both sides). Used by
    tests/test_bench_twins.py and by bench_time_to_accuracy.py (the same initial weights)."""
    import torch
    ours = [layer for layer in model.layers if layer.params]
    theirs = [m for m in twin if any(True for _ in m.parameters(recurse=False))]
    assert [type(m).__name__ for m in theirs] == [
        {"Conv2D": "Conv2d", "Dense": "Linear", "BatchNorm2D": "BatchNorm2d", "BatchNorm1D": "BatchNorm1d"}[l.name]
        for l in ours]
    with torch.no_grad():
        for layer, module in zip(ours, theirs):
            if layer.name == "Conv2D" or layer.name == "Dense":
                W = layer.params["W"] if layer.name == "Conv2D" else layer.params["W"].T   # Dense: (in, out)
                module.weight.copy_(torch.from_numpy(np.ascontiguousarray(W)))
                assert (module.bias is None) == ("b" not in layer.params), f"bias differs at {layer}"
                if module.bias is not None:
                    module.bias.copy_(torch.from_numpy(layer.params["b"]))
            else:
                module.weight.copy_(torch.from_numpy(layer.params["gamma"]))
                module.bias.copy_(torch.from_numpy(layer.params["beta"]))
                module.running_mean.copy_(torch.from_numpy(layer.state["running_mean"]))
                module.running_var.copy_(torch.from_numpy(layer.state["running_var"]))
                assert (module.eps, module.momentum) == (layer.eps, layer.momentum)


def worker_torch(arch, batch, steps, data_dir, layout):
    torch = torch_or_none()
    x, y, source = mnist_batches(batch, steps + 5, data_dir)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    model = torch_model(torch, arch)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()

    def step(i):
        opt.zero_grad()
        lossf(model(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch]).backward()
        opt.step()
    model.train()
    train = timed_training(step, batch, steps)
    model.eval()
    xi = x[:1000] if len(x) >= 1000 else x.repeat(-(-1000 // len(x)), 1, 1, 1)[:1000]
    with torch.no_grad():
        infer = inference_images_per_second(lambda: model(xi), len(xi))
        frozen = frozen_for_inference(torch, model, xi) if layout == "channels_last" else None
        infer_frozen = inference_images_per_second(lambda: frozen(xi), len(xi)) if frozen else None
    return {**train, "infer_img_s": max(infer, infer_frozen or 0), "infer_eager_img_s": infer,
            "infer_frozen_img_s": infer_frozen, "peak_rss_mb": peak_rss_mb(), "data": source}


def frozen_for_inference(torch, model, x):
    """PyTorch's own inference tuning: TorchScript, frozen, optimize_for_inference (folds
    batch norm into the convolutions, as tinycnn's eval mode does, and picks oneDNN's
    kernels); None if it fails for this model."""
    try:
        frozen = torch.jit.optimize_for_inference(torch.jit.script(model))
        frozen(x)
        return frozen
    except Exception as error:   # only costs PyTorch its best inference figure; eager is kept
        print(f"optimize_for_inference failed, eager only: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def run_worker(lib, arch, batch, steps, data_dir, layout, allocator):
    args = [lib, arch, batch, steps, data_dir, layout, allocator]
    out = subprocess.run([sys.executable, HERE, "--worker", *map(str, args)], capture_output=True,
                         text=True, cwd=ROOT, env=worker_env(allocator))
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr}")
    for line in out.stderr.splitlines():
        if line.startswith("optimize_for_inference failed"):      # say so: its figure is eager only
            print(f"{lib} {arch} {layout} {allocator}: {line}", file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_step_seconds():
    """Wall time for a new process (warm Numba cache) to import tinycnn, build convnet and
    finish its first training step."""
    code = ("import numpy as np, tinycnn; from tinycnn.losses import SoftmaxCrossEntropy as L; "
            "m = tinycnn.models.convnet(); o = tinycnn.optim.Adam(m); l = L(); "
            "x = np.random.rand(128, 1, 28, 28).astype(np.float32); y = np.random.randint(0, 10, 128); "
            "l.forward(m.forward(x, training=True), y); m.backward(l.backward(), need_dx=False); o.step()")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)        # warms the cache
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return time.perf_counter() - t


def summary_row(arch, results, peak, settings):
    """One table row for a model from its rounds: medians of the rates and of the ratios,
    against the best PyTorch setting (highest median rate, for training and inference
    apart) and against the untuned one."""
    med = lambda values: float(np.median(values))
    rate = lambda lib, key: med([r[lib][key] for r in results])
    ratio = lambda lib, key: med([r["tinycnn"][key] / r[lib][key] for r in results])
    train = rate("tinycnn", "train_img_s")
    limit = train_flops_per_image(arch) * EPOCH / (peak * 1e9)
    row = {"model": arch, "tinycnn train img/s": train, "tinycnn s/epoch": EPOCH / train,
           "GEMM-bound s/epoch": limit, "% of limit": 100 * limit * train / EPOCH,
           "tinycnn infer img/s": rate("tinycnn", "infer_img_s"),
           "tinycnn peak MB": max(r["tinycnn"]["peak_rss_mb"] for r in results),
           "tinycnn faults/step": rate("tinycnn", "faults_per_step"),
           "tinycnn CPU ms/step": rate("tinycnn", "cpu_ms_per_step")}
    for kind, key in (("train", "train_img_s"), ("infer", "infer_img_s")):
        if not settings:
            break
        best = max(settings, key=lambda s: rate(f"torch {s}", key))
        row.update({f"best torch {kind}": best, f"best torch {kind} img/s": rate(f"torch {best}", key),
                    f"{kind} x best torch": ratio(f"torch {best}", key)})
        if UNTUNED in settings:
            row[f"{kind} x torch {UNTUNED}"] = ratio(f"torch {UNTUNED}", key)
    return row


def torch_rows(arch, results, settings):
    """Every PyTorch setting's medians for one model (a row each)."""
    med = lambda lib, key: float(np.median([r[lib][key] for r in results]))
    return [{"model": arch, "PyTorch setting": s, "train img/s": med(f"torch {s}", "train_img_s"),
             "infer img/s": med(f"torch {s}", "infer_img_s"),
             "infer eager img/s": med(f"torch {s}", "infer_eager_img_s"),
             "faults/step": med(f"torch {s}", "faults_per_step"),
             "CPU ms/step": med(f"torch {s}", "cpu_ms_per_step"),
             "peak MB": max(r[f"torch {s}"]["peak_rss_mb"] for r in results),
             "tinycnn train x": float(np.median([r["tinycnn"]["train_img_s"] / r[f"torch {s}"]["train_img_s"]
                                                 for r in results]))} for s in settings]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(TORCH_TWINS), help="comma-separated architectures "
                        f"(default {','.join(TORCH_TWINS)})")
    parser.add_argument("--torch", default=",".join(TORCH_SETTINGS),
                        help=f"comma-separated PyTorch settings (default all: {','.join(TORCH_SETTINGS)})")
    parser.add_argument("--batch", type=int, default=128, help="training batch size (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 60, quick 15)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of measurements (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, one round (a few minutes)")
    parser.add_argument("--data-dir", default=os.environ.get("TINYCNN_DATA_DIR",
                                                            os.path.join(ROOT, "..", "shared", "data", "mnist")),
                        help="folder with the MNIST files (default $TINYCNN_DATA_DIR or ../shared/data/mnist; "
                             "random images if absent)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, arch, batch, steps, data_dir, layout, allocator = args.worker
        check_allocator(allocator)
        fn = worker_tinycnn if lib == "tinycnn" else worker_torch
        print(json.dumps(fn(arch, int(batch), int(steps), data_dir, layout)))
        return

    steps = args.steps if args.steps is not None else (15 if args.quick else 60)
    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    if steps < 1 or rounds < 1:
        parser.error(f"--steps and --rounds must be >= 1, got {steps} and {rounds}")
    unknown = [m for m in args.models.split(",") if m not in TORCH_TWINS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(TORCH_TWINS)} "
                     "(the architectures with a PyTorch twin here)")
    settings = args.torch.split(",") if args.torch else []
    unknown = [s for s in settings if s not in TORCH_SETTINGS]
    if unknown:
        parser.error(f"unknown PyTorch setting(s) {', '.join(unknown)}; choose from {', '.join(TORCH_SETTINGS)}")
    has_torch = torch_or_none() is not None
    skipped = []
    if not has_torch:
        settings = []
    elif "cl+jemalloc" in settings and not os.path.exists(JEMALLOC):
        settings.remove("cl+jemalloc")
        skipped.append(f"cl+jemalloc skipped: {JEMALLOC} not found (apt-get install libjemalloc2)")
    peak = matmul_peak_gflops()
    runs = {arch: [] for arch in args.models.split(",")}     # per model: one dict per round
    for r in range(rounds):
        for arch, results in runs.items():
            print(f"round {r + 1}/{rounds}: {arch}", file=sys.stderr, flush=True)
            # tinycnn's worker makes the allocator call its main job makes (tinycnn/runtime.py)
            got = {"tinycnn": run_worker("tinycnn", arch, args.batch, steps, args.data_dir, "nchw", "mallopt")}
            for s in settings:
                got[f"torch {s}"] = run_worker("torch", arch, args.batch, steps, args.data_dir, *TORCH_SETTINGS[s])
            results.append(got)
    rows = [summary_row(arch, results, peak, settings) for arch, results in runs.items()]
    first = first_step_seconds()
    print(f"Training: batch {args.batch}, Adam, {steps} timed steps on {results[0]['tinycnn']['data']}; "
          f"inference: batches of 1000. Medians of {rounds} round(s).")
    print(machine_line(peak))
    print("GEMM-bound s/epoch = 3 x forward FLOPs x 60,000 / peak.  New process to first training step (warm cache): "
          f"{first:.2f} s.")
    if not has_torch:
        print("PyTorch is not installed: its columns are skipped (pip install torch==2.13.0).")
    for line in skipped:
        print(line)
    print()
    columns = ["model", "tinycnn train img/s", "tinycnn s/epoch", "GEMM-bound s/epoch", "% of limit",
               "tinycnn infer img/s", "tinycnn peak MB", "tinycnn faults/step", "tinycnn CPU ms/step"]
    if settings:
        print("Against PyTorch at its best (the setting with the highest median images/s, per model) "
              f"and untuned ({UNTUNED}: NCHW, glibc's default allocator settings):\n")
        ratios = ["model", "tinycnn train img/s", "best torch train", "best torch train img/s", "train x best torch"]
        ratios += [f"train x torch {UNTUNED}"] if UNTUNED in settings else []
        ratios += ["tinycnn infer img/s", "best torch infer", "best torch infer img/s", "infer x best torch"]
        ratios += [f"infer x torch {UNTUNED}"] if UNTUNED in settings else []
        print(table(rows, ratios))
        print("\nEvery PyTorch setting (infer: the faster of eager and, in channels_last, TorchScript's "
              "optimize_for_inference; faults/step: minor page faults per training step; CPU ms/step: "
              "process CPU time, all threads):\n")
        print(table([row for arch, results in runs.items() for row in torch_rows(arch, results, settings)],
                    ["model", "PyTorch setting", "train img/s", "infer img/s", "infer eager img/s", "faults/step",
                     "CPU ms/step",
                     "peak MB", "tinycnn train x"]))
        print("\ntinycnn:\n")
    print(table(rows, columns))
    if settings and rounds > 1:
        print("\nRatios in each round (tinycnn / PyTorch), in the order they ran:\n")
        each = lambda results, lib, key: " / ".join(f"{r['tinycnn'][key] / r[lib][key]:.2f}" for r in results)
        per_round = []
        for (arch, results), row in zip(runs.items(), rows):
            entry = {"model": arch}
            for kind, key in (("train", "train_img_s"), ("infer", "infer_img_s")):
                entry[f"{kind} x best torch"] = f"{each(results, 'torch ' + row[f'best torch {kind}'], key)} " \
                                               f"({row[f'best torch {kind}']})"
                if UNTUNED in settings:
                    entry[f"{kind} x torch {UNTUNED}"] = each(results, f"torch {UNTUNED}", key)
            per_round.append(entry)
        print(table(per_round, list(per_round[0])))
    write_json(args.json, {"machine": machine(), "batch": args.batch, "steps": steps, "rounds": runs,
                           "torch_settings": {s: TORCH_SETTINGS[s] for s in settings},
                           "glibc_tunables": GLIBC_KEEP, "jemalloc": JEMALLOC, "malloc_conf": JEMALLOC_KEEP,
                           "matmul_gflops": peak, "first_step_seconds": first, "rows": rows})


if __name__ == "__main__":
    main()
