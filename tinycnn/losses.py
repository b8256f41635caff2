"""Loss functions."""
import numpy as np

from .functional import log_softmax


class SoftmaxCrossEntropy:
    """Softmax followed by cross-entropy, fused because together their gradient is simple.

    forward:  logits (N, K), labels (N,) ints in [0, K) -> mean loss (a Python float)
              loss = -(1/N) sum_n log softmax(logits_n)[labels_n]
    backward: dlogits = (softmax(logits) - onehot(labels)) / N      shape (N, K)
    caches:   the softmax probabilities and the labels
    Uses log-sum-exp with the row maximum subtracted, so logits of 1e4 do not overflow.
    """

    def __init__(self):
        self.cache = None

    def forward(self, logits, labels):
        if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.dtype.kind != "f":
            raise ValueError("SoftmaxCrossEntropy: logits must be a float array (N, K), got "
                             f"{getattr(logits, 'dtype', type(logits).__name__)} "
                             f"shape {getattr(logits, 'shape', None)}")
        labels = np.asarray(labels)
        N, K = logits.shape
        if labels.shape != (N,) or labels.dtype.kind not in "iu":
            raise ValueError(f"SoftmaxCrossEntropy: labels must be integers of shape ({N},), got "
                             f"{labels.dtype} shape {labels.shape}")
        if N and (labels.min() < 0 or labels.max() >= K):
            raise ValueError(f"SoftmaxCrossEntropy: labels must lie in [0, {K}), got values "
                             f"from {labels.min()} to {labels.max()}")
        logp = log_softmax(logits)
        self.cache = (np.exp(logp), labels)
        return float(-logp[np.arange(N), labels].mean())

    def backward(self):
        if self.cache is None:
            raise RuntimeError("SoftmaxCrossEntropy.backward called before forward")
        probs, labels = self.cache
        N = probs.shape[0]
        dlogits = probs.copy()
        dlogits[np.arange(N), labels] -= 1
        dlogits /= N
        return dlogits
