"""What each ingredient of the accuracy recipe is worth: an ablation over seeds.

    python benchmarks/ablation.py --data-dir ../shared/data/mnist            # about 1.5 hours on 2 cores
    python benchmarks/ablation.py --data-dir ../shared/data/mnist --steps baseline +batchnorm
    python benchmarks/ablation.py --quick                                    # smoke test on digits

Each step adds one ingredient to the one before it and is trained once per seed with
examples/train_mnist.py's own code (tinycnn.run), on 90% of the training set; the other 10%
is the validation split every choice here was made on. The last step, --recipe best, makes
no choice: it trains the step before it on the whole training set, as a final model is.
Test accuracy is measured once, at the end of each run. A finished run leaves metrics.json
in <out>/<step>/seed<k>/ and is not trained again when the script is rerun with the same
settings (so an interrupted ablation continues where it stopped); --fresh retrains everything.
"""
import argparse
import json
import os
import sys

import numpy as np

from common import machine, machine_line, table, write_json

from tinycnn import run as main_job

# (name, what it adds, train_mnist.py options). Cumulative: each step keeps the ones above.
STEPS = [
    ("baseline", "convnet (Keras example), Adam 1e-3 constant, 6 epochs",
     ["--arch", "convnet", "--lr", "1e-3", "--schedule", "constant", "--epochs", "6", "--no-augment"]),
    ("+batchnorm", "BatchNorm2D after each convolution",
     ["--arch", "convnet-bn", "--lr", "1e-3", "--schedule", "constant", "--epochs", "6", "--no-augment"]),
    ("+augmentation", "random shifts, rotations, scaling",
     ["--arch", "convnet-bn", "--lr", "1e-3", "--schedule", "constant", "--epochs", "6", "--augment"]),
    ("+one-cycle", "one-cycle schedule, peak lr 3e-3",
     ["--arch", "convnet-bn", "--lr", "3e-3", "--schedule", "onecycle", "--epochs", "6", "--augment"]),
    ("+bnnet", "bnnet (3 conv-BN-ReLU blocks, BN dense head), 20 epochs",
     ["--recipe", "best", "--val-fraction", "0.1"]),
    ("best", "--recipe best: the same, trained on all 60,000 images (no validation split)",
     ["--recipe", "best"]),
]


def train_once(options, seed, out, data_args, fresh):
    """metrics.json of one run: reused from `out` if it was trained with the same settings."""
    # (--overwrite: this script's own folder, whose runs are retrained when their settings change)
    argv = options + data_args + ["--seed", str(seed), "--out", out, "--quiet", "--no-plots", "--overwrite"]
    parser = main_job.build_parser()
    args = parser.parse_args(argv)
    main_job.check_args(args, parser)          # resolves the recipe into concrete settings
    if "mnist" in data_args:                   # and its epochs and batch for MNIST's 54,000 images
        main_job.fit_recipe_to_data(args, 54_000, "mnist")
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in ("quiet", "no_plots", "resume", "out", "overwrite")}
    settings["betas"] = list(settings["betas"])
    done = os.path.join(out, "metrics.json")
    if not fresh and os.path.isfile(done):
        with open(done) as f:
            metrics = json.load(f)
        if metrics.get("settings") == settings:
            return metrics
    metrics = main_job.run(args)
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    metrics.update(settings=settings, val_accuracy=history["val_acc"][-1] if history["val_acc"] else None)
    with open(done, "w") as f:
        json.dump(metrics, f, indent=1)
    return metrics


def summarise(name, adds, runs):
    acc = np.array([r["test_accuracy"] for r in runs]) * 100
    val = [r["val_accuracy"] for r in runs]
    minutes = np.array([r["train_seconds"] for r in runs]) / 60
    return {"step": name, "adds": adds, "test % (mean)": float(acc.mean()),
            "spread (min-max)": f"{acc.min():.2f}-{acc.max():.2f}",
            "test % per seed": ", ".join(f"{a:.2f}" for a in acc),
            "val % (mean)": float(np.mean(val) * 100) if None not in val else "-",
            "train min (mean)": float(minutes.mean()),
            "epochs": runs[0]["epochs"], "seeds": len(runs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="folder with the MNIST files (default: cache, download)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", nargs="+", choices=[s[0] for s in STEPS], default=[s[0] for s in STEPS],
                        help="which steps to run (default: all)")
    parser.add_argument("--out", default=os.path.join("runs", "ablation"), help="where runs are kept")
    parser.add_argument("--fresh", action="store_true", help="retrain runs that already finished")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: scikit-learn's digits, 1 epoch, 1 seed (seconds, not hours)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    data_args = ["--dataset", "mnist"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    seeds = args.seeds
    if args.quick:
        data_args, seeds = ["--dataset", "digits", "--epochs", "1"], seeds[:1]

    rows = []
    for name, adds, options in STEPS:
        if name not in args.steps:
            continue
        runs = []
        for seed in seeds:
            out = os.path.join(args.out + ("-quick" if args.quick else ""), name.strip("+"), f"seed{seed}")
            print(f"{name}, seed {seed} -> {out}", flush=True)
            runs.append(train_once(options, seed, out, data_args, args.fresh))
        rows.append(summarise(name, adds, runs))
        print(table(rows[-1:], list(rows[-1])), flush=True)

    print(f"\nAblation on {'digits (quick)' if args.quick else 'MNIST'}: test accuracy over seeds "
          f"{seeds}; each run trained on 90% of the training set (10% held out for validation), "
          f"except best, which trains on all of it.\n"
          f"Train minutes are wall time of training on this machine:")
    print(machine_line() + "\n")
    print(table(rows, ["step", "adds", "test % (mean)", "spread (min-max)", "test % per seed",
                       "val % (mean)", "train min (mean)", "epochs"]))
    write_json(args.json, {"machine": machine(), "seeds": seeds, "rows": rows,
                           "steps": {name: options for name, _, options in STEPS}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
