"""What one fast-kernel method is worth to whole models: training steps and inference with
the method on and off, alternated call by call in one process.

    python benchmarks/bench_switch.py [--switch blocked] [--arch fastnet bnnet] [--batch 256]
                                      [--rounds 10] [--quick] [--json out.json]

--switch names the method: `blocked` (fast/conv_blocked.py, TINYCNN_BLOCKED), `winograd`
(fast/conv_winograd.py, TINYCNN_WINOGRAD) or `blocked-first` (the blocked forward pass in
place of Winograd's on Winograd layers whose channels and columns are whole blocks,
conv.BLOCKED_BEFORE_WINOGRAD: bnnet's third; use --arch bnnet); the script flips that switch in
tinycnn/kernels/fast/conv.py call by call. Before the first round, 4 training steps and 2
predictions run each way. Each round then times 12 Adam training steps and 5 predictions of
1,000 images in pairs of calls, one on and one off, the order flipping pair by pair (on, off;
off, on; ...; the other way round in odd rounds), so that a steady drift of the machine's
speed cancels. The table gives the medians of the times and, as the speed-up, the median of
the pairs' off/on ratios, with their quartiles. (Until session 18 each round timed 12 steps
on, then 12 off: on a machine whose speed drifts, that read session 18's experimental weight
gradient (README, Performance) 0.84x in one run and 1.08x in the next; in pairs, 1.04x with
quartiles 1.02-1.07 (fastnet, batch 128), and 0.99-1.00x for inference, which it did not
touch.) Random
images stand in for MNIST: the speed does not depend on the pixels. Run as separate
processes, the same comparison drowned in this shared machine's noise (session
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

    def predict():
        model.predict_proba(images, batch_size=1000)

    def paired(fn, pairs, on_first, times):
        """fn timed in `pairs` pairs of calls, one with the switch on and one off, the order
        flipping pair by pair (on, off; off, on; ...; or from off, on): into times[on]."""
        for i in range(pairs):
            for on in ((True, False) if (i % 2 == 0) == on_first else (False, True)):
                setattr(fast.conv, SWITCHES[switch], on)
                times[on].append(median_ms(fn, 1, warmup=0))

    saved = getattr(fast.conv, SWITCHES[switch])
    train, infer = {True: [], False: []}, {True: [], False: []}
    try:
        for on in (True, False):                  # warm-up: every kernel loaded, caches filled
            setattr(fast.conv, SWITCHES[switch], on)
            median_ms(step, 1, warmup=3)
            median_ms(predict, 1, warmup=1)
        for r in range(rounds):
            for fn, pairs, times in ((step, 12, train), (predict, 5, infer)):
                paired(fn, pairs, r % 2 == 0, times)
    finally:
        setattr(fast.conv, SWITCHES[switch], saved)
    row = {"model": arch, "batch": batch}
    for name, times in (("train", train), ("infer", infer)):
        on, off = np.array(times[True]), np.array(times[False])
        ratios = off / on                          # each call against its neighbour
        row.update({f"{name} ms on": float(np.median(on)), f"{name} ms off": float(np.median(off)),
                    f"{name} speed-up": float(np.median(ratios)),
                    f"{name} quartiles": f"{np.percentile(ratios, 25):.3f}-{np.percentile(ratios, 75):.3f}"})
    return row


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
    print(f"{args.switch} on against off in one process, {rounds} rounds of 12 training steps and 5 predictions "
          f"of 1,000 images each way, alternating call by call; milliseconds (medians); speed-up: the median of "
          f"each call's off/on ratio against its neighbour (and its quartiles)")
    print(machine_line(peak) + "\n")
    print(table(rows, ["model", "batch", "train ms on", "train ms off", "train speed-up", "train quartiles",
                       "infer ms on", "infer ms off", "infer speed-up", "infer quartiles"]))
    write_json(args.json, {"machine": machine(), "switch": args.switch, "rounds": rounds, "matmul_gflops": peak,
                           "rows": rows})


if __name__ == "__main__":
    main()
