"""How often does a model read digits written on paper? Draws digits with a pen the way a
person would (tinycnn.sketch: strokes, jittered, dark ink on light paper, off-centre, with
noise, blur and uneven light, 900x1200 like a phone photo), saves them as JPEG files, and
runs them through exactly what `tinycnn predict` does.

    python examples/paper_digits.py --model runs/default/model.npz --count 300 --out paper/
"""
import argparse
import os
import sys

import numpy as np

from tinycnn import load_model, sketch
from tinycnn.cli import CommandError, output_folder, predict_images, reporting_user_errors
from tinycnn.run import files_in_the_way


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--count", type=int, default=300, help="images to draw (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="paper-digits", help="folder for the JPEG files")
    parser.add_argument("--overwrite", action="store_true", help="replace the JPEG files of an earlier run in --out")
    args = parser.parse_args()
    if args.count < 1:
        parser.error(f"--count must be >= 1, got {args.count}")
    # The model first: a broken one is found before any drawing; an --out that is a file too.
    return reporting_user_errors("paper_digits.py", lambda: run(load_model(args.model), args))


def run(model, args):
    rng = np.random.default_rng(args.seed)
    # Image i shows digit i % 10, so every name is known before drawing. Every run's names
    # start at 0000-digit0.jpg: any earlier run in the folder is found, whatever its --count.
    names = [f"{i:04d}-digit{i % 10}.jpg" for i in range(args.count)]
    output_folder(args.out, "--out")         # a file by that name: one line, before drawing
    if problem := files_in_the_way("--out", args.out, names, args.overwrite):
        raise CommandError(problem)
    os.makedirs(args.out, exist_ok=True)
    paths, truth = [], {}
    for i, name in enumerate(names):
        digit = i % 10
        path = os.path.join(args.out, name)
        sketch.render(sketch.digit_strokes(digit, rng), rng).save(path, quality=85)
        paths.append(path)
        truth[path] = str(digit)
    results, failures = predict_images(model, paths)
    right = {r["path"]: r["digit"] == truth[r["path"]] for r in results}   # skipped files: wrong
    per_digit = {d: np.mean([right.get(p, False) for p in paths if truth[p] == str(d)])
                 for d in range(10) if str(d) in truth.values()}
    print(f"{sum(right.values())}/{len(paths)} right ({sum(right.values()) / len(paths):.1%}) on "
          f"pen-drawn digits in {args.out}/")
    print("per digit: " + "  ".join(f"{d}: {v:.0%}" for d, v in per_digit.items()))
    for path, why in failures:
        print(f"{path}: skipped: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
