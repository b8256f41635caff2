"""Exercise (docs/03-activations.md): write the backward pass of Sigmoid, s = 1 / (1 + exp(-x)).

Work on a copy, keeping the name (the checker knows the exercise by it):
    mkdir -p ~/tinycnn-exercises && cp -n docs/exercises/*.py ~/tinycnn-exercises/
Check it:  python -m tinycnn.exercises ~/tinycnn-exercises/sigmoid_backward.py
"""
import numpy as np


def sigmoid_backward(x, dy):
    """x and dy = dL/ds of the same shape -> dx = dL/dx (same shape)."""
    raise NotImplementedError(
        "differentiate s = (1 + exp(-x))^-1 and write the result with s itself; "
        "then multiply by dy element by element")
