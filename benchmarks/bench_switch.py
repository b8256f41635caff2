"""What one fast-kernel method is worth to whole models: training steps and inference with
the method on and off, alternated round by round in one process.

    python benchmarks/bench_switch.py [--switch blocked] [--arch fastnet bnnet] [--batch 256]
                                      [--rounds 10] [--quick] [--json out.json]

--switch names the method: `blocked` (fast/conv_blocked.py, TINYCNN_BLOCKED), `winograd`
(fast/conv_winograd.py, TINYCNN_WINOGRAD) or `blocked-first` (the blocked forward pass in
place of Winograd's on Winograd layers whose channels and columns are whole blocks,
conv.BLOCKED_BEFORE_WINOGRAD: bnnet's third; use --arch bnnet); the script flips that switch in
tinycnn/kernels/fast/conv.py between rounds. Each round times 12 Adam training steps (after
3 warm-up steps, the median) and 5 predictions of 1,000 images (the median), first with the
method on then off, or off then on in odd rounds; the table gives the medians over the
rounds. Random images stand in for MNIST: the speed does not depend on the pixels. Run as
separate processes, the same comparison drowned in this shared machine's noise (session
13: `python -m tinycnn bench`, 6 rounds alternating TINYCNN_BLOCKED=0 and 1, read fastnet
1.09x in one run and 0.92x in the next, with single processes from 7,654 to 9,596 images/s),
which is why this script keeps both in one process.
"""
import argparse

import numpy as np

from common import machine, machine_line, matmul_peak_gflops, median_ms, table, write_json

import tinycnn
from tinycnn.kernels import fast
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.runtime import keep_freed_memory

# name -> flag in fast/conv.py ("blocked-first": the blocked forward before Winograd's, on
# the layers conv.BLOCKED_BEFORE_WINOGRAD describes)
SWITCHES = {"blocked": "BLOCKED", "winograd": "WINOGRAD", "blocked-first": "BLOCKED_BEFORE_WINOGRAD"}


def compare(arch, switch, batch, rounds):
    """Median training-step and 1,000-image inference milliseconds, method on and off."""
    rng = np.random.default_rng(0)
    x = rng.random((4 * batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 4 * batch)
    images = rng.random((1000, 1, 28, 28), dtype=np.float32)
    model = tinycnn.models.ARCHITECTURES[arch](seed=0)
    loss, optimizer = SoftmaxCrossEntropy(), tinycnn.optim.Adam(model, lr=1e-4)
    step_number = [0]

    def step():
        i = step_number[0] % 4
        step_number[0] += 1
        loss.forward(model.forward(x[i * batch:(i + 1) * batch], training=True), y[i * batch:(i + 1) * batch])
        model.backward(loss.backward(), need_dx=False)
        optimizer.step()

    times = {True: ([], []), False: ([], [])}
    saved = getattr(fast.conv, SWITCHES[switch])
    try:
        for r in range(rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                setattr(fast.conv, SWITCHES[switch], on)
                times[on][0].append(median_ms(step, 12, warmup=3))
                times[on][1].append(median_ms(lambda: model.predict_proba(images, batch_size=1000), 5, warmup=1))
    finally:
        setattr(fast.conv, SWITCHES[switch], saved)
    on_train, on_infer = (float(np.median(t)) for t in times[True])
    off_train, off_infer = (float(np.median(t)) for t in times[False])
    return {"model": arch, "batch": batch, "train ms on": on_train, "train ms off": off_train,
            "train speed-up": off_train / on_train, "infer ms on": on_infer, "infer ms off": off_infer,
            "infer speed-up": off_infer / on_infer}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switch", choices=sorted(SWITCHES), default="blocked", help="the method (default blocked)")
    parser.add_argument("--arch", nargs="+", default=["fastnet", "bnnet"], choices=sorted(tinycnn.models.ARCHITECTURES),
                        help="models (default fastnet bnnet)")
    parser.add_argument("--batch", type=int, default=256, help="training batch size (default 256, the main job's)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 10, quick 2)")
    parser.add_argument("--quick", action="store_true", help="two rounds (under a minute)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 10)
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    tinycnn.set_backend("numba")
    peak = matmul_peak_gflops()
    rows = [compare(arch, args.switch, args.batch, rounds) for arch in args.arch]
    print(f"{args.switch} on against off, {rounds} rounds alternated in one process; milliseconds (medians)")
    print(machine_line(peak) + "\n")
    print(table(rows, ["model", "batch", "train ms on", "train ms off", "train speed-up", "infer ms on",
                       "infer ms off", "infer speed-up"]))
    write_json(args.json, {"machine": machine(), "switch": args.switch, "rounds": rounds, "matmul_gflops": peak,
                           "rows": rows})


if __name__ == "__main__":
    main()
