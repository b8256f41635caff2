"""tinycnn: a convolutional neural network library written from scratch in NumPy, with
Numba-jitted CPU kernels beside readable reference ones.

    import tinycnn
    model = tinycnn.models.convnet()
    model.summary()
"""
from . import backend, datasets, functional, kernels, layers, losses, models
from .backend import get_backend, set_backend
from .gradcheck import GradcheckResult, gradcheck
from .model import Sequential

__version__ = "0.1.0"

__all__ = ["Sequential", "gradcheck", "GradcheckResult", "set_backend", "get_backend",
           "layers", "losses", "functional", "models", "kernels", "backend", "datasets",
           "__version__"]
