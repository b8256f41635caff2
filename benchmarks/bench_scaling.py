"""How training cost grows with batch size and channel width (convnet), tinycnn against
PyTorch when installed. Width 2x doubles every conv's filters (32->64, 64->128), so conv
FLOPs grow about 4x for the second conv. Each figure: images/s over --steps Adam steps after
5 warm-up steps, on random 28x28 inputs (speed does not depend on the pixel values).

    python benchmarks/bench_scaling.py [--quick] [--json out.json]
"""
import argparse

import numpy as np

from common import images_per_second, machine, machine_line, table, torch_or_none, write_json

import tinycnn
from tinycnn.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.runtime import keep_freed_memory


def tinycnn_convnet(width):
    a, b = 32 * width, 64 * width
    return tinycnn.Sequential([Conv2D(1, a, 3), ReLU(), MaxPool2D(2), Conv2D(a, b, 3), ReLU(), MaxPool2D(2),
                               Flatten(), Dropout(0.5), Dense(b * 25, 10)], input_shape=(1, 28, 28), seed=0)


def torch_convnet(torch, width):
    nn, a, b = torch.nn, 32 * width, 64 * width
    return nn.Sequential(nn.Conv2d(1, a, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(a, b, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(b * 25, 10))


def tinycnn_speed(width, batch, steps):
    model, loss = tinycnn_convnet(width), SoftmaxCrossEntropy()
    opt = tinycnn.optim.Adam(model)
    x = np.random.rand(batch, 1, 28, 28).astype(np.float32)
    y = np.random.randint(0, 10, batch)

    def step(_):
        loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward(), need_dx=False)
        opt.step()
    return images_per_second(step, batch, steps)


def torch_speed(torch, width, batch, steps):
    model = torch_convnet(torch, width)
    opt, lossf = torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss()
    x, y = torch.rand(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step(_):
        opt.zero_grad()
        lossf(model(x), y).backward()
        opt.step()
    return images_per_second(step, batch, steps)


def main():
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps (under a minute)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch = torch_or_none()
    rows = []
    for width in (1, 2):
        for batch in (32, 64, 128, 256):
            steps = max(4, (1500 if args.quick else 6000) // batch // width)
            row = {"width": f"{width}x", "batch": batch, "tinycnn img/s": tinycnn_speed(width, batch, steps)}
            if torch is not None:
                row["torch img/s"] = torch_speed(torch, width, batch, steps)
                row["ratio"] = row["tinycnn img/s"] / row["torch img/s"]
            rows.append(row)
    print("convnet training throughput by batch size and width (images/s, Adam, float32)\n")
    columns = ["width", "batch", "tinycnn img/s"] + (["torch img/s", "ratio"] if torch else [])
    print(machine_line())
    print(table(rows, columns))
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
