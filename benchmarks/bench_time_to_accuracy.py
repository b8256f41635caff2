"""Time to 99% MNIST test accuracy: tinycnn against PyTorch's twin of the same model,
trained with the same recipe, each run in its own process.

The recipe is the main job's default (`python -m tinycnn train`: run.PRESETS["fast"] with
run.RECIPES[arch], filled in by run.fit_recipe_to_data; fastnet: batch 256, 3 epochs, Adam lr
0.01 betas (0.7, 0.9), one-cycle schedule, augmentation). Both libraries get, step for step:
- the same training images: the recipe's 90% of MNIST's 60,000 (run.py's stratified, seeded
  split, standardised with that part's mean and std), because that is what the main job
  trains on and what the recipe was tuned on; the 10% held out is not used;
- the same batches in the same order: fit()'s seeded permutation per epoch, then tinycnn's
  RandomAffine augmentation applied to the NumPy batch in the worker, with fit()'s seed, in
  both workers (so both pay for augmenting; each worker's augmentation seconds are shown);
  in PyTorch's worker the batch then becomes a tensor (channels_last where the setting says);
- the same initial weights: tinycnn's model from the recipe's seed, copied into the twin
  (bench_train.copy_weights, held equal by tests/test_bench_twins.py);
- Adam with the recipe's lr and betas and tinycnn's eps, and the same learning rate at every
  step: tinycnn's schedule (run.make_optimizer) is computed in both workers and written to
  optimizer.lr in tinycnn and to every param_group's "lr" in PyTorch before each step;
- the same number of steps (epochs x ceil(images / batch)), the mean cross-entropy loss.
Dropout masks (convnet, bnnet) come from each library's own generator.

What is timed. The training clock (time.perf_counter) runs over the training steps only:
for each step, the learning rate, taking the batch (indexing, augmentation, conversion to a
tensor), forward, loss, backward and the optimiser step. Every `--eval-every` steps (default
a quarter epoch) and after the last step the clock stops, the 10,000 test images are
classified (eval mode, batches of 1000; its seconds are reported apart, never counted), and
the clock restarts. Time to target = the training seconds at the first evaluation whose test
accuracy is >= `--target` (so it is resolved to `--eval-every` steps; "not reached" if none).
Before the clock starts, each worker warms up on copies of the model and optimiser (two
training steps at the batch size, one at the last batch's size, one evaluation batch): Numba
loads or compiles tinycnn's kernels, PyTorch creates its oneDNN primitives. That warm-up is
reported apart too. images/s = training images / training seconds. Each worker also reports
its process CPU seconds during training (resource.getrusage), which show how busy the
machine was.

tinycnn's worker makes the allocator call tinycnn's main job makes (runtime.keep_freed_memory);
PyTorch runs in its best settings for these models (`--torch`, default cl+mallopt,cl+jemalloc;
bench_train.TORCH_SETTINGS and worker_env: channels_last with glibc kept, or jemalloc
preloaded, skipped when not installed; skipped altogether when torch is not installed).
`--rounds` rounds (default 2), each running tinycnn, then every PyTorch setting, back to back.
Headline: tinycnn's time to target / the best PyTorch setting's (the one with the lowest
median time to target), the median of the rounds' own ratios; every round's value is shown.

    python benchmarks/bench_time_to_accuracy.py [--arch fastnet] [--rounds 2] [--target 0.99] [--json out.json]
    python benchmarks/bench_time_to_accuracy.py --quick       # a fifth of an epoch, target 0.9: under a minute
"""
import argparse
import contextlib
import copy
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

from bench_train import (JEMALLOC, TORCH_SETTINGS, TORCH_TWINS, check_allocator, copy_weights, torch_model,
                         worker_env)
from common import ROOT, machine, machine_line, matmul_peak_gflops, table, torch_or_none, write_json

HERE = os.path.abspath(__file__)
EVAL_BATCH = 1000
DEFAULT_TORCH = "cl+mallopt,cl+jemalloc"
QUICK = dict(epochs=0.2, target=0.9, eval_every=10, rounds=1)


# -- the recipe and its data, the same in every worker ---------------------------------------

def recipe(arch, n_train):
    """The main job's default recipe for `arch` on `n_train` training images, as run.py fills
    it in: a namespace with arch, optimizer, schedule, augment, val_fraction, seed, betas,
    batch_size, epochs and lr."""
    from tinycnn import run
    preset = run.PRESETS["fast"]
    args = argparse.Namespace(arch=arch, optimizer=run.DEFAULTS["optimizer"], seed=run.DEFAULTS["seed"],
                              schedule=preset["schedule"], augment=preset["augment"],
                              val_fraction=preset["val_fraction"], betas=run.RECIPES[arch]["betas"],
                              batch_size=None, epochs=None, lr=None)
    run.fit_recipe_to_data(args, n_train, "mnist")
    return args


def recipe_data(data_dir, val_fraction, seed):
    """(x_train, y_train, x_test, y_test): the recipe's training part of MNIST and the test
    set, float32 (N, 1, 28, 28) standardised with the training part's mean and std, int64 labels."""
    from tinycnn import datasets, run
    (x, y), (x_test, y_test) = datasets.load_mnist(data_dir=data_dir, download=False)
    (x, y), _, x_test, _ = run.prepare_data(x, y, x_test, val_fraction, seed)     # the main job's own
    return x, y.astype(np.int64), x_test, y_test.astype(np.int64)


def total_steps(n_train, batch, epochs):
    """Steps of a run of `epochs` (may be fractional, for --quick) at `batch` on n_train images."""
    return max(1, round(epochs * math.ceil(n_train / batch)))


def batches(x, y, batch, steps, seed, augment, spent):
    """The run's `steps` batches (xb, yb), in fit()'s order: a permutation per epoch from
    default_rng(seed), each batch augmented with default_rng([seed, 1]) when `augment` is
    given. Adds the seconds spent augmenting to spent["augment"]."""
    shuffle_rng, augment_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    per_epoch = math.ceil(len(x) / batch)
    for step in range(steps):
        if step % per_epoch == 0:
            order = shuffle_rng.permutation(len(x))
        idx = order[(step % per_epoch) * batch:(step % per_epoch + 1) * batch]
        xb = x[idx]                                          # (B, 1, 28, 28), a copy
        if augment is not None:
            t = time.perf_counter()
            xb = augment(xb, augment_rng)
            spent["augment"] += time.perf_counter() - t
        yield xb, y[idx]


class Clock:
    """Wall and process CPU seconds summed over the intervals between start() and stop()."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    @staticmethod
    def _now():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_utime + usage.ru_stime

    def start(self):
        self._started = self._now()

    def stop(self):
        wall, cpu = self._now()
        self.wall += wall - self._started[0]
        self.cpu += cpu - self._started[1]
        return self.wall


def train_to_target(train_step, accuracy, data, batch, steps, schedule, seed, augment, eval_every, target):
    """Train for `steps` steps, evaluating test accuracy every `eval_every` steps and after
    the last, outside the training clock.

    train_step(xb, yb, lr) -> loss: one training step at learning rate lr
    accuracy(x_test, y_test) -> fraction of test images classified right
    data: (x_train, y_train, x_test, y_test); schedule(step, steps) -> lr
    Returns a dict: time_to_target and steps_to_target (None when never reached),
    final_accuracy, train_seconds, train_cpu_seconds, images_per_second, augment_seconds,
    eval_seconds, losses (every step's) and curve (one entry per evaluation).
    """
    x, y, x_test, y_test = data
    train, evals = Clock(), Clock()
    spent = {"augment": 0.0}
    stream = batches(x, y, batch, steps, seed, augment, spent)
    losses, curve, reached, images = [], [], None, 0
    train.start()
    for step in range(steps):
        xb, yb = next(stream)
        losses.append(train_step(xb, yb, schedule(step, steps)))
        images += len(xb)
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            seconds = train.stop()
            evals.start()
            acc = accuracy(x_test, y_test)
            evals.stop()
            curve.append({"step": step + 1, "train_seconds": seconds, "test_accuracy": acc})
            if reached is None and acc >= target:
                reached = curve[-1]
            train.start()
    train.stop()       # (nothing ran since the last evaluation: adds ~0)
    return {"time_to_target": reached and reached["train_seconds"], "steps_to_target": reached and reached["step"],
            "final_accuracy": curve[-1]["test_accuracy"], "train_seconds": train.wall,
            "train_cpu_seconds": train.cpu, "images_per_second": images / train.wall,
            "augment_seconds": spent["augment"], "eval_seconds": evals.wall, "evaluations": len(curve),
            "losses": losses, "curve": curve}


# -- each library's training step and evaluation ----------------------------------------------

def tinycnn_trainer(model, optimizer):
    """(train_step, accuracy) for a tinycnn model and its optimiser."""
    from tinycnn.losses import SoftmaxCrossEntropy
    from tinycnn.train import evaluate
    loss = SoftmaxCrossEntropy()

    def train_step(xb, yb, lr):
        optimizer.lr = lr
        value = loss.forward(model.forward(xb, training=True), yb)
        model.backward(loss.backward(), need_dx=False)
        optimizer.step()
        return float(value)

    return train_step, lambda x, y: evaluate(model, loss, x, y, batch_size=EVAL_BATCH)[1]


def torch_trainer(torch, twin, optimizer, layout):
    """(train_step, accuracy) for PyTorch's twin, with torch.optim.Adam set to tinycnn's
    `optimizer`'s hyper-parameters; layout "channels_last" or "nchw"."""
    opt = torch.optim.Adam(twin.parameters(), lr=optimizer.lr, betas=optimizer.betas, eps=optimizer.eps)
    lossf = torch.nn.CrossEntropyLoss()
    memory = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    tensor = lambda xb: torch.from_numpy(xb).contiguous(memory_format=memory)

    def train_step(xb, yb, lr):
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        value = lossf(twin(tensor(xb)), torch.from_numpy(yb))
        value.backward()
        opt.step()
        return value.item()

    def accuracy(x, y):
        twin.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(x), EVAL_BATCH):
                logits = twin(tensor(x[start:start + EVAL_BATCH]))
                correct += int((logits.argmax(1) == torch.from_numpy(y[start:start + EVAL_BATCH])).sum())
        twin.train()
        return correct / len(x)

    return train_step, accuracy


def build(lib, rec, input_shape, steps, layout="nchw"):
    """What a worker trains: (make, subject, schedule). subject is tinycnn's model built by the
    recipe (lib "tinycnn"), or PyTorch's twin holding that model's initial weights;
    make(subject or a copy of it) -> (train_step, accuracy) with a new optimiser."""
    from tinycnn import run
    model = run.build_model(rec, input_shape, 10)
    optimizer, schedule = run.make_optimizer(rec, model, steps)
    if lib == "tinycnn":
        return (lambda m: tinycnn_trainer(m, run.make_optimizer(rec, m, steps)[0])), model, schedule
    torch = torch_or_none()
    twin = torch_model(torch, rec.arch)
    copy_weights(model, twin)
    if layout == "channels_last":
        twin = twin.to(memory_format=torch.channels_last)
    return (lambda m: torch_trainer(torch, m, optimizer, layout)), twin.train(), schedule


def warm_up(train_step, accuracy, data, batch, augment):
    """Seconds for the steps that load/compile kernels and create primitives: two steps at
    `batch`, one at the last batch's size when it differs, one evaluation batch. Call with a
    trainer on copies: the model that is timed must start from its initial weights."""
    x, y, x_test, y_test = data
    rng = np.random.default_rng(12345)
    t = time.perf_counter()
    last = len(x) % batch
    for n in (batch, batch) + ((last,) if last else ()):
        xb = x[:n] if augment is None else augment(x[:n], rng)
        train_step(xb, y[:n], 1e-4)
    accuracy(x_test[:EVAL_BATCH], y_test[:EVAL_BATCH])
    return time.perf_counter() - t


def worker(cfg, data=None):
    """One library's run: cfg holds lib ("tinycnn" or "torch"), layout (PyTorch's), arch,
    data_dir, epochs (None: the recipe's), eval_every (None: a quarter epoch) and target.
    Runs in its own process; tests call it in-process with small `data`
    (x_train, y_train, x_test, y_test) in place of MNIST."""
    from tinycnn import run
    from tinycnn.augment import RandomAffine
    from tinycnn.runtime import one_thread_pool
    if data is None:
        data = recipe_data(cfg["data_dir"], run.PRESETS["fast"]["val_fraction"], run.DEFAULTS["seed"])
    n_train = len(data[0])
    rec = recipe(cfg["arch"], n_train)
    steps = total_steps(n_train, rec.batch_size, rec.epochs if cfg["epochs"] is None else cfg["epochs"])
    eval_every = cfg["eval_every"] or max(1, math.ceil(n_train / rec.batch_size) // 4)
    augment = RandomAffine() if rec.augment else None
    make, subject, schedule = build(cfg["lib"], rec, data[0].shape[1:], steps, cfg.get("layout", "nchw"))
    # tinycnn's fit() trains inside one_thread_pool (BLAS single-threaded while Numba's threads
    # run the kernels), and so does its worker here; PyTorch's keeps its own thread settings.
    threads = one_thread_pool() if cfg["lib"] == "tinycnn" else contextlib.nullcontext()
    with threads:
        warm = warm_up(*make(copy.deepcopy(subject)), data, rec.batch_size, augment)
        result = train_to_target(*make(subject), data, rec.batch_size, steps, schedule, rec.seed, augment,
                                 eval_every, cfg["target"])
    return {**result, "warmup_seconds": warm, "steps": steps, "eval_every": eval_every,
            "batch_size": rec.batch_size, "lr": rec.lr, "betas": list(rec.betas), "train_images": n_train}


def run_worker(cfg, allocator):
    """worker(cfg) in a new process with this allocator setting; its result dict."""
    out = subprocess.run([sys.executable, HERE, "--worker", json.dumps(cfg), allocator], capture_output=True,
                         text=True, cwd=ROOT, env=worker_env(allocator))
    if out.returncode != 0:
        raise RuntimeError(f"worker {cfg} ({allocator}) failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the report ---------------------------------------------------------------------------------

def median_or_none(values):
    """Median treating None (target not reached) as slower than any time; None if that is the median."""
    value = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(value) else value


def summary(runs, libs):
    """Per library: medians over the rounds, and tinycnn's time to target / its time to target
    per round. Returns (rows, best PyTorch library or None)."""
    med = lambda lib, key: float(np.median([r[lib][key] for r in runs]))
    ratio = lambda lib: [None if r["tinycnn"]["time_to_target"] is None or r[lib]["time_to_target"] is None
                         else r["tinycnn"]["time_to_target"] / r[lib]["time_to_target"] for r in runs]
    rows = []
    for lib in libs:
        times = [r[lib]["time_to_target"] for r in runs]
        rows.append({"library": lib, "time to target s": median_or_none(times),
                     "reached in rounds": f"{sum(t is not None for t in times)}/{len(runs)}",
                     "per round s": " / ".join("not reached" if t is None else f"{t:.1f}" for t in times),
                     "steps at target": " / ".join(str(r[lib]["steps_to_target"] or "-") for r in runs),
                     "final test acc": med(lib, "final_accuracy"), "train s": med(lib, "train_seconds"),
                     "img/s": med(lib, "images_per_second"), "augment s": med(lib, "augment_seconds"),
                     "eval s (not counted)": med(lib, "eval_seconds"),
                     "warm-up s (not counted)": med(lib, "warmup_seconds"),
                     "train CPU s": med(lib, "train_cpu_seconds")})
        if lib != "tinycnn":
            per_round = ratio(lib)
            rows[-1]["tinycnn time x"] = median_or_none(per_round)
            rows[-1]["tinycnn time x per round"] = " / ".join("-" if v is None else f"{v:.2f}" for v in per_round)
    torch_rows = [row for row in rows if row["library"] != "tinycnn"]
    best = min(torch_rows, key=lambda row: math.inf if row["time to target s"] is None else row["time to target s"],
               default=None)
    return rows, best


def curve_rows(results):
    """One row per evaluation of a round: the step, and each library's training seconds and
    test accuracy there (the libraries' accuracies should move together: same recipe)."""
    libs = list(results)
    rows = []
    for i, point in enumerate(results[libs[0]]["curve"]):
        row = {"step": point["step"]}
        for lib in libs:
            other = results[lib]["curve"][i]
            row[f"{lib} s"], row[f"{lib} acc"] = other["train_seconds"], f"{other['test_accuracy']:.4f}"
        rows.append(row)
    return rows


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="fastnet", help="model, with its recipe from run.RECIPES "
                        f"(default fastnet; one of {', '.join(TORCH_TWINS)})")
    parser.add_argument("--torch", default=DEFAULT_TORCH,
                        help=f"comma-separated PyTorch settings (default {DEFAULT_TORCH}; "
                             f"from {', '.join(TORCH_SETTINGS)}; empty: tinycnn only)")
    parser.add_argument("--target", type=float, default=None, help="test accuracy to reach (default 0.99, quick 0.9)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="train this many epochs, fractions allowed; the one cycle spans the run so set "
                             "(default the recipe's, quick 0.2)")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between test evaluations (default a quarter epoch, quick 10)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 2, quick 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a fifth of an epoch, target 0.9, evaluations every 10 steps, one round (under a minute)")
    parser.add_argument("--data-dir", default=os.environ.get("TINYCNN_DATA_DIR",
                                                            os.path.join(ROOT, "..", "shared", "data", "mnist")),
                        help="folder with the MNIST files (default $TINYCNN_DATA_DIR or ../shared/data/mnist)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return args
    quick = QUICK if args.quick else {}
    args.target = args.target if args.target is not None else quick.get("target", 0.99)
    args.epochs = args.epochs if args.epochs is not None else quick.get("epochs")
    args.eval_every = args.eval_every if args.eval_every is not None else quick.get("eval_every")
    args.rounds = args.rounds if args.rounds is not None else quick.get("rounds", 2)
    if args.arch not in TORCH_TWINS:
        parser.error(f"--arch {args.arch}: choose from {', '.join(TORCH_TWINS)} (the models with a PyTorch twin)")
    if not 0 < args.target <= 1:
        parser.error(f"--target must be a test accuracy in (0, 1], got {args.target}")
    if args.epochs is not None and not 0 < args.epochs < math.inf:
        parser.error(f"--epochs must be > 0, got {args.epochs}")
    if args.eval_every is not None and args.eval_every < 1:
        parser.error(f"--eval-every must be >= 1 step, got {args.eval_every}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    args.settings = [s for s in args.torch.split(",") if s]
    unknown = [s for s in args.settings if s not in TORCH_SETTINGS]
    if unknown:
        parser.error(f"unknown PyTorch setting(s) {', '.join(unknown)}; choose from {', '.join(TORCH_SETTINGS)}")
    if not os.path.isfile(os.path.join(args.data_dir, "train-images-idx3-ubyte.gz")) and \
            not os.path.isfile(os.path.join(args.data_dir, "train-images-idx3-ubyte")):
        parser.error(f"--data-dir {args.data_dir}: no MNIST training images there (train-images-idx3-ubyte[.gz]); "
                     "this benchmark needs real MNIST")
    return args


def main():
    args = parse_args()
    if args.worker:
        cfg, allocator = json.loads(args.worker[0]), args.worker[1]
        check_allocator(allocator)
        result = worker(cfg)
        print(json.dumps(result))
        return
    skipped = []
    if args.settings and torch_or_none() is None:
        skipped.append(f"PyTorch is not installed: its settings ({', '.join(args.settings)}) are skipped "
                       "(pip install torch==2.13.0).")
        args.settings = []
    if "cl+jemalloc" in args.settings and not os.path.exists(JEMALLOC):
        args.settings.remove("cl+jemalloc")
        skipped.append(f"cl+jemalloc skipped: {JEMALLOC} not found (apt-get install libjemalloc2)")
    cfg = {"arch": args.arch, "data_dir": args.data_dir, "epochs": args.epochs, "eval_every": args.eval_every,
           "target": args.target}
    libs = ["tinycnn"] + [f"torch {s}" for s in args.settings]
    runs = []
    for r in range(args.rounds):
        got = {}
        for lib in libs:
            print(f"round {r + 1}/{args.rounds}: {lib}", file=sys.stderr, flush=True)
            if lib == "tinycnn":    # the allocator call tinycnn's main job makes (tinycnn/runtime.py)
                got[lib] = run_worker({**cfg, "lib": "tinycnn"}, "mallopt")
            else:
                layout, allocator = TORCH_SETTINGS[lib.split(" ", 1)[1]]
                got[lib] = run_worker({**cfg, "lib": "torch", "layout": layout}, allocator)
        runs.append(got)
    rows, best = summary(runs, libs)
    first = runs[0]["tinycnn"]
    peak = matmul_peak_gflops()
    print(f"Time to {args.target:.2%} MNIST test accuracy, {args.arch} with the main job's default recipe: "
          f"{first['train_images']:,} training images (the recipe's 90% split), batch {first['batch_size']}, "
          f"{first['steps']} steps, Adam lr {first['lr']:g} betas {tuple(first['betas'])}, one cycle, augmented; "
          f"test accuracy every {first['eval_every']} steps (not timed). {args.rounds} round(s), medians.")
    info = machine()
    print(f"{machine_line(peak)} torch {info['torch']}.")
    for line in skipped:
        print(line)
    if best is not None and best["tinycnn time x"] is not None:
        print(f"\n**tinycnn's time to target / PyTorch's best ({best['library']}): {best['tinycnn time x']:.2f}** "
              f"(per round: {best['tinycnn time x per round']}; below 1 means tinycnn is faster)")
    elif best is not None:
        print(f"\nNo ratio: the target was not reached in every round by both (per round: "
              f"{best['tinycnn time x per round']}).")
    print()
    columns = ["library", "time to target s", "reached in rounds", "per round s", "steps at target",
               "final test acc", "train s", "img/s", "augment s", "eval s (not counted)", "warm-up s (not counted)",
               "train CPU s"]
    print(table(rows, columns + (["tinycnn time x", "tinycnn time x per round"] if best else [])))
    print("\nTest accuracy at each evaluation, and the training seconds until then (last round):\n")
    curve = curve_rows(runs[-1])
    print(table(curve, list(curve[0])))
    write_json(args.json, {"machine": {**info, "matmul_gflops": peak}, "arch": args.arch, "target": args.target,
                           "epochs": args.epochs, "torch_settings": {s: TORCH_SETTINGS[s] for s in args.settings},
                           "best_torch": best and best["library"], "rows": rows,
                           "rounds": [{lib: {k: v for k, v in res.items() if k != "losses"} for lib, res in r.items()}
                                      for r in runs]})


if __name__ == "__main__":
    main()
