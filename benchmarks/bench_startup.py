"""Start-up cost: how long a new user waits, with an empty Numba cache (cold: a fresh
install, a CI run, or any edit to a kernel file) and with the cache a first run left (warm).

Each measurement runs in its own process. Cold runs get a new, empty NUMBA_CACHE_DIR each;
the warm run of the same measurement then reuses that folder. Rows:
  import tinycnn          `import tinycnn` in a new process
  first train step MODEL  build the model, then `fit` one epoch of one Adam step on 128
                          images (fit first compiles, or loads, every kernel the model uses;
                          cold, with two cores, in two processes: see tinycnn/warmup.py)
  first predict MODEL     build the model, then predict one image (cold, a small batch runs
                          on the reference kernels while a background process compiles;
                          the run waits for that process before the next measurement)
  tinycnn predict         `python -m tinycnn predict MODEL.npz one.png`, the whole command
  main job                `examples/train_mnist.py --data-dir DIR [--epochs E]`, the whole command
Times are wall seconds and CPU seconds (user + system, all threads, with the processes it
waited for; not the detached background compile): on a shared machine the CPU seconds are
the steadier figure. The in-process rows (import, first step,
first predict) time the step itself, not the interpreter's start.

    python benchmarks/bench_startup.py [--quick] [--models fastnet,lenet5] [--job-epochs 1]
                                       [--data-dir ../shared/data/mnist] [--kernels] [--json out.json]

--kernels adds a table of compile time per kernel (cold, first training step of each model),
from Numba's compile events.
"""
import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from common import ROOT, machine, machine_line, matmul_peak_gflops, table, write_json

HERE = os.path.abspath(__file__)
MODELS = ("convnet", "lenet5", "fastnet", "bnnet")


def _cpu():
    """CPU seconds of this process and of the child processes it has waited for."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


# -- what runs inside each measured process ---------------------------------------------

class _KernelTimes:
    """Numba compile events -> {kernel: [compiles, CPU s, wall s]}, each kernel's own time
    (the helpers compiled inside it are counted as theirs)."""

    def __init__(self):
        from numba.core import event
        self.times, self.stack = {}, []
        outer = self

        class Listener(event.Listener):
            def on_start(self, ev):
                outer.stack.append([ev.data["dispatcher"].py_func.__name__, _cpu(), time.perf_counter(), 0.0, 0.0])

            def on_end(self, ev):
                name, c0, w0, inner_cpu, inner_wall = outer.stack.pop()
                cpu, wall = _cpu() - c0, time.perf_counter() - w0
                entry = outer.times.setdefault(name, [0, 0.0, 0.0])
                entry[0] += 1
                entry[1] += cpu - inner_cpu
                entry[2] += wall - inner_wall
                if outer.stack:
                    outer.stack[-1][3] += cpu
                    outer.stack[-1][4] += wall

        event.register("numba:compile", Listener())


def worker(kind, arch):
    """Run one measurement in this process; print its result as JSON."""
    kernel_times = _KernelTimes() if kind == "kernels" else None
    c0, w0 = _cpu(), time.perf_counter()
    import numpy as np
    import tinycnn
    result = {"import_wall": time.perf_counter() - w0, "import_cpu": _cpu() - c0}
    if kind == "import":
        result.update(wall=result["import_wall"], cpu=result["import_cpu"])
    else:
        c0, w0 = _cpu(), time.perf_counter()
        model = tinycnn.models.ARCHITECTURES[arch]()
        rng = np.random.default_rng(0)
        if kind == "train":                   # as a user's training starts: fit, one step
            x = rng.standard_normal((128, *model.input_shape)).astype(np.float32)
            tinycnn.fit(model, tinycnn.losses.SoftmaxCrossEntropy(), tinycnn.optim.Adam(model), x,
                        rng.integers(0, 10, 128), epochs=1, batch_size=128, progress=False, log=None)
        elif kind == "kernels":               # one step by hand: every kernel compiles in it
            x = rng.standard_normal((128, *model.input_shape)).astype(np.float32)
            loss, optimizer = tinycnn.losses.SoftmaxCrossEntropy(), tinycnn.optim.Adam(model)
            loss.forward(model.forward(x, training=True), rng.integers(0, 10, 128))
            model.backward(loss.backward(), need_dx=False)
            optimizer.step()
        else:
            model.predict(rng.standard_normal((1, *model.input_shape)).astype(np.float32))
        result.update(wall=time.perf_counter() - w0, cpu=_cpu() - c0)
    if kernel_times:
        result["kernels"] = kernel_times.times
    print(json.dumps(result))


# -- the parent: fresh or reused cache folders, one process per measurement -------------

def _run(cmd, cache_dir, cwd=ROOT):
    """Run cmd with NUMBA_CACHE_DIR=cache_dir; returns (wall s, CPU s of the process, stdout)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, PYTHONPATH=ROOT, MPLBACKEND="Agg")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, out.stdout


def _wait_for_background_compiles(since, timeout=600):
    """Wait until the background compile processes started after `since` have finished
    (tinycnn.warmup removes its lock file when done), so they do not slow the next row."""
    folder = tempfile.gettempdir()
    deadline = time.time() + timeout
    while time.time() < deadline:
        locks = [p for p in glob.glob(os.path.join(folder, "tinycnn-compile-*.lock"))
                 if os.path.getmtime(p) >= since - 1]
        if not locks:
            return
        time.sleep(0.5)


def measure(name, cmd, cache_dir, in_process):
    """One row: the command cold (cache_dir is empty) then warm (the same folder)."""
    row = {"measurement": name}
    for state in ("cold", "warm"):
        since = time.time()
        wall, cpu, stdout = _run(cmd, cache_dir)
        _wait_for_background_compiles(since)
        if in_process:
            result = json.loads(stdout.strip().splitlines()[-1])
            wall, cpu = result["wall"], result["cpu"]
        row[f"{state} wall s"], row[f"{state} CPU s"] = wall, cpu
        print(f"  {name} {state}: {wall:.2f} s wall, {cpu:.2f} s CPU", file=sys.stderr, flush=True)
    return row


def _shown(args):
    """A command line as a reader would type it: paths relative to the repository, the
    benchmark's temporary output folder as TMP."""
    shown = [os.path.relpath(a, ROOT) if a.startswith(ROOT) else a for a in args]
    return " ".join("TMP" if a.startswith(tempfile.gettempdir()) else a for a in shown)


def sample_files(folder):
    """A saved fastnet and one 28x28 PNG for `tinycnn predict`."""
    import numpy as np
    from PIL import Image
    sys.path.insert(0, ROOT)
    import tinycnn
    model_path, png = os.path.join(folder, "fastnet.npz"), os.path.join(folder, "one.png")
    tinycnn.models.fastnet().save(model_path)
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(png)
    return model_path, png


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fastnet only, main job for 1 epoch")
    parser.add_argument("--models", default=",".join(MODELS), help="built-in models to measure")
    parser.add_argument("--job-epochs", type=int, default=None,
                        help="epochs for the main job (default: its recipe's; --quick: 1)")
    parser.add_argument("--data-dir", default=os.path.join(ROOT, "..", "shared", "data", "mnist"),
                        help="MNIST folder for the main job (default ../shared/data/mnist)")
    parser.add_argument("--no-job", action="store_true", help="skip the main job")
    parser.add_argument("--kernels", action="store_true", help="also time each kernel's compilation (cold)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    models = ["fastnet"] if args.quick else [m for m in args.models.split(",") if m]
    job_epochs = args.job_epochs or (1 if args.quick else None)

    work = tempfile.mkdtemp(prefix="tinycnn-bench-startup-")
    fresh = lambda: tempfile.mkdtemp(dir=work, prefix="numba-cache-")
    rows = []
    print("import", file=sys.stderr)
    rows.append(measure("import tinycnn", [sys.executable, HERE, "--worker", "import", "-"], fresh(), True))
    for arch in models:
        rows.append(measure(f"first train step, {arch}", [sys.executable, HERE, "--worker", "train", arch],
                            fresh(), True))
        rows.append(measure(f"first predict (1 image), {arch}",
                            [sys.executable, HERE, "--worker", "predict", arch], fresh(), True))
    model_path, png = sample_files(work)
    rows.append(measure("`tinycnn predict` fastnet one.png",
                        [sys.executable, "-m", "tinycnn", "predict", model_path, png], fresh(), False))
    job = None
    if not args.no_job:
        job = [sys.executable, os.path.join(ROOT, "examples", "train_mnist.py"), "--data-dir", args.data_dir,
               "--out", os.path.join(work, "run"), "--quiet", "--overwrite"]      # (cold, then warm, there)
        job += ["--epochs", str(job_epochs)] if job_epochs else []
        rows.append(measure(f"main job ({_shown(job[1:])})", job, fresh(), False))
    kernel_rows = []
    if args.kernels:
        for arch in models:
            _, _, stdout = _run([sys.executable, HERE, "--worker", "kernels", arch], fresh())
            for name, (n, cpu, wall) in json.loads(stdout.strip().splitlines()[-1])["kernels"].items():
                kernel_rows.append({"model": arch, "kernel": name, "compiles": n, "CPU s": cpu, "wall s": wall})

    info = machine()
    peak = matmul_peak_gflops()
    print(f"{machine_line(peak)} numba {info['numba']}, numpy {info['numpy']}, Python {info['python']}.")
    print("cold = empty NUMBA_CACHE_DIR (each row its own); warm = the same folder again. "
          "First step: batch 128, Adam.")
    print()
    print(table(rows, ["measurement", "cold wall s", "cold CPU s", "warm wall s", "warm CPU s"]))
    if kernel_rows:
        kernel_rows.sort(key=lambda r: (r["model"], -r["CPU s"]))
        print("\nCompile time per kernel (cold, first training step; helpers counted on their own):\n")
        print(table([r for r in kernel_rows if r["CPU s"] >= 0.05], ["model", "kernel", "compiles", "CPU s", "wall s"]))
    write_json(args.json, {"machine": info, "matmul_gflops": peak, "rows": rows, "kernels": kernel_rows,
                           "main_job": job and _shown(job[1:])})


if __name__ == "__main__":
    main()
