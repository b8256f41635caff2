"""tinycnn: a convolutional neural network library written from scratch in NumPy, with
Numba-jitted CPU kernels beside readable reference ones.

    import tinycnn
    model = tinycnn.models.convnet()
    model.summary()
"""
from . import environment
environment.check_at_import()      # before Numba is imported (see environment.py)
from . import runtime  # noqa: F401  (tinycnn.runtime.keep_freed_memory(); importing changes nothing)
from . import (augment, backend, datasets, functional, kernels, layers, losses, models, optim,
               saliency,
               schedules, train)
from .backend import get_backend, set_backend
from .gradcheck import GradcheckResult, gradcheck
from .io import ModelFormatError, load_model, save_model
from .model import Sequential
from .train import TrainingDiverged, TrainingInterrupted, evaluate, fit
from . import zoo
from .zoo import pretrained

__version__ = "0.1.0"


def __getattr__(name):
    # metrics (scikit-learn) and plotting (matplotlib) are imported on first use: they
    # take about a second to import and most runs need them only at the very end.
    if name in ("metrics", "plotting"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'tinycnn' has no attribute {name!r}")

__all__ = ["Sequential", "gradcheck", "GradcheckResult", "set_backend", "get_backend",
           "load_model", "save_model", "ModelFormatError", "fit", "evaluate", "TrainingDiverged",
           "TrainingInterrupted", "augment", "metrics", "optim", "plotting", "schedules", "train",
           "layers", "losses", "functional", "models", "kernels", "backend", "datasets", "saliency",
           "zoo", "pretrained", "__version__"]
