"""Milliseconds per layer call at batch 128: forward, and forward+backward, for tinycnn's
NumPy reference kernels, its Numba kernels, and PyTorch (NCHW and channels_last) when
installed. Each figure is the median of --repeats calls after warm-up. Both libraries run
in this one process after tinycnn.runtime.keep_freed_memory(), so PyTorch's columns have the
allocator setting tinycnn's have (bench_train.py compares PyTorch's allocator settings).

    python benchmarks/bench_layers.py [--quick] [--json out.json]
"""
import numpy as np

from common import machine, machine_line, median_ms, repeats_from_args, table, torch_or_none, write_json

import tinycnn
from tinycnn.layers import Conv2D, Dense, MaxPool2D
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.runtime import keep_freed_memory, one_thread_pool

BATCH = 128
CASES = [  # name, tinycnn layer factory, input shape, torch module factory
    ("conv 1->32 3x3, 28x28", lambda: Conv2D(1, 32, 3), (BATCH, 1, 28, 28), lambda nn: nn.Conv2d(1, 32, 3)),
    ("conv 32->64 3x3, 13x13", lambda: Conv2D(32, 64, 3), (BATCH, 32, 13, 13), lambda nn: nn.Conv2d(32, 64, 3)),
    ("conv 32->64 3x3 + ReLU", lambda: Conv2D(32, 64, 3, activation="relu"), (BATCH, 32, 13, 13),
     lambda nn: nn.Sequential(nn.Conv2d(32, 64, 3), nn.ReLU())),
    ("fastnet conv 1->24 5x5, 28x28", lambda: Conv2D(1, 24, 5), (BATCH, 1, 28, 28), lambda nn: nn.Conv2d(1, 24, 5)),
    ("fastnet conv 24->32 5x5, 12x12", lambda: Conv2D(24, 32, 5), (BATCH, 24, 12, 12),
     lambda nn: nn.Conv2d(24, 32, 5)),
    ("max pool 2, 32x26x26", lambda: MaxPool2D(2), (BATCH, 32, 26, 26), lambda nn: nn.MaxPool2d(2)),
    ("dense 1600->10", lambda: Dense(1600, 10), (BATCH, 1600), lambda nn: nn.Linear(1600, 10)),
]


def tinycnn_times(layer, shape, repeats):
    x = np.random.rand(*shape).astype(np.float32)
    with one_thread_pool():
        y = layer.forward(x, training=True)
        dy = np.random.rand(*y.shape).astype(np.float32)
        fwd = median_ms(lambda: layer.forward(x, training=True), repeats)
        both = median_ms(lambda: (layer.forward(x, training=True), layer.backward(dy)), repeats)
    return fwd, both


def torch_times(torch, module, shape, repeats, channels_last):
    x = torch.rand(*shape, requires_grad=True)
    if channels_last:
        if len(shape) != 4:
            return None, None
        module = module.to(memory_format=torch.channels_last)
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    dy = torch.rand_like(module(x))

    def both():
        x.grad = None
        module.zero_grad()
        module(x).backward(dy)
    with torch.no_grad():
        fwd = median_ms(lambda: module(x), repeats)
    return fwd, median_ms(both, repeats)


def loss_times(repeats):
    loss = SoftmaxCrossEntropy()
    logits = np.random.randn(BATCH, 10).astype(np.float32)
    labels = np.random.randint(0, 10, BATCH)
    fwd = median_ms(lambda: loss.forward(logits, labels), repeats)
    return fwd, median_ms(lambda: (loss.forward(logits, labels), loss.backward()), repeats)


def main():
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    args = repeats_from_args(__doc__, default=30, quick=8)
    repeats = args.repeats
    torch = torch_or_none()
    rows = []
    for name, make, shape, make_torch in CASES:
        row = {"layer": name}
        for backend in ("numpy", "numba"):
            tinycnn.set_backend(backend)
            row[f"{backend} fwd"], row[f"{backend} fwd+bwd"] = tinycnn_times(make(), shape, repeats)
        tinycnn.set_backend("numba")
        if torch is not None:
            row["torch fwd"], row["torch fwd+bwd"] = torch_times(torch, make_torch(torch.nn), shape, repeats, False)
            row["torch CL fwd"], row["torch CL fwd+bwd"] = torch_times(torch, make_torch(torch.nn), shape, repeats, True)
        rows.append(row)
    f, b = loss_times(repeats)
    rows.append({"layer": "softmax cross-entropy, 10 classes", "numpy fwd": f, "numpy fwd+bwd": b,
                 "numba fwd": f, "numba fwd+bwd": b})
    columns = ["layer", "numpy fwd", "numpy fwd+bwd", "numba fwd", "numba fwd+bwd"]
    if torch is not None:
        columns += ["torch fwd", "torch fwd+bwd", "torch CL fwd", "torch CL fwd+bwd"]
    print(f"Milliseconds per call, batch {BATCH}, float32, median of {repeats} "
          f"(numpy = tinycnn reference kernels, numba = tinycnn fast kernels, CL = channels_last"
          + ("" if torch else "; PyTorch not installed") + ")\n")
    print(machine_line())
    print(table(rows, columns))
    write_json(args.json, {"machine": machine(), "batch": BATCH, "repeats": repeats, "rows": rows})


if __name__ == "__main__":
    main()
