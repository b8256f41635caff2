"""The `tinycnn` command line (also `python -m tinycnn`).

    tinycnn train [options]           the main job (same options as examples/train_mnist.py)
    tinycnn evaluate MODEL            test-set report (and figures with --out)
    tinycnn predict [MODEL] IMAGE...  the digit in each image file (folders: every image inside);
                                      no MODEL: the pretrained "mnist" model shipped with tinycnn
    tinycnn serve [MODEL]             a local web page: draw a digit, see inside the network
    tinycnn summary MODEL             the layer table
    tinycnn download [DATASET]        fetch and verify a dataset into the cache
    tinycnn bench                     a quick training-speed measurement
Bad input gets a one-line error and a non-zero exit status, never a traceback.
"""
import argparse
import contextlib
import hashlib
import os
import sys
import time

import numpy as np

from .fileutil import check_writable, fit_name, name_max

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser, but a mistake is one line and exit status 2, no usage block (the
    message made printable: it may quote a file name or a checkpoint's contents)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {printable(message)} (see --help)\n")


class CommandError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


def printable(text):
    """`text` with control characters (ANSI escapes, newlines, ...) shown as Python escapes,
    so that names from a file cannot drive the terminal or forge output lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def output_folder(path, option):
    """Check now (before any slow work) that figures can be written into folder `path`, or
    raise a CommandError. A folder that does not exist yet is not made here: its nearest
    existing parent must take new entries, and the first figure written makes it (so a
    command that fails before that leaves no empty folder behind)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise CommandError(f"{option} {path}: exists and is not a folder")
    parent = os.path.abspath(path)
    while not os.path.isdir(parent):          # (the root always is one)
        if os.path.lexists(parent):           # a file, or a dangling link, on the way
            raise CommandError(f"{option} {path}: cannot create this folder ({parent} is not a folder)")
        parent = os.path.dirname(parent)
    try:
        check_writable(parent)
    except OSError as err:
        what = "cannot write there" if parent == os.path.abspath(path) else "cannot create this folder"
        raise CommandError(f"{option} {path}: {what} ({err.strerror or err})") from None


def _load(path):
    from .io import load_model
    return load_model(path)


def _check_takes_mnist(model, path, command):
    """Refuse now, in one line, a model that cannot read the 28x28 pictures predict and serve
    give it (to_mnist's), rather than on every image or request."""
    from .modelcheck import check_activations
    shape = model.preprocess(np.zeros((1, 28, 28), np.uint8)).shape[1:]
    try:
        model.output_shapes(shape)
    except ValueError:
        what = f"inputs of shape {model.input_shape}" if model.input_shape else "no input shape stored"
        raise CommandError(f"{path}: the model ({what}) cannot read the 28x28 grey pictures (MNIST's) "
                           f"that {command} gives it") from None
    check_activations(path, model, shape)      # a model saved without its input shape


def expand_images(paths):
    """Files as given; folders replaced by the image files inside them (sorted)."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            out += sorted(os.path.join(p, f) for f in os.listdir(p) if f.lower().endswith(IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def figure_names(paths, folder="."):
    """The --show figure of each image: <stem>-prediction.png, and for a second image of
    the same stem (a/1.png and b/1.png) <stem>-2-prediction.png, and so on. A name longer
    than `folder`'s file system takes (255 bytes, usually; the image's own name may be 250)
    keeps the stem's start and a hash of the whole stem: <start>~<8 hex>-prediction.png,
    the same on every run and distinct for distinct stems."""
    limit = name_max(folder)

    def fitted(stem, suffix):
        if len(os.fsencode(stem + suffix)) <= limit:
            return stem + suffix
        tag = "~" + hashlib.sha256(os.fsencode(stem)).hexdigest()[:8]
        return fit_name(stem, limit - len(os.fsencode(tag + suffix))) + tag + suffix

    names, taken = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        name, i = fitted(stem, "-prediction.png"), 1
        while name in taken:
            i += 1
            name = fitted(stem, f"-{i}-prediction.png")
        taken.add(name)
        names.append(name)
    return names


@contextlib.contextmanager
def removed_if_left_empty(folder):
    """Run the block that writes figures into `folder`; when it fails, `folder` is removed
    again if the block made it and it is still empty (rmdir: anything in it stays), so a
    failed command leaves nothing behind."""
    existed = os.path.lexists(folder)
    try:
        yield
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise


def predict_images(model, paths, show_dir=None, report=None):
    """Predict each image file; returns (results, failures). results: list of dicts with
    path, digit, probability, top3; failures: list of (path, reason). report(result, failure),
    when given, is called as each file is done (one of the two is None): a long run shows
    its progress (with --show, a figure takes ~0.2 s)."""
    from .preprocess import open_image, read_digit
    results, failures = [], []
    report = report or (lambda result, failure: None)
    for path, figure in zip(paths, figure_names(paths, show_dir or ".")):
        try:
            picture = open_image(path)          # bounded memory; refuses pipes and huge files
            small, note = read_digit(picture)
        except (ValueError, OSError) as err:
            failures.append((path, str(err).split(": ", 1)[-1] if str(path) in str(err) else str(err)))
            report(None, failures[-1])
            continue
        proba = model.predict_proba(model.preprocess(small[None]))[0]
        names = model.class_names or [str(i) for i in range(len(proba))]
        top = np.argsort(-proba)[:3]
        result = {"path": path, "digit": names[top[0]], "probability": float(proba[top[0]]),
                  "top3": [(names[k], float(proba[k])) for k in top], "input": small, "proba": proba}
        if note:
            result["note"] = note
        results.append(result)
        if show_dir is not None:
            from .plotting import plot_prediction
            from .saliency import saliency
            os.makedirs(show_dir, exist_ok=True)
            grad = saliency(model, model.preprocess(small[None]))[0][0]      # d z_pred / d input
            plot_prediction(picture, small, proba, names, path=os.path.join(show_dir, figure),
                            saliency=grad)
        report(result, None)
    return results, failures


def _meant_model(arg):
    """What to say when `arg`, no file, looks meant as a model name (a typo of a pretrained
    one, or an architecture's), else None."""
    import difflib
    from . import zoo
    from .models import ARCHITECTURES
    if arg.lower() in ARCHITECTURES:
        return (f"{arg} is an architecture, not a trained model: train one with tinycnn train --arch "
                f"{arg.lower()}, or give a model.npz (pretrained: {', '.join(sorted(zoo.PRETRAINED))})")
    if os.path.splitext(arg)[1] == "" and (close := difflib.get_close_matches(arg.lower(), zoo.PRETRAINED, 1, 0.6)):
        return f"{arg}: no such file or pretrained model; did you mean {close[0]}?"
    return None


def split_model_and_images(model, images):
    """`predict [MODEL] IMAGE...`: the first argument is the model when it is a .npz path or a
    pretrained name ("mnist") with no file of that name; otherwise it is an image too and the
    pretrained "mnist" model is used. Returns (model or None for the default, images)."""
    from . import zoo

    def is_model(arg):               # (a folder named mnist holds images, read by the default model)
        return arg.lower().endswith(".npz") or (zoo.is_pretrained_name(arg) and not os.path.isdir(arg))
    if model is None and len(images) == 1 and is_model(images[0]):
        raise CommandError(f"{images[0]} is a model: give the images to read after it")
    if model is not None and not is_model(model) and not os.path.exists(model) and (meant := _meant_model(model)):
        raise CommandError(meant)       # a mistyped model name, else read as a missing image
    if not (model is None or is_model(model)):
        model, images = None, [model] + images
    if model is None and os.path.isfile(os.path.join(images[0], "model.npz")):
        # a run's folder (`tinycnn train --out DIR`), meant as the model: its figures would be
        # read as digits by the pretrained one
        raise CommandError(f"{images[0]} holds a trained model: give it and the images to read, "
                           f"tinycnn predict {os.path.join(images[0], 'model.npz')} IMAGE...")
    stray = [p for p in images if is_model(p)]
    if stray:                        # e.g. `predict digit.png model.npz`: the model given last
        raise CommandError(f"{stray[0]} is a model, not an image: give the model first "
                           "(tinycnn predict MODEL IMAGE...)")
    return model, images


def cmd_predict(args):
    from .zoo import resolve
    args.model, args.images = split_model_and_images(args.model, args.images)
    if args.show:
        output_folder(args.show, "--show")
    model = _load(resolve(args.model)[0])
    _check_takes_mnist(model, args.model, "predict")
    paths = expand_images(args.images)
    if not paths:
        raise CommandError("no image files found in " + ", ".join(args.images))
    if args.show:
        from .run import files_in_the_way
        if problem := files_in_the_way("--show", args.show, figure_names(paths, args.show), args.overwrite, paths):
            raise CommandError(problem)

    def report(r, failure):            # each line as its file is done, not all at the end
        if failure is not None:
            print(printable(f"{failure[0]}: skipped: {failure[1]}"), file=sys.stderr, flush=True)
            return
        others = printable(", ".join(f"{d} {p:.1%}" for d, p in r["top3"]))
        note = f"   (note: {r['note']})" if "note" in r else ""
        print(f"{printable(r['path'])}: {printable(r['digit'])} ({r['probability']:.1%})   top 3: {others}{note}",
              flush=True)
    with removed_if_left_empty(args.show) if args.show else contextlib.nullcontext():
        results, failures = predict_images(model, paths, args.show, report)
    if args.show and results:
        print(f"figures written to {args.show}/")
    return 1 if failures else 0


def cmd_serve(args):
    from .serve import serve
    from .zoo import resolve
    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port must be between 0 and 65535, got {args.port}")
    path, pretrained = resolve(args.model)
    model = _load(path)
    _check_takes_mnist(model, args.model, "serve")
    if not os.environ.get("TINYCNN_BACKEND", "").strip():     # unset or empty: not the user's choice
        # One image at a time: the NumPy kernels need ~25 ms of CPU per request, the Numba ones
        # (made for batches) 65-190 ms and a ~20 s compile on the first request.
        from .backend import set_backend
        set_backend("numpy")
    try:
        return serve(model, pretrained or args.model, args.host, args.port, pretrained=pretrained)
    except OSError as err:            # the address is taken, or not this machine's
        raise CommandError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None


def cmd_summary(args):
    model = _load(args.model)
    model.summary()
    if model.preprocessing:            # e.g. {"scale": 1/255, "mean": 0.1307, "std": 0.3081}
        steps = ", ".join(printable(f"{k} {f'{v:.4g}' if isinstance(v, float) else v}")
                          for k, v in model.preprocessing.items())
        print(f"preprocessing: {steps}")
    if model.class_names:
        print(f"classes: {', '.join(map(printable, model.class_names))}")
    return 0


EVALUATE_FIGURES = ("confusion_matrix.png", "predictions.png", "mistakes.png")     # evaluate --out


def cmd_evaluate(args):
    from . import datasets, metrics
    from .losses import SoftmaxCrossEntropy
    from .train import evaluate
    model = _load(args.model)
    if args.out:
        output_folder(args.out, "--out")
        from .run import files_in_the_way
        if problem := files_in_the_way("--out", args.out, EVALUATE_FIGURES, args.overwrite):
            raise CommandError(problem)
    if args.data_dir is not None and args.dataset != "digits":
        from .run import data_dir_problem
        if problem := data_dir_problem(args.data_dir, args.dataset, splits=("test",)):
            raise CommandError(problem)
    if args.dataset == "digits":
        _, (x_u8, y) = datasets.load_digits(image_size=28)
    else:                               # the test files only: evaluating needs no training files
        _, (x_u8, y) = datasets.load_dataset(args.dataset, data_dir=args.data_dir,
                                             download=args.data_dir is None, progress=None, splits=("test",))
    x = model.preprocess(x_u8)
    classes = model.output_shapes(x.shape[1:])[-1]
    from .modelcheck import check_activations
    check_activations(args.model, model, x.shape[1:])
    if len(classes) != 1 or int(y.max()) >= classes[0]:
        raise CommandError(f"{args.model} gives outputs of shape {classes}, but the {args.dataset} "
                           f"test set has {int(y.max()) + 1} classes")
    proba = model.predict_proba(x)      # first: FloatingPointError if any output is NaN
    loss, acc = evaluate(model, SoftmaxCrossEntropy(), x, y)
    names = [printable(n) for n in model.class_names or range(proba.shape[1])]
    print(f"{args.dataset} test set, {len(y):,} images: accuracy {acc:.4f}, loss {loss:.4f}, "
          f"top-3 {metrics.top_k_accuracy(y, proba, 3):.4f}")
    print(metrics.classification_report(y, proba.argmax(1), names))
    if args.out:
        from . import plotting
        cm = metrics.confusion_matrix(y, proba.argmax(1), len(names))
        confusion, predictions, mistakes = (os.path.join(args.out, name) for name in EVALUATE_FIGURES)
        with removed_if_left_empty(args.out):
            plotting.plot_confusion_matrix(cm, names, path=confusion)
            plotting.plot_predictions(x_u8, y, proba, names, path=predictions)
            plotting.plot_mistakes(x_u8, y, proba, names, path=mistakes)
        print(f"figures written to {args.out}/")
    return 0


def cmd_download(args):
    from . import datasets
    where = args.data_dir or os.environ.get("TINYCNN_DATA_DIR") or datasets.cache_dir(args.dataset)
    print(f"{args.dataset}: checking {where}, downloading what is missing", flush=True)   # (offline: ~10 s of retries)
    datasets.fetch(args.dataset, data_dir=args.data_dir, download=True, progress=None)
    print(f"{args.dataset}: all files present and verified in {where}")
    return 0


def cmd_bench(args):
    from . import models, optim
    from .losses import SoftmaxCrossEntropy
    if args.steps < 1 or not 1 <= args.batch_size <= 8192:
        raise CommandError(f"--steps must be >= 1 and --batch-size in 1..8192, got {args.steps} and "
                           f"{args.batch_size}")
    rng = np.random.default_rng(0)
    from .backend import get_backend
    print(f"training speed, batch {args.batch_size}, {args.steps} Adam steps after 3 warm-up steps, "
          f"{get_backend()} kernels (random 28x28 inputs; full comparisons: benchmarks/bench_train.py)")
    for arch in args.arch:
        model, loss = models.ARCHITECTURES[arch](), SoftmaxCrossEntropy()
        opt = optim.Adam(model)
        x = rng.random((args.batch_size, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, args.batch_size)

        def step():
            loss.forward(model.forward(x, training=True), y)
            model.backward(loss.backward(), need_dx=False)
            opt.step()
        for _ in range(3):
            step()
        t = time.perf_counter()
        for _ in range(args.steps):
            step()
        rate = args.batch_size * args.steps / (time.perf_counter() - t)
        print(f"  {arch:8s} {rate:9,.0f} images/s   {60000 / rate:6.1f} s per MNIST epoch")
    return 0


def build_parser():
    from . import run
    from .datasets import DATASETS
    from .models import ARCHITECTURES
    parser = OneLineParser(prog="tinycnn", description="tinycnn: a CNN library from scratch. "
                           "Train, evaluate and use digit recognisers.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    # Kept so that train's own checks (run.check_args) say "tinycnn train: error: ...".
    parser.train_parser = run.add_train_arguments(sub.add_parser(
        "train", help="train, evaluate, save and draw (the main job)", description=run.build_parser().description))
    p = sub.add_parser("evaluate", help="report a saved model's accuracy on a test set")
    p.add_argument("model", help="a model.npz saved by tinycnn, or mnist (the pretrained model)")
    p.add_argument("--dataset", default="mnist", choices=sorted(DATASETS) + ["digits"],
                   help="test set to use (default: %(default)s)")
    p.add_argument("--data-dir", help="folder holding the dataset's IDX files (gzipped or not); default: "
                                      "$TINYCNN_DATA_DIR, then the download cache (downloading what is missing)")
    p.add_argument("--out", help="also write confusion matrix, predictions and mistakes PNGs here")
    p.add_argument("--overwrite", action="store_true", help="replace those PNGs if --out holds them already")
    p = sub.add_parser("predict", help="recognise the digit in image files",
                       description="The first argument is the model when it ends in .npz or is a "
                       "pretrained name (mnist) with no file of that name; otherwise every argument "
                       "is an image and the pretrained mnist model reads them. Give the model first.")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a model.npz saved by tinycnn, or mnist (default: mnist, shipped with tinycnn)")
    p.add_argument("images", nargs="+", help="image files, or folders of them")
    p.add_argument("--show", metavar="DIR", help="save a figure per image (original, what the model saw, "
                                                  "its saliency map, probabilities) into DIR")
    p.add_argument("--overwrite", action="store_true",
                   help="replace figures of the same names already in DIR (without it, they are refused)")
    p = sub.add_parser("serve", help="a local web page: draw a digit, see inside the network")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a model.npz saved by tinycnn, or mnist (default: mnist, shipped with tinycnn)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="(default: %(default)s; 0 picks a free one)")
    p = sub.add_parser("summary", help="print a saved model's layers")
    p.add_argument("model", help="a model.npz saved by tinycnn, or mnist (the pretrained model)")
    p = sub.add_parser("download", help="fetch and verify a dataset into the cache")
    p.add_argument("dataset", nargs="?", default="mnist", choices=sorted(DATASETS),
                   help="dataset to fetch (default: %(default)s)")
    p.add_argument("--data-dir", help="download here instead of the cache")
    p = sub.add_parser("bench", help="a quick training-speed measurement")
    p.add_argument("--arch", nargs="+", default=["convnet", "lenet5", "fastnet"], choices=sorted(ARCHITECTURES),
                   help="architectures to time (default: convnet lenet5 fastnet)")
    p.add_argument("--batch-size", type=int, default=128, help="images per step (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed Adam steps per architecture, after 3 warm-up steps (default: %(default)s)")
    return parser


def main(argv=None):
    from . import run
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import keep_freed_memory, quick_exit
    keep_freed_memory()            # a tinycnn process: glibc keeps freed memory (see runtime.py)
    quick_exit()                   # and exits without tearing down Numba's objects one by one
    try:
        if args.command == "train":
            run.check_args(args, parser.train_parser)
            status = run.main_with_args(args, parser.train_parser.prog)
        else:
            status = _command(args)
        sys.stdout.flush()         # (inside the try: a closed pipe shows here, not at exit)
        return status
    except BrokenPipeError:        # the reader stopped (`tinycnn ... | head`): stop quietly, as
        devnull = os.open(os.devnull, os.O_WRONLY)   # Unix tools do; devnull takes what is left
        os.dup2(devnull, sys.stdout.fileno())        # in the buffer when Python flushes at exit
        return 1


def user_errors():
    """The exceptions a command reports as one line (the input's fault, not tinycnn's)."""
    from .datasets import ChecksumError, DownloadError, IDXFormatError
    from .io import ModelFormatError
    return (CommandError, ModelFormatError, DownloadError, ChecksumError, IDXFormatError,
            OSError, ValueError, FloatingPointError, MemoryError)


def reporting_user_errors(prog, run, *args):
    """run(*args)'s exit status; a user error (user_errors()) is printed as one line,
    "PROG: error: ...", and gives status 1; Ctrl-C is "interrupted" and status 130. For the
    example scripts, as for the commands."""
    try:
        return run(*args)
    except user_errors() as err:
        print(f"{prog}: error: {printable(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _command(args):
    """Runs a command other than train; errors the user can act on are one line."""
    from .datasets import ChecksumError, DownloadError
    commands = {"predict": cmd_predict, "summary": cmd_summary, "evaluate": cmd_evaluate,
                "download": cmd_download, "bench": cmd_bench, "serve": cmd_serve}
    try:
        return commands[args.command](args)
    except BrokenPipeError:
        raise
    except user_errors() as err:
        message = f"tinycnn {args.command}: error: {err}"
        # Download errors list one mirror a line; any other newline (in a file name, say) is escaped.
        lines = message.splitlines() if isinstance(err, (DownloadError, ChecksumError)) else [message]
        print("\n".join(map(printable, lines)), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
