"""Where a trained model looks: saliency maps of MNIST test images, and where their mass lies.

    python examples/saliency_maps.py --model runs/default/model.npz --data-dir ../shared/data/mnist

Writes the main job's saliency figure (the first test image of each class and the most
confident mistake) to --out, then measures, over the first --count test images, where
|S| = |d z_pred / d x| is large: its share inside the central 20x20 box (where MNIST
centres the digits; 51% of the pixels) and its mean on ink (pixels > 127) against the
background.
"""
import argparse
import os
import sys

import numpy as np

from tinycnn import datasets, load_model
from tinycnn.cli import CommandError, output_folder, reporting_user_errors
from tinycnn.run import draw_saliency, files_in_the_way
from tinycnn.saliency import saliency


def saliency_statistics(model, images, batch=100):
    """(share of sum |S| in the central 20x20 box, mean |S| on ink / mean |S| off ink) for
    uint8 (N, 28, 28) images, S the saliency map of each image's predicted class."""
    s = np.concatenate([np.abs(saliency(model, model.preprocess(images[i:i + batch]))[0]).max(axis=1)
                        for i in range(0, len(images), batch)])           # (N, 28, 28)
    centre = np.zeros(images.shape[1:], bool)
    centre[4:-4, 4:-4] = True
    ink = images > 127
    return s[:, centre].sum() / s.sum(), s[ink].mean() / s[~ink].mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.npz trained on MNIST by tinycnn")
    parser.add_argument("--data-dir", help="folder with the MNIST files (default: the download cache)")
    parser.add_argument("--count", type=int, default=1000, help="test images measured (default: %(default)s)")
    parser.add_argument("--out", default="saliency.png", help="figure file (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists already")
    args = parser.parse_args()
    if args.count < 1:             # images[:-5] would have meant "all but the last 5"
        parser.error(f"--count must be >= 1, got {args.count}")
    # A missing model or data folder, an --out one cannot write: one line.
    return reporting_user_errors("saliency_maps.py", run, args)


def run(args):
    # Before any work: a figure already at --out is replaced only with --overwrite.
    folder = os.path.dirname(args.out) or "."
    output_folder(folder, "--out")
    if problem := files_in_the_way("--out", folder, [os.path.basename(args.out)], args.overwrite):
        raise CommandError(problem)
    model = load_model(args.model)
    _, (images, labels) = datasets.load_dataset("mnist", data_dir=args.data_dir, download=args.data_dir is None)
    images, labels = images[:args.count], labels[:args.count]
    x = model.preprocess(images)
    draw_saliency(model, images, x, labels, model.predict_proba(x), model.class_names, args.out)
    centre, ink = saliency_statistics(model, images)
    print(f"{len(images)} test images: {centre:.0%} of sum |S| lies in the central 20x20 box "
          f"(51% of the pixels); mean |S| on ink is {ink:.1f}x that on the background")
    print(f"figure written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
