"""What a model does with one image, layer by layer: the numbers behind `tinycnn serve`'s page.

    look_inside(model, seen)  seen: (28, 28) float in [0, 1], the picture after to_mnist
        -> probabilities, predicted class, every convolution's feature maps, saliency maps

Feature maps are each Conv2D layer's output before any activation: one map per filter, the
filter's response (a weighted sum of the pixels under it, plus its bias) at every position.
Positive where the image looks like the filter's pattern, negative where it looks like its
opposite; the ReLU that follows keeps only the positive part.
"""
import numpy as np

from .functional import softmax
from .layers import Conv2D
from .saliency import saliency


def conv_feature_maps(model, x):
    """Run one model input x (1, C, H, W) through the layers one at a time (not fused, eval
    mode), keeping each Conv2D layer's output.

    Returns (logits (1, K), layers): layers is a list of dicts with name, index (the layer's
    position in the model), kernel_size and maps (F, OH, OW), one per Conv2D layer in order.
    """
    layers, h = [], np.asarray(x, dtype=model.dtype)
    for index, (name, layer) in enumerate(zip(model.names, model.layers)):
        h = layer.forward(h, training=False)
        if isinstance(layer, Conv2D):
            if layer.activation == "relu":
                name += " + ReLU"        # the layer applies its ReLU itself: no negative values left
            layers.append({"name": name, "index": index, "kernel_size": list(layer.kernel_size),
                           "maps": h[0].copy()})
    return h, layers


def look_inside(model, seen):
    """Everything the page shows for one picture already in MNIST form (see to_mnist).

    seen: (H, W) float in [0, 1]. Returns a dict:
        proba      (K,) float32 class probabilities
        predicted  int, the most probable class
        layers     each convolution's feature maps (see conv_feature_maps)
        saliency   (H, W) float32, d logit[predicted] / d pixel (summed over input channels):
                   positive where more ink would raise the predicted class's score
        ink_times_gradient  (H, W) float32, seen * saliency: to first order, how much each
                   pixel's ink moved the score from what a blank picture gets (up > 0, down < 0)
    Not thread-safe (layers keep caches): callers share a model under a lock.
    """
    x = model.preprocess(np.asarray(seen, dtype=np.float32)[None])        # (1, 1, H, W)
    logits, layers = conv_feature_maps(model, x)                        # (1, K)
    proba = softmax(logits)[0]
    predicted = int(np.argmax(proba))
    grad, _ = saliency(model, x, target=[predicted])                    # (1, 1, H, W)
    sal = grad[0].sum(axis=0)                                            # (H, W)
    return {"proba": proba.astype(np.float32), "predicted": predicted, "layers": layers,
            "saliency": sal, "ink_times_gradient": np.asarray(seen, np.float32) * sal}
