"""Training and inference speed of whole models on real MNIST batches, tinycnn against
PyTorch's same model in the same run (when installed), with the ratios that issue goals
are stated in, the GEMM-bound limit of this machine, peak memory and start-up time.

Each measurement runs in its own process (so peak memory is its own and the two libraries'
thread pools never meet). Training: `--steps` Adam steps at the given batch size after 5
warm-up steps; images/s = images / wall time; seconds per epoch = 60,000 / images/s.
Inference: batches of 1000 in eval mode, for at least a second after one warm-up batch.

These machines' speed drifts by 10-30% over minutes, so the measurements are taken in
`--rounds` rounds (default 3); within a round each model's tinycnn and PyTorch processes run
back to back. Images/s are the medians over the rounds; each ratio is the median of the
rounds' own ratios (the JSON keeps every round).

    python benchmarks/bench_train.py [--quick] [--rounds 3] [--models convnet,lenet5,fastnet] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from common import (ROOT, images_per_second, machine, matmul_peak_gflops, peak_rss_mb, table,
                    torch_or_none, write_json)

HERE = os.path.abspath(__file__)
EPOCH = 60_000


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
    train = images_per_second(step, batch, steps)
    xi = np.ascontiguousarray(x[:1000]) if len(x) >= 1000 else np.repeat(x, -(-1000 // len(x)), 0)[:1000]
    infer = inference_images_per_second(lambda: model.predict_proba(xi, batch_size=1000), len(xi))
    return {"train_img_s": train, "infer_img_s": infer, "peak_rss_mb": peak_rss_mb(), "data": source}


TORCH_TWINS = ("convnet", "lenet5", "fastnet")      # the models torch_model can build


def torch_model(torch, arch):
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
    raise ValueError(f"no PyTorch twin for {arch!r}; there are: {', '.join(TORCH_TWINS)}")


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
    train = images_per_second(step, batch, steps)
    model.eval()
    xi = x[:1000] if len(x) >= 1000 else x.repeat(-(-1000 // len(x)), 1, 1, 1)[:1000]
    with torch.no_grad():
        infer = inference_images_per_second(lambda: model(xi), len(xi))
    return {"train_img_s": train, "infer_img_s": infer, "peak_rss_mb": peak_rss_mb(), "data": source}


def run_worker(*args):
    out = subprocess.run([sys.executable, HERE, "--worker", *map(str, args)], capture_output=True,
                         text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{out.stderr}")
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


def summary_row(arch, results, peak, has_torch):
    """One table row for a model from its rounds: medians of the rates and of the ratios."""
    med = lambda values: float(np.median(values))
    rate = lambda lib, key: med([r[lib][key] for r in results])
    ratio = lambda lib, key: med([r["tinycnn"][key] / r[lib][key] for r in results])
    train = rate("tinycnn", "train_img_s")
    limit = train_flops_per_image(arch) * EPOCH / (peak * 1e9)
    row = {"model": arch, "tinycnn train img/s": train, "tinycnn s/epoch": EPOCH / train,
           "GEMM-bound s/epoch": limit, "% of limit": 100 * limit * train / EPOCH,
           "tinycnn infer img/s": rate("tinycnn", "infer_img_s"),
           "tinycnn peak MB": max(r["tinycnn"]["peak_rss_mb"] for r in results)}
    if has_torch:
        row.update({"torch train img/s": rate("torch", "train_img_s"),
                    "torch CL train img/s": rate("torch CL", "train_img_s"),
                    "torch infer img/s": rate("torch", "infer_img_s"),
                    "torch CL infer img/s": rate("torch CL", "infer_img_s"),
                    "train x torch": ratio("torch", "train_img_s"),
                    "train x torch CL": ratio("torch CL", "train_img_s"),
                    "infer x torch": ratio("torch", "infer_img_s"),
                    "infer x torch CL": ratio("torch CL", "infer_img_s")})
    return row


def main():
    # Every process here, tinycnn's and PyTorch's workers alike, gets the allocator setting
    # the main job makes (tinycnn/runtime.py), so neither library runs on a handicapped heap.
    from tinycnn.runtime import keep_freed_memory
    keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="convnet,lenet5,fastnet", help="comma-separated architectures")
    parser.add_argument("--batch", type=int, default=128, help="training batch size (default 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps (default 60, quick 15)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of measurements (default 3, quick 1)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, one round (about a minute)")
    parser.add_argument("--data-dir", default=os.environ.get("TINYCNN_DATA_DIR",
                                                            os.path.join(ROOT, "..", "shared", "data", "mnist")),
                        help="folder with the MNIST files (default $TINYCNN_DATA_DIR or ../shared/data/mnist; "
                             "random images if absent)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        lib, arch, batch, steps, data_dir, layout = args.worker
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
    has_torch = torch_or_none() is not None
    peak = matmul_peak_gflops()
    runs = {arch: [] for arch in args.models.split(",")}     # per model: one dict per round
    for r in range(rounds):
        for arch, results in runs.items():
            print(f"round {r + 1}/{rounds}: {arch}", file=sys.stderr, flush=True)
            got = {"tinycnn": run_worker("tinycnn", arch, args.batch, steps, args.data_dir, "nchw")}
            if has_torch:
                got["torch"] = run_worker("torch", arch, args.batch, steps, args.data_dir, "nchw")
                got["torch CL"] = run_worker("torch", arch, args.batch, steps, args.data_dir, "channels_last")
            results.append(got)
    rows = [summary_row(arch, results, peak, has_torch) for arch, results in runs.items()]
    first = first_step_seconds()
    print(f"Training: batch {args.batch}, Adam, {steps} timed steps on {results[0]['tinycnn']['data']}; "
          f"inference: batches of 1000. Medians of {rounds} round(s).")
    print(f"Matmul peak (NumPy float32 1024^3, all threads): {peak:.0f} GFLOP/s. GEMM-bound s/epoch = "
          "3 x forward FLOPs x 60,000 / peak.  New process to first training step (warm cache): "
          f"{first:.2f} s.")
    if not has_torch:
        print("PyTorch is not installed: its columns are skipped (pip install torch==2.13.0).")
    print()
    columns = ["model", "tinycnn train img/s", "tinycnn s/epoch", "GEMM-bound s/epoch", "% of limit",
               "tinycnn infer img/s", "tinycnn peak MB"]
    if has_torch:
        columns += ["torch train img/s", "torch CL train img/s", "torch infer img/s", "torch CL infer img/s",
                    "train x torch", "train x torch CL", "infer x torch", "infer x torch CL"]
    print(table(rows, columns))
    if has_torch and rounds > 1:
        print("\nRatios in each round (tinycnn / PyTorch), in the order they ran:\n")
        each = lambda results, lib, key: " / ".join(f"{r['tinycnn'][key] / r[lib][key]:.2f}" for r in results)
        print(table([{"model": arch, "train x torch": each(results, "torch", "train_img_s"),
                      "train x torch CL": each(results, "torch CL", "train_img_s"),
                      "infer x torch": each(results, "torch", "infer_img_s"),
                      "infer x torch CL": each(results, "torch CL", "infer_img_s")} for arch, results in runs.items()],
                    ["model", "train x torch", "train x torch CL", "infer x torch", "infer x torch CL"]))
    write_json(args.json, {"machine": machine(), "batch": args.batch, "steps": steps, "rounds": runs,
                           "matmul_gflops": peak, "first_step_seconds": first, "rows": rows})


if __name__ == "__main__":
    main()
