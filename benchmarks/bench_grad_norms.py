"""What recording the per-layer gradient norms costs a training step.

    python benchmarks/bench_grad_norms.py [--quick] [--json out.json]

fit() calls tinycnn.train.gradient_norms after every backward pass (history["grad_norm"]).
For each model, at its default batch size on random 28x28 inputs: the median wall time of
a training step (forward, loss, backward, Adam), the median time of one gradient_norms
call, and their ratio. Both are also given as process CPU time (total over the timed
calls), which a busy machine disturbs less than wall time.
"""
import resource

import numpy as np

from common import machine, machine_line, median_ms, repeats_from_args, table, write_json

from tinycnn.runtime import keep_freed_memory
from tinycnn import models, optim
from tinycnn.losses import SoftmaxCrossEntropy
from tinycnn.train import gradient_norms


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_ms(fn, repeats):
    start = cpu_seconds()
    for _ in range(repeats):
        fn()
    return (cpu_seconds() - start) / repeats * 1e3


def main():
    args = repeats_from_args(__doc__, default=40, quick=10)
    keep_freed_memory()          # as the main job runs (tinycnn/runtime.py)
    rng = np.random.default_rng(0)
    rows = []
    for arch, batch in (("fastnet", 256), ("convnet", 128), ("bnnet", 128)):
        model, loss = models.ARCHITECTURES[arch](), SoftmaxCrossEntropy()
        opt = optim.Adam(model)
        x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, batch)

        def step():
            loss.forward(model.forward(x, training=True), y)
            model.backward(loss.backward(), need_dx=False)
            opt.step()

        norms = lambda: gradient_norms(model)
        step_ms, norms_ms = median_ms(step, args.repeats), median_ms(norms, 50 * args.repeats)
        step_cpu, norms_cpu = cpu_ms(step, args.repeats), cpu_ms(norms, 50 * args.repeats)
        rows.append({"model": arch, "batch": batch, "gradients": model.num_parameters(),
                     "step ms": step_ms, "norms us": norms_ms * 1e3, "share %": f"{100 * norms_ms / step_ms:.3f}",
                     "step CPU ms": step_cpu, "norms CPU us": norms_cpu * 1e3,
                     "CPU share %": f"{100 * norms_cpu / step_cpu:.3f}"})
    print(machine_line())
    print(table(rows, list(rows[0])))
    write_json(args.json, {"machine": machine(), "rows": rows})


if __name__ == "__main__":
    main()
