"""examples/train_mnist.py as a user runs it: end to end on the bundled digits, and every
bad argument refused with one line and exit status 2 before any training."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_mnist.py"


def run(*args, cwd=None):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def test_end_to_end_on_digits(tmp_path):
    out = tmp_path / "run"
    proc = run("--dataset", "digits", "--epochs", "2", "--arch", "lenet5", "--out", str(out), "--quiet",
               "--augment")
    assert proc.returncode == 0, proc.stderr
    assert "predictions identical to the trained model" in proc.stdout
    from tinycnn.run import FIGURES, RUN_FILES          # (what --out refuses to replace)
    assert sorted(os.listdir(out)) == sorted(RUN_FILES + FIGURES)
    for name in RUN_FILES + FIGURES:
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "arch", "epochs", "test_accuracy", "test_loss", "train_seconds",
                "seconds_per_epoch", "images_per_second"):
        assert key in m
    assert m["dataset"] == "digits" and m["arch"] == "lenet5" and m["test_accuracy"] > 0.5
    assert m["augment"] is True
    # the main job makes the process-wide allocator call that importing tinycnn does not
    assert m["machine"]["keep_freed_memory"] is (sys.platform.startswith("linux")
                                                 and os.environ.get("TINYCNN_KEEP_MEMORY", "1") != "0")
    assert len(json.loads((out / "history.json").read_text())["train_loss"]) == 2


@pytest.mark.parametrize("args, message", [
    (["--epochs", "-1"], "--epochs must be >= 1"),
    (["--arch", "resnet"], "argument --arch: invalid choice: 'resnet'"),
    (["--data-dir", "."], "mnist files missing: train-images-idx3-ubyte.gz"),
    (["--data-dir", "/no/such/dir"], "--data-dir /no/such/dir: no such folder"),
    (["--out", "/proc/forbidden"], "--out /proc/forbidden: cannot write there"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--val-fraction", "1"], "--val-fraction must be at least 0 and below 1, got 1.0"),
    (["--val-fraction", "-0.1"], "--val-fraction must be at least 0 and below 1, got -0.1"),
])
def test_bad_arguments_one_line_exit_2(tmp_path, args, message):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_help_explains_every_flag():
    proc = run("--help")
    assert proc.returncode == 0
    for flag in ("--arch", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--dataset",
                 "--data-dir", "--out", "--no-plots", "--quiet", "--resume", "--recipe", "--augment",
                 "--schedule", "--val-fraction"):
        assert flag in proc.stdout


def test_explicit_mnist_never_falls_back(tmp_path):
    env_mirror = {"TINYCNN_MNIST_MIRRORS": "http://127.0.0.1:9/"}   # nothing listens on port 9
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dataset", "mnist", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, env=dict(os.environ, **env_mirror), timeout=600)
    assert proc.returncode == 1
    assert "could not download" in proc.stderr and "127.0.0.1:9" in proc.stderr
    assert "digits" not in proc.stdout


def test_recipe_best_sets_up_and_explicit_options_win(tmp_path):
    from tinycnn import run as main_job
    parser = main_job.build_parser()
    args = parser.parse_args(["--recipe", "best", "--out", str(tmp_path)])
    main_job.check_args(args, parser)
    main_job.fit_recipe_to_data(args, 60_000, "mnist")
    assert (args.arch, args.augment, args.schedule, args.epochs, args.batch_size, args.val_fraction) == \
        ("bnnet", True, "onecycle", 20, 128, 0.0)
    args = parser.parse_args(["--recipe", "best", "--arch", "convnet", "--epochs", "2", "--out", str(tmp_path)])
    main_job.check_args(args, parser)
    assert (args.arch, args.augment, args.epochs) == ("convnet", True, 2)
    args = parser.parse_args(["--out", str(tmp_path)])              # no recipe: the fast one
    main_job.check_args(args, parser)
    main_job.fit_recipe_to_data(args, 54_000, "mnist")
    assert (args.arch, args.augment, args.schedule, args.epochs, args.val_fraction) == ("fastnet", True, "onecycle", 3, 0.1)
    args = parser.parse_args(["--no-augment", "--out", str(tmp_path)])
    main_job.check_args(args, parser)
    assert args.augment is False
    args = parser.parse_args(["--recipe", "best", "--val-fraction", "0.2", "--out", str(tmp_path)])
    main_job.check_args(args, parser)
    assert args.val_fraction == 0.2


def test_recipe_fits_the_data_size(tmp_path):
    from tinycnn import run as main_job
    parser = main_job.build_parser()

    def fitted(n_train, dataset, *argv):
        args = parser.parse_args([*argv, "--out", str(tmp_path)])
        main_job.check_args(args, parser)
        note = main_job.fit_recipe_to_data(args, n_train, dataset)
        return args.batch_size, args.epochs, note, args.lr

    assert fitted(54_000, "mnist") == (256, 3, None, 0.01)         # MNIST: the recipe as tuned
    assert fitted(60_000, "mnist", "--arch", "convnet") == (128, 6, None, 3e-3)
    batch, epochs, note, lr = fitted(1_293, "digits")               # the offline fallback
    assert (batch, epochs, lr) == (64, 20, 0.005)                   # 21 steps per epoch, >= 400 in all
    assert "1,293 training images" in note and "batch 64, 20 epochs, lr 0.005" in note
    assert fitted(1_293, "digits", "--optimizer", "sgd")[3] == main_job.SGD_LR
    assert fitted(1_293, "digits", "--lr", "0.02")[3] == 0.02
    assert fitted(100, "digits")[:2] == (16, 58)                    # the batch stops halving at 16
    assert fitted(54_000, "kmnist")[:2] == fitted(54_000, "fashion-mnist")[:2] == (256, 12)
    assert fitted(1_293, "digits", "--epochs", "2")[:2] == (64, 2)  # what the user sets wins
    note = fitted(1_293, "digits", "--epochs", "2")[2]               # and no step floor is claimed
    assert "batch 64, 2 epochs (--epochs), lr 0.005" in note and "at least" not in note, note
    assert "a run here takes at least 400 steps)" in fitted(1_293, "digits")[2]
    assert fitted(1_293, "digits", "--batch-size", "256")[:2] == (256, 67)


def test_val_fraction_0_trains_on_the_whole_training_set(tmp_path):
    from tinycnn import datasets
    out = tmp_path / "run"
    proc = run("--dataset", "digits", "--epochs", "1", "--arch", "lenet5", "--val-fraction", "0",
               "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["val_fraction"] == 0 and m["train_images"] == len(datasets.load_digits()[0][0])
    history = json.loads((out / "history.json").read_text())
    assert len(history["train_loss"]) == 1 and history["val_acc"] == []
    assert (out / "curves.png").stat().st_size > 0


def test_ablation_script_quick_and_resumable(tmp_path):
    script = ROOT / "benchmarks" / "ablation.py"
    cmd = [sys.executable, str(script), "--quick", "--out", str(tmp_path / "abl"), "--json", str(tmp_path / "a.json"),
           "--steps", "baseline", "+batchnorm", "best"]
    env = dict(os.environ, MPLBACKEND="Agg")
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    rows = json.loads((tmp_path / "a.json").read_text())["rows"]
    assert [r["step"] for r in rows] == ["baseline", "+batchnorm", "best"]
    assert all(0 < r["test % (mean)"] <= 100 for r in rows)
    archs = [json.loads(p.read_text())["arch"] for p in sorted((tmp_path / "abl-quick").glob("*/seed0/metrics.json"))]
    assert sorted(archs) == ["bnnet", "convnet", "convnet-bn"]
    done = tmp_path / "abl-quick" / "baseline" / "seed0" / "metrics.json"
    stamp = done.stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert done.stat().st_mtime_ns == stamp                      # finished runs are not retrained
    assert rows[-1]["val % (mean)"] == "-"                       # best trains without a validation split
    moved = tmp_path / "moved"
    (tmp_path / "abl-quick").rename(tmp_path / "moved-quick")    # a moved folder is still reused
    again = subprocess.run(cmd[:4] + [str(moved)] + cmd[5:], capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "moved-quick" / "baseline" / "seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert "| baseline |" in again.stdout


def test_speedrun_reaches_99_percent_on_real_mnist(mnist_dir):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "speedrun.py"), "--data-dir", str(mnist_dir),
                           "--seeds", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    acc = float(proc.stdout.split("test accuracy ")[1].split(";")[0])
    assert acc >= 0.985, proc.stdout           # seeds 0-2 measured 99.18-99.23%; 0.985 leaves room for noise
    assert "mean wall time from a new process" in proc.stdout
