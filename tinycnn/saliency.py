"""Saliency maps: which input pixels push a class's score up.

For an input x and a class k, the saliency map is the gradient of the class's score (the
logit z_k, before the softmax) with respect to the input:

    S = d z_k / d x        same shape as x, (N, C, H, W)

It is one backward pass of the model, started from dz = onehot(k) instead of a loss
gradient: every layer turns dz into the gradient of its own input, exactly as in training,
and the first layer's input gradient is S. Positive entries are pixels that, made brighter,
raise the score; the picture usually shown is |S| (or max over channels of |S|).
The logit rather than the probability is used because d p_k / d x also moves with the other
classes' scores (p_k = softmax(z)_k), which blurs what the map says about class k.
"""
import numpy as np


def saliency(model, x, target=None):
    """Gradient of each image's class score w.r.t. the image, in eval mode.

    x: model input (N, *input_shape), floating point (after model.preprocess).
    target: class per image (N,) ints, or None for the class the model predicts.
    Returns (saliency (N, *input_shape) in the model's dtype (float32; float64 after
    model.to(np.float64), as the gradient checks use), target (N,) ints).

    Eval mode: dropout passes everything, batch norm uses its running statistics, so the
    map is deterministic and describes the model that makes predictions. The backward pass
    overwrites the layers' `grads` (as a training step would); nothing else changes.
    """
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"saliency: x must be a non-empty batch (N, ...), got shape {x.shape}")
    logits = model.forward(x, training=False)                  # (N, K)
    if target is None:
        target = logits.argmax(axis=1)
    target = np.asarray(target).reshape(-1)
    if (target.dtype.kind not in "iu" or target.shape != (len(x),)
            or target.min() < 0 or target.max() >= logits.shape[1]):
        raise ValueError(f"saliency: target must hold {len(x)} class indices in "
                         f"[0, {logits.shape[1]}), got {target.tolist()}")
    target = target.astype(np.int64)
    dlogits = np.zeros_like(logits)                            # d z_k / d z = onehot(k)
    dlogits[np.arange(len(x)), target] = 1
    dx = model.backward(dlogits, need_dx=True)                 # (N, *input_shape)
    return dx, target
