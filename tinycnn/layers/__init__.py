"""All layers. Each documents its shapes, its forward and backward formulas and its cache."""
from .activations import LeakyReLU, ReLU, Sigmoid, Tanh
from .base import Layer
from .batchnorm import BatchNorm1D, BatchNorm2D
from .conv import Conv2D
from .dense import Dense, Flatten
from .dropout import Dropout
from .pooling import AvgPool2D, MaxPool2D

# Name -> class, used to rebuild a saved model from its JSON description.
LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2D, MaxPool2D, AvgPool2D, Dense, Flatten, ReLU, LeakyReLU, Sigmoid, Tanh,
    Dropout, BatchNorm1D, BatchNorm2D)}

__all__ = ["Layer", "LAYER_TYPES"] + sorted(LAYER_TYPES)
