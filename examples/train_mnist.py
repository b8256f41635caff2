"""Train a digit recogniser on MNIST, evaluate it, save it, reload it and draw it.

    python examples/train_mnist.py                              # MNIST (downloaded if needed)
    python examples/train_mnist.py --data-dir ../shared/data/mnist --epochs 2
    python examples/train_mnist.py --help

The steps live in tinycnn/run.py, one function each (load_data, build_model, train,
evaluate, save, reload, draw), so `tinycnn train` runs exactly the same job.
"""
import sys

from tinycnn.run import main

if __name__ == "__main__":
    sys.exit(main(prog="train_mnist.py"))
