"""Recognise the digit in image files with a trained model.

    python examples/predict_digit.py --model runs/default/model.npz my_digit.png photos/
    python examples/predict_digit.py --model runs/default/model.npz my_digit.png --show figures/

Each image goes through tinycnn.preprocess.to_mnist (dark-on-light is inverted, noise
removed, the digit cropped, scaled to 20 px and centred by its centre of mass, as MNIST was
made) before the model sees it. Folders are expanded to the images inside; unreadable
files are reported and skipped, and the exit status is then 1.
"""
import argparse
import sys

from tinycnn.cli import cmd_predict, reporting_user_errors


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model.npz saved by tinycnn")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--show", metavar="DIR", nargs="?", const="predictions",
                        help="save a figure per image into DIR (default: predictions/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace figures of the same names already in DIR (without it, they are refused)")
    args = parser.parse_args()
    return reporting_user_errors("predict_digit.py", cmd_predict, args)   # one line, as tinycnn predict


if __name__ == "__main__":
    sys.exit(main())
