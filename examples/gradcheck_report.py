"""Gradient-check every layer type, the loss and a small model on each kernel backend.

    python examples/gradcheck_report.py                   # all three backends
    python examples/gradcheck_report.py --backend loops   # one (repeat the option for more)

Prints a table per backend (layer, array, worst relative error, where, expected, pass/fail)
and a footer that says what size of error to expect in float64 and what a bug looks like;
exits with status 1 if any array fails. Every array is checked element by element against
central finite differences (tinycnn/gradcheck.py), except the model's, where 12 random
elements per array are checked.

Measured on a shared 2-core machine: 15-25 s of wall time (about 8 s of CPU time) for all
three backends, most of it the Numba backend's first call loading its compiled float64
kernels from the disk cache (alone, the numpy backend then took 0.4 s and loops 2.3 s).
The very first run in a fresh checkout also compiles those kernels: 3 minutes here.
"""
import argparse
import sys

from tinycnn.backend import BACKENDS
from tinycnn.cli import reporting_user_errors
from tinycnn.gradcheck import gradcheck_report
from tinycnn.run import seed_problem


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=BACKENDS,
                        help="kernel set to check (default: all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed for inputs and parameters")
    args = parser.parse_args(argv)
    if problem := seed_problem("--seed", args.seed):
        parser.error(problem)
    return reporting_user_errors("gradcheck_report.py", check_all, args)


def check_all(args):
    rows = gradcheck_report(args.backend, seed=args.seed)
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
