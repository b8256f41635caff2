"""How the fast convolution picks its method, and what fusing the pooling is worth.

    python benchmarks/bench_conv_methods.py [--quick] [--json out.json]

Table 1: milliseconds per call of the fast kernels' convolution methods (im2col + GEMM;
direct, for stride 1; register-blocked direct, stride 1 and forward only) on the layers
of the models here: forward (with its ReLU), backward without dx (a first layer) and with
it. tinycnn/kernels/fast/conv.py picks direct when C*F*kh*kw (the weights) is at most
conv_direct.FORWARD_MAX_WEIGHTS (forward) or BACKWARD_MAX_WEIGHTS (backward), else the
blocked forward where it applies (16 output channels or more and a block of columns or
more, 4, or 8 with AVX-512, at most 4/3 of either computed, and enough taps:
conv_blocked.MIN_TAPS), and
Winograd for 3x3 layers with many channels; these are the numbers those choices come from
("-": the method does not apply).
Table 2: a ReLU convolution followed by 2x2 max pooling, forward+backward, run as the two
layers' own kernels and as the fused pair (tinycnn/layers/fused.py).
Each figure is the median of --repeats calls, all in one process, on all cores.
"""
import numpy as np

from common import machine, machine_line, median_ms, repeats_from_args, table, write_json

from tinycnn.kernels import fast
from tinycnn.runtime import keep_freed_memory, one_thread_pool

# name, batch, C, F, H (= W), kernel, padding
LAYERS = [
    ("lenet5 conv1 1->6 5x5 pad 2, 28x28", 1000, 1, 6, 28, 5, 2),
    ("lenet5 conv2 6->16 5x5, 14x14", 1000, 6, 16, 14, 5, 0),
    ("convnet conv1 1->32 3x3, 28x28", 128, 1, 32, 28, 3, 0),
    ("fastnet conv1 1->24 5x5, 28x28", 128, 1, 24, 28, 5, 0),
    ("bnnet conv1 1->32 5x5, 28x28", 128, 1, 32, 28, 5, 0),
    ("8->16 3x3 pad 1, 28x28", 128, 8, 16, 28, 3, 1),
    ("16->32 3x3 pad 1, 14x14", 128, 16, 32, 14, 3, 1),
    ("fastnet conv2 24->32 5x5, 12x12", 128, 24, 32, 12, 5, 0),
    ("convnet conv2 32->64 3x3, 13x13", 128, 32, 64, 13, 3, 0),
]


def arrays(batch, C, F, H, k, p, seed=0):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((batch, C, H, H)), 0).astype(np.float32)   # post-ReLU input
    w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = (0.1 * rng.standard_normal(F)).astype(np.float32)
    return x, w, b, (1, 1), (p, p)


def method_times(x, w, b, stride, padding, method, repeats):
    """Forward, backward without dx and backward with dx, in ms, by one method ("blocked":
    the forward only, its backward being GEMM's)."""
    saved = (fast.conv_direct.FORWARD_MAX_WEIGHTS, fast.conv_direct.BACKWARD_MAX_WEIGHTS, fast.conv.BLOCKED,
             fast.conv_blocked.MIN_TAPS)
    limit = 10 ** 9 if method == "direct" else 0
    fast.conv_direct.FORWARD_MAX_WEIGHTS = fast.conv_direct.BACKWARD_MAX_WEIGHTS = limit
    fast.conv.BLOCKED = method == "blocked"
    fast.conv_blocked.MIN_TAPS = 1          # (timed wherever the shapes allow it)
    try:
        y, cache = fast.conv2d_forward(x, w, b, stride, padding, relu=True)
        forward = median_ms(lambda: fast.conv2d_forward(x, w, b, stride, padding, relu=True), repeats)
        if method == "blocked":
            return forward, None, None
        dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        return (forward,
                median_ms(lambda: fast.conv2d_backward(dy, cache, x.shape, w, stride, padding, False), repeats),
                median_ms(lambda: fast.conv2d_backward(dy, cache, x.shape, w, stride, padding, True), repeats))
    finally:
        (fast.conv_direct.FORWARD_MAX_WEIGHTS, fast.conv_direct.BACKWARD_MAX_WEIGHTS, fast.conv.BLOCKED,
         fast.conv_blocked.MIN_TAPS) = saved


def pair_times(x, w, b, stride, padding, need_dx, repeats):
    def separate():
        y, cache = fast.conv2d_forward(x, w, b, stride, padding, relu=True)
        pooled, argmax = fast.maxpool2d_forward(y, 2, 2, 2, 2)
        dy = fast.maxpool2d_backward(np.ones_like(pooled), argmax, y.shape, 2, 2, 2, 2)
        fast.conv2d_backward(dy, cache, x.shape, w, stride, padding, need_dx)

    def fused():
        pooled, cache = fast.conv2d_relu_maxpool2_forward(x, w, b, stride, padding)
        fast.conv2d_relu_maxpool2_backward(np.ones_like(pooled), cache, x.shape, w, stride, padding, need_dx)
    return median_ms(separate, repeats), median_ms(fused, repeats)


def main():
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    args = repeats_from_args(__doc__, default=20, quick=5)
    repeats = args.repeats
    methods, pairs = [], []
    with one_thread_pool():
        for name, batch, C, F, H, k, p in LAYERS:
            if args.quick:
                batch = min(batch, 128)
            case = arrays(batch, C, F, H, k, p)
            row = {"layer": name, "batch": batch, "weights": C * F * k * k}
            OW = fast.conv_output_size(H, k, 1, p)
            for method in ("gemm", "direct", "blocked"):
                if method == "blocked" and not fast.conv_blocked.applies(F, OW, (1, 1)):
                    continue
                row[f"{method} fwd"], row[f"{method} bwd no dx"], row[f"{method} bwd"] = \
                    method_times(*case, method, repeats)
            backward = "direct" if C * F * k * k <= fast.conv_direct.BACKWARD_MAX_WEIGHTS else "gemm"
            forward = fast.conv.forward_method(C, F, k, k, OW, (1, 1))
            if fast.conv.uses_winograd(case[0].shape, case[1], (1, 1)):
                forward = backward = "winograd"
            row["fast/ uses (fwd, bwd)"] = f"{forward}, {backward}"
            methods.append(row)
            if name.startswith(("lenet5", "convnet")):
                need_dx = "conv2" in name
                separate, fused = pair_times(*case, need_dx, repeats)
                pairs.append({"conv + ReLU + max pool 2": name, "batch": batch, "separate": separate,
                              "fused": fused, "separate / fused": separate / fused})
    print(f"Milliseconds per call, float32, median of {repeats} (fast kernels; bwd = backward; "
          "ReLU built in)")
    print(machine_line() + "\n")
    print(table(methods, ["layer", "batch", "weights", "gemm fwd", "direct fwd", "blocked fwd", "gemm bwd no dx",
                          "direct bwd no dx", "gemm bwd", "direct bwd", "fast/ uses (fwd, bwd)"]))
    print("\nForward + backward of the pair, milliseconds (backward without dx for a first layer)\n")
    print(table(pairs, ["conv + ReLU + max pool 2", "batch", "separate", "fused", "separate / fused"]))
    write_json(args.json, {"machine": machine(), "repeats": repeats, "methods": methods, "pairs": pairs})


if __name__ == "__main__":
    main()
