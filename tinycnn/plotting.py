"""Pictures of training and of what the network sees. Every function returns a matplotlib
Figure and, given `path`, saves it as a PNG. Figures are built without pyplot, so this
works on machines with no display and never opens a window."""
import os

import numpy as np
from matplotlib.figure import Figure

from .fileutil import atomic_write
from .layers import Conv2D


def _save(fig, path):
    if path is not None:            # written aside, then renamed: a failure leaves no half a picture
        kind = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
        with atomic_write(path) as f:
            try:
                fig.savefig(f, format=kind, dpi=110, bbox_inches="tight")
            except RecursionError:  # (matplotlib's text parsers recurse; _literal keeps names out)
                raise ValueError(f"{os.fspath(path)}: matplotlib could not draw this figure's "
                                 "text (nested too deeply)") from None
    return fig


def _literal(text):
    """Text from a model or file (a class name) as matplotlib should draw it: literally. An
    even number of "$" would make it mathtext, whose parser fails, or recurses for minutes,
    on a crafted name ("$\\foo$", 45 nested "^{"); an escaped "\\$" is drawn as "$"."""
    return str(text).replace("$", r"\$")


def _namer(class_names):
    """Class index -> the text drawn for it: its name (drawn literally), or the index."""
    return (lambda c: _literal(class_names[c])) if class_names is not None else str


def _images(x):
    """(N, 1, H, W) or (N, H, W) -> (N, H, W) for display in grey; (N, 3, H, W) -> (N, H, W, 3)
    in colour, each image stretched to [0, 1] (imshow's range for colour; standardised
    inputs have negative values). Images with the channels last are refused: drawn as they
    are, they would be strips a pixel wide."""
    x = np.asarray(x)
    if x.ndim == 4 and x.shape[1] == 3:
        rgb = np.moveaxis(x, 1, -1).astype(np.float64)
        low = rgb.min(axis=(1, 2, 3), keepdims=True)
        span = rgb.max(axis=(1, 2, 3), keepdims=True) - low
        return (rgb - low) / np.where(span > 0, span, 1)
    if x.ndim == 4 and x.shape[1] != 1:
        raise ValueError(f"plotting: images must be (N, H, W), (N, 1, H, W) or (N, 3, H, W), got "
                         f"shape {x.shape}" + (" (channels last? np.moveaxis(x, -1, 1) puts them first)"
                                               if x.shape[-1] in (1, 3) else ""))
    return x[:, 0] if x.ndim == 4 else x


def _grid(n, cols):
    cols = min(cols, n)
    return int(np.ceil(n / cols)), cols


def plot_history(history, path=None):
    """Loss and accuracy per epoch, training against validation."""
    fig = Figure(figsize=(10, 4))
    epochs = history["epoch"]
    for ax, key, title in ((fig.add_subplot(1, 2, 1), "loss", "Loss"),
                           (fig.add_subplot(1, 2, 2), "acc", "Accuracy")):
        ax.plot(epochs, history[f"train_{key}"], "o-", label="train")
        if history.get(f"val_{key}"):
            ax.plot(epochs, history[f"val_{key}"], "s-", label="validation")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) < 15:
            ax.set_xticks(epochs)
    return _save(fig, path)


def plot_confusion_matrix(cm, class_names=None, path=None, title="Confusion matrix (test set)"):
    """Heatmap of counts, true class down, predicted class across, with every count written."""
    cm = np.asarray(cm)
    k = len(cm)
    names = [_namer(class_names)(i) for i in range(k)]
    fig = Figure(figsize=(1.0 + 0.6 * k, 0.6 + 0.6 * k))
    ax = fig.add_subplot()
    # log scale of colour so the few mistakes are visible next to the large diagonal
    im = ax.imshow(np.log1p(cm), cmap="Blues")
    threshold = np.log1p(cm).max() / 2
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if np.log1p(cm[i, j]) > threshold else "black")
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right" if max(map(len, names)) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax, fraction=0.046, label="log(1 + count)")
    return _save(fig, path)


def _image_grid(images, titles, colours, path, cols, suptitle):
    n = len(images)
    rows, cols = _grid(n, cols)
    # constrained layout keeps the suptitle above the images' own titles; the width floor
    # leaves the suptitle room when there are only one or two images
    fig = Figure(figsize=(max(1.6 * cols, 3.2), 1.8 * rows + 0.3), layout="constrained")
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(images[i], cmap="gray")
        ax.set_title(titles[i], fontsize=8, color=colours[i])
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_edgecolor(colours[i])
            spine.set_linewidth(3)
    fig.suptitle(suptitle)
    return _save(fig, path)


def plot_predictions(images, y_true, proba, class_names=None, n=25, cols=5, path=None, seed=0,
                     what="test images"):
    """A grid of images titled "pred 7 / true 7" with the confidence; correct ones framed
    green, wrong ones red. Shows `n` randomly chosen images; `what` they are goes in the
    title ("Predictions on random test images: 24/25 right")."""
    images, proba, y_true = _images(images), np.asarray(proba), np.asarray(y_true)
    name = _namer(class_names)
    pick = np.random.default_rng(seed).choice(len(images), min(n, len(images)), replace=False)
    pred = proba.argmax(axis=1)
    titles = [f"pred {name(pred[i])} / true {name(y_true[i])}\n{proba[i, pred[i]]:.1%}" for i in pick]
    colours = ["green" if pred[i] == y_true[i] else "red" for i in pick]
    right = sum(c == "green" for c in colours)
    return _image_grid(images[pick], titles, colours, path, cols,
                       f"Predictions on random {what}: {right}/{len(pick)} right")


def plot_mistakes(images, y_true, proba, class_names=None, n=16, cols=8, path=None):
    """The most confident mistakes: wrong predictions sorted by the probability given to
    the wrong answer."""
    from .metrics import misclassified
    images = _images(images)
    name = _namer(class_names)
    worst = misclassified(y_true, proba)[:n]
    if not worst:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no mistakes", ha="center")
        return _save(fig, path)
    titles = [f"pred {name(m['predicted'])} / true {name(m['true'])}\n{m['confidence']:.1%}" for m in worst]
    return _image_grid(images[[m["index"] for m in worst]], titles, ["red"] * len(worst), path,
                       cols, "Most confident mistakes")


def _conv_layers(model):
    return [(name, layer) for name, layer in zip(model.names, model.layers) if isinstance(layer, Conv2D)]


def plot_filters(model, path=None):
    """The first convolution layer's filters (input channel 0), each on its own colour scale
    (blue negative, red positive)."""
    convs = _conv_layers(model)
    if not convs:
        raise ValueError("plot_filters: the model has no Conv2D layer")
    name, conv = convs[0]
    w = conv.params["W"][:, 0]
    rows, cols = _grid(len(w), 8)
    fig = Figure(figsize=(1.3 * cols, 1.4 * rows))
    for i, f in enumerate(w):
        ax = fig.add_subplot(rows, cols, i + 1)
        lim = np.abs(f).max() or 1
        ax.imshow(f, cmap="bwr", vmin=-lim, vmax=lim)
        ax.set_title(f"#{i}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{name}: {len(w)} filters, {w.shape[1]}x{w.shape[2]}")
    return _save(fig, path)


def plot_feature_maps(model, image, max_maps=16, path=None):
    """One input and the (post-activation where there is one) feature maps it produces at
    every convolution layer, up to `max_maps` channels each. image: one example as the
    model takes it, (C, H, W) or (H, W); integer pixels (uint8) go through
    model.preprocess first, as they would for a prediction."""
    x = np.asarray(image)
    if x.dtype.kind in "iub":
        x = model.preprocess(x[None])
    x = np.asarray(x, dtype=model.dtype)
    x = x.reshape((1,) * (4 - x.ndim) + x.shape)
    from .explain import conv_feature_maps
    maps = []
    for conv in conv_feature_maps(model, x)[1]:
        name, fmap, i = conv["name"], conv["maps"][None], conv["index"]
        if i + 1 < len(model.layers) and type(model.layers[i + 1]).__name__ in ("ReLU", "LeakyReLU"):
            name, fmap = name + " + ReLU", model.layers[i + 1].forward(fmap)     # what the next layer sees
        maps.append((name, fmap))
    rows = 1 + len(maps)
    cols = max_maps
    fig = Figure(figsize=(1.1 * cols, 1.3 * rows))
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(_images(x)[0], cmap="gray")
    ax.set_title("input", fontsize=8)
    ax.axis("off")
    for r, (name, fmap) in enumerate(maps, start=1):
        for c in range(min(max_maps, fmap.shape[1])):
            ax = fig.add_subplot(rows, cols, r * cols + c + 1)
            ax.imshow(fmap[0, c], cmap="viridis")
            ax.axis("off")
            if c == 0:
                shown = "" if fmap.shape[1] <= max_maps else f" (first {max_maps} of {fmap.shape[1]} maps)"
                ax.set_title(name + shown, fontsize=8, loc="left")
    fig.suptitle("Feature maps of one image (each map on its own colour scale: yellow is its "
                 "largest value, dark blue its smallest)")
    return _save(fig, path)


def plot_samples(images, labels, class_names=None, per_class=8, path=None, seed=0):
    """A few random images of every class, one row per class."""
    images, labels = _images(images), np.asarray(labels)
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(1.1 * per_class + 1, 1.1 * len(classes)))
    for r, c in enumerate(classes):
        idx = rng.choice(np.flatnonzero(labels == c), min(per_class, int((labels == c).sum())), replace=False)
        for j, i in enumerate(idx):
            ax = fig.add_subplot(len(classes), per_class, r * per_class + j + 1)
            ax.imshow(images[i], cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(_namer(class_names)(c),
                              rotation=0, ha="right", va="center")
    fig.suptitle("Sample images per class")
    return _save(fig, path)


def _drawable(picture):
    """A picture as an array imshow draws as it looks: imshow takes grey (any number type),
    RGB and RGBA arrays, so PIL's grey+alpha, palette, CMYK, YCbCr, ... are converted first."""
    from PIL import Image
    if not isinstance(picture, Image.Image) or picture.mode in ("1", "L", "I", "F", "RGB", "RGBA") \
            or picture.mode.startswith("I;"):
        return np.asarray(picture)
    see_through = "A" in picture.mode or "transparency" in picture.info
    return np.asarray(picture.convert("RGBA" if see_through else "RGB"))


def plot_prediction(original, seen, proba, class_names=None, path=None, saliency=None):
    """One prediction explained: the original picture, the 28x28 the model saw, and the
    probability of every class. saliency: the gradient of the predicted class's logit
    w.r.t. the model's input ((C, H, W) or (H, W), tinycnn.saliency), drawn as |S| in one
    more panel: the pixels that move the prediction most."""
    from .preprocess import open_image
    names = [_namer(class_names)(i) for i in range(len(proba))]
    panels = 3 if saliency is None else 4
    fig = Figure(figsize=(10 if saliency is None else 13, 3.2))
    ax = fig.add_subplot(1, panels, 1)
    shown = open_image(original) if isinstance(original, (str, bytes)) or hasattr(original, "__fspath__") else original
    ax.imshow(_drawable(shown), cmap="gray")
    ax.set_title("original")
    ax.axis("off")
    ax = fig.add_subplot(1, panels, 2)
    ax.imshow(seen, cmap="gray")
    ax.set_title("what the model saw (28x28)")
    ax.axis("off")
    if saliency is not None:
        ax = fig.add_subplot(1, panels, 3)
        _draw_saliency(ax, saliency, seen)
        ax.set_title(f"saliency of {names[int(np.argmax(proba))]}\n|d score / d pixel|")
        ax.axis("off")
    ax = fig.add_subplot(1, panels, panels)
    best = int(np.argmax(proba))
    ax.bar(range(len(proba)), proba, color=["tab:green" if i == best else "tab:gray" for i in range(len(proba))])
    ax.set_xticks(range(len(proba)), names)
    ax.set_ylim(0, 1)
    ax.set_title(f"prediction: {names[best]} ({proba[best]:.1%})")
    return _save(fig, path)


def _draw_saliency(ax, s, image, signed=False):
    """One saliency map S (H, W), or (C, H, W) shown as the channel of largest |S| at each
    pixel, scaled to its own maximum: |S| in inferno, or S in blue-white-red (signed), with
    the outline of the image's strokes on top so the map can be read against the digit."""
    s = np.asarray(s, dtype=np.float64)
    if s.ndim == 3:                                            # (C, H, W) -> (H, W)
        s = np.take_along_axis(s, np.abs(s).argmax(axis=0)[None], axis=0)[0]
    s = s / max(np.abs(s).max(), 1e-30)                       # now in [-1, 1]
    if signed:
        ax.imshow(s, cmap="bwr", vmin=-1, vmax=1)
    else:
        ax.imshow(np.abs(s), cmap="inferno", vmin=0, vmax=1)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:                                        # colour: its brightness
        image = image.mean(axis=-1)
    middle = (image.min() + image.max()) / 2
    # The strokes' edge, half-way, for ink on plain ground (a minority of the pixels bright
    # or dark): on a photo or noise the contour would only clutter the map.
    if image.max() > image.min() and min((image > middle).mean(), (image < middle).mean()) < 0.35:
        ax.contour(image, levels=[middle], colors="black" if signed else "cyan",
                   linewidths=0.6, alpha=0.7)


def plot_saliency(images, saliency, proba, class_names=None, y_true=None, path=None):
    """Where each prediction looks: one column per image, with the image, |S| and S itself,
    S = d z_pred / d x (tinycnn.saliency; for several channels the largest |S| over them,
    with its sign). The digit's outline is drawn over both maps. |S| says how strongly a
    pixel moves the predicted class's score; the sign says which way: red, the score rises
    if the pixel gets brighter; blue, it falls. Each map is scaled to its own maximum, so
    the maps compare places within an image, not images. Titles give the predicted class
    and its probability, and the true class, in red, when the prediction is wrong."""
    images, proba = _images(images), np.asarray(proba)
    name = _namer(class_names)
    pred = proba.argmax(axis=1)
    n = len(images)
    fig = Figure(figsize=(1.5 * n + 0.6, 5.4))
    rows = ("input", "|S|", "S (red +, blue -)")
    for i in range(n):
        axes = [fig.add_subplot(3, n, r * n + i + 1) for r in range(3)]
        axes[0].imshow(images[i], cmap="gray")
        _draw_saliency(axes[1], saliency[i], images[i])
        _draw_saliency(axes[2], saliency[i], images[i], signed=True)
        wrong = y_true is not None and pred[i] != y_true[i]
        title = f"pred {name(pred[i])} ({proba[i, pred[i]]:.1%})"
        if y_true is not None:
            title += f"\ntrue {name(y_true[i])}"
        axes[0].set_title(title, fontsize=8, color="red" if wrong else "black")
        for r, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(rows[r], fontsize=8)
    fig.suptitle("Saliency S = d(score of the predicted class) / d(input pixel), "
                 "each map scaled to its own maximum", fontsize=9)
    fig.subplots_adjust(top=0.86, hspace=0.08, wspace=0.08)
    return _save(fig, path)


def plot_gradient_norms(history, path=None):
    """The size of each layer's gradient during training (tinycnn.train.gradient_norms), on
    a log scale: thin lines at every sampled step, dots for each epoch's mean (drawn at the
    middle of the epoch)."""
    means, steps = history.get("grad_norm") or {}, history.get("grad_norm_steps") or {}
    if not means:
        raise ValueError("plot_gradient_norms: history has no 'grad_norm' (train with tinycnn.fit)")
    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    for k, (layer, values) in enumerate(means.items()):
        colour = f"C{k % 10}"
        if steps.get(layer):
            ax.plot(steps["epoch"], steps[layer], "-", color=colour, lw=0.8, alpha=0.45)
        done = len(history.get("epoch") or values)            # the means are of the last epochs
        epochs = np.arange(done - len(values), done) + 0.5    # (all, unless resumed from an old checkpoint)
        ax.plot(epochs, values, "o-", color=colour, lw=1.8, label=layer)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="||gradient||  (L2, all the layer's parameters)",
           title="Gradient size per layer: thin = sampled steps, dots = epoch means")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
