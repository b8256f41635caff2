"""Turning a picture of a digit into what an MNIST model expects.

MNIST digits are white ink on black, scaled so the digit fits a 20x20 box (aspect ratio
kept), then placed in a 28x28 frame so that their centre of mass is at the frame's centre.
A photo or a drawing is usually the opposite: dark ink on light paper, large, off-centre,
with a border and noise. `to_mnist` undoes each difference, in this order:

    grayscale (alpha composited on white, or on black under light ink) -> invert if the background is light
    -> (a 28x28 picture already in MNIST form is returned as it is)
    -> remove background noise (Otsu threshold) -> crop to the ink
    -> resize the longer side to 20 px (antialiased) -> centre of mass to the centre
"""
import os
import stat
import warnings

import numpy as np
from PIL import Image, ImageOps

FRAME, BOX = 28, 20
# Files above MAX_PIXELS are refused before they are decoded, except JPEGs, which libjpeg
# decodes at 1/2, 1/4 or 1/8 scale (Image.draft) to fit. A decoded 40-megapixel RGBA image
# is 160 MB. Every image is then box-reduced (Image.reduce) to at most WORK_SIDE pixels on
# its longer side, plenty for a 20-pixel digit, so the float maths after it stays small.
MAX_PIXELS = 40_000_000
WORK_SIDE = 2048
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")     # 16/32-bit integer and float
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)        # grey from RGB, as PIL's "L"
# The formats Pillow may decode: raster images with decoders inside Pillow. Not EPS/PS, which
# Pillow hands to Ghostscript, an outside program that runs the file (a server's client
# could run code or loop forever), nor the rest of Pillow's long list.
# (A phone's multi-picture JPEG, MPO, opens through the JPEG decoder.)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "AVIF", "PPM")


def open_image(path):
    """Decode an image file with bounded memory: refuse what is not a regular file (a FIFO
    would block forever) and what is too large (see MAX_PIXELS), decode JPEGs at reduced
    scale, shrink to WORK_SIDE and apply the EXIF orientation. Any failure is a ValueError
    naming the file."""
    path = os.fspath(path)
    try:   # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ValueError(f"{path}: cannot read this image ({err.strerror or err})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path}: not a regular file (a folder, pipe or device)")
    with open(fd, "rb") as f:
        return decode_image(f, path)


def decode_image(f, name):
    """Decode an image from the binary file object f with bounded memory: refuse what is too
    large (see MAX_PIXELS), decode JPEGs at reduced scale, shrink to WORK_SIDE and apply the
    EXIF orientation. Any failure is a ValueError starting with `name` (a path, or e.g.
    "request body" for `tinycnn serve`)."""
    if not f.read(1):
        raise ValueError(f"{name}: empty file (0 bytes), not an image")
    f.seek(0)
    try:
        with warnings.catch_warnings():      # the pixel limit below is the check
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(f, formats=IMAGE_FORMATS)
            w, h = image.size                # from the header: nothing decoded yet
            if w * h > MAX_PIXELS and image.format in ("JPEG", "MPO"):
                scale = max(w, h) / WORK_SIDE
                image.draft(None, (max(1, int(w / scale)), max(1, int(h / scale))))
            if image.size[0] * image.size[1] > MAX_PIXELS:
                raise ValueError(f"{w}x{h} pixels is above the limit of {MAX_PIXELS:,} "
                                 "(tinycnn.preprocess.MAX_PIXELS); make it smaller first")
            image.load()
    except Image.UnidentifiedImageError:     # its own message would show the file object's repr
        raise ValueError(f"{name}: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)") from None
    # A decoder fed a hostile file can raise almost anything (OSError, SyntaxError,
    # struct.error, DecompressionBombError...): each is this file's fault, not the caller's.
    except Exception as err:      # noqa: BLE001
        raise ValueError(f"{name}: cannot read this image ({err})") from None
    return _upright(_shrink(image), name)


def _upright(image, name):
    """`image` turned as its EXIF orientation says (a phone stores the sensor's pixels and the
    turn to view them). Pillow parses EXIF only here: a damaged block is a ValueError naming
    `name`, and a merely odd one is read without Pillow's warnings on stderr."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)       # "Corrupt EXIF data", ...
            return ImageOps.exif_transpose(image)
    except Exception as err:      # noqa: BLE001  (SyntaxError, struct.error, ... as above)
        raise ValueError(f"{name}: cannot read this image (damaged EXIF block: {err})") from None


def _shrink(image):
    """Box-average `image` by a whole factor so its longer side is at most WORK_SIDE."""
    factor = -(-max(image.size) // WORK_SIDE)
    if factor <= 1:
        return image
    if image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):      # modes reduce() handles
        image = image.convert("I" if image.mode in WIDE_MODES else
                              "RGBA" if image.mode in ("P", "PA", "La", "RGBa") else "L")
    return image.reduce(factor)


def _stretch(a, what):
    """Scale values by their real range: (a - min) / (max - min). 16-bit scans often hold 10-
    to 14-bit data, and float images any range, so nominal ranges would misjudge them."""
    a = _finite(np.asarray(a, dtype=np.float64), what)    # (max - min of float32s can overflow it)
    lo, hi = float(a.min()), float(a.max())
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)


def _unit_scale(a, what):
    """Pixel values to [0, 1] (before clipping): 0-255 for uint8, and for any values up to
    255 above 1 (floats on the 0-255 scale); 0-1 floats as they are; values above 255
    (16-bit scans, float images of any range) by their real range (_stretch)."""
    top = float(a.max())
    if top > 255 and (a.dtype.kind == "f" or a.dtype.itemsize > 1):
        return _stretch(a, what)
    return a.astype(np.float32) / np.float32(255.0 if a.dtype.kind in "ui" or top > 1 else 1.0)


def _finite(a, what):
    """`a`, refused if any value is NaN or infinite (it would pass for ink or for paper)."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"to_mnist: {what} holds NaN or infinite values")
    return a


def _grayscale(image):
    """Any image -> float32 (H, W) in [0, 1]."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise ValueError(f"to_mnist: the image is empty ({image.size[0]}x{image.size[1]} pixels)")
        image = _upright(_shrink(image), "to_mnist")        # no-ops after open_image
        if image.mode in WIDE_MODES:
            return _stretch(image, f"the {image.mode} image")
        try:
            if not (image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)):
                return np.asarray(image.convert("L"), dtype=np.float32) / 255
            image = np.asarray(image.convert("RGBA"))        # composited below, as an array's
        except ValueError:                                   # Pillow: "conversion from LAB to RGB not supported"
            raise ValueError(f"to_mnist: colour mode {image.mode} is not supported; save the image as "
                             "RGB or greyscale") from None
    a = np.asarray(image)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"to_mnist: expected an array of numbers, got dtype {a.dtype}")
    if a.size == 0:
        raise ValueError(f"to_mnist: the image is empty (shape {a.shape})")
    a = _finite(a, "the array")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb, alpha = a[..., :3], (a[..., 3:4] if a.shape[2] == 4 else None)
        rgb = _unit_scale(rgb, "the array's colours")
        if alpha is not None:      # opacity: 0-1 floats, 8-bit or 16-bit values, else its own top
            top = float(alpha.max())
            integers = alpha.dtype.kind in "ui"
            full = (255.0 if top <= 255 else 65535.0 if top <= 65535 else top) if integers or top > 1 else 1.0
            rgb = _on_background(rgb, alpha.astype(np.float32) / np.float32(full))
        a = rgb @ LUMA
    elif a.ndim == 2:
        a = _unit_scale(a, "the array")
    else:
        raise ValueError(f"to_mnist: expected a (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    return np.clip(a, 0, 1)


def _on_background(rgb, alpha):
    """RGB (H, W, 3) with its alpha (H, W, 1), both in [0, 1], composited on plain paper:
    white, unless the sheet is mostly transparent and what is on it mostly light (white ink
    on a transparent sheet, as a drawing app's dark mode exports it), then black, so that the
    ink keeps its contrast. (A white card with a transparent margin stays on white: its
    visible part is light, but it is not mostly transparent.)"""
    weight = float(alpha.sum())
    luma = rgb @ LUMA
    light_ink = 0 < weight < 0.5 * alpha.size and float((luma[..., None] * alpha).sum()) / weight > 0.5
    return rgb * alpha + (0.0 if light_ink else 1.0) * (1 - alpha)


def otsu_threshold(values, bins=256):
    """The threshold that best separates values into two groups (maximal between-class
    variance), for values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0, 1))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def _already_mnist(g):
    """A 28x28 picture whose ink fits the 20x20 box and whose centre of mass is within a
    pixel of MNIST's (row 14, column 14): it is in MNIST form already (an MNIST digit saved
    as a file, say), and re-normalising it would only blur it."""
    if g.shape != (FRAME, FRAME):
        return False
    inked_rows, inked_cols = np.flatnonzero((g > 0.05).any(axis=1)), np.flatnonzero((g > 0.05).any(axis=0))
    if len(inked_rows) == 0 or max(inked_rows[-1] - inked_rows[0], inked_cols[-1] - inked_cols[0]) + 1 > BOX:
        return False
    ys, xs = np.indices(g.shape)
    total = g.sum()
    return abs((ys * g).sum() / total - 14) <= 1 and abs((xs * g).sum() / total - 14) <= 1


# A reading is flagged (read_digit's note) when the digit's longer side is under BOX pixels
# in the picture (enlarged: the detail was never there), or when its ink is a solid blob: it
# covers at least BLOB_FILL of its bounding box, whose sides differ by at most BLOB_ASPECT
# (a dot: drawn discs of 10-80 px measured 75-81%). Of MNIST's 60,000 training digits, 8
# count as blobs: 0s and 8s written so boldly that their holes almost close.
BLOB_FILL, BLOB_ASPECT = 0.72, 1.3


def to_mnist(image):
    """A digit image (PIL image, path or array; grayscale, RGB or RGBA; any size; uint8 or
    float) -> (28, 28) float32 in [0, 1], bright ink on black, MNIST-style. Raises ValueError
    for an image with no visible ink."""
    return read_digit(image)[0]


def read_digit(image):
    """(to_mnist(image), note): note is None, or says why the reading deserves less trust:
    the digit is smaller than the 20x20 box MNIST's digits fill (it was enlarged), or its
    ink is a solid blob (a dot), not strokes. A model answers either way."""
    g = _grayscale(image)
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    if np.median(border) > 0.5:                 # light paper, dark ink: make the ink bright
        g = 1 - g
    if g.max() - g.min() < 0.1:
        raise ValueError("to_mnist: the image looks blank (its darkest and lightest parts differ by "
                         f"{g.max() - g.min():.0%} of the full range, under 10%; if a faint digit is "
                         "there, raise its contrast)")
    if _already_mnist(g):
        return g.astype(np.float32), None
    t = otsu_threshold(g)
    ink = np.where(g > t, g, 0)                 # background noise below the threshold -> 0
    if (ink > 0).mean() < 1e-4 or (ink > 0).sum() < 4:
        raise ValueError(f"to_mnist: the image looks blank (ink on {(ink > 0).mean():.3%} of it, under "
                         "0.01%; if the digit is small in a large picture, crop closer to it)")
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    note = _reading_note(ink)
    ink = ink / ink.max()                       # strongest ink -> 1, as in MNIST
    h, w = ink.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(ink.astype(np.float32), mode="F").resize(size, Image.LANCZOS))
    small = np.clip(small, 0, None)
    small /= small.max()
    # Place it so the centre of mass lands on the frame's centre (pixel coordinate 13.5),
    # first to the nearest pixel, then the rest by sub-pixel (bilinear) shift.
    ys, xs = np.indices(small.shape)
    total = small.sum()
    cy, cx = (ys * small).sum() / total, (xs * small).sum() / total
    frame = np.zeros((FRAME, FRAME), np.float32)
    top = int(np.clip(round((FRAME - 1) / 2 - cy), 0, FRAME - small.shape[0]))
    left = int(np.clip(round((FRAME - 1) / 2 - cx), 0, FRAME - small.shape[1]))
    frame[top:top + small.shape[0], left:left + small.shape[1]] = small
    from scipy.ndimage import shift
    dy, dx = (FRAME - 1) / 2 - (top + cy), (FRAME - 1) / 2 - (left + cx)
    frame = shift(frame, (dy, dx), order=1, mode="constant")
    frame = np.clip(frame, 0, None)
    return (frame / frame.max()).astype(np.float32), note


def _reading_note(ink):
    """read_digit's note for the ink cropped to its bounding box (zero where there is none)."""
    h, w = ink.shape
    notes = []
    if max(h, w) < BOX:
        notes.append(f"the digit is {w}x{h} pixels, enlarged to the {BOX}x{BOX} box MNIST's digits "
                     "fill: too small to read reliably")
    if (ink > 0).mean() >= BLOB_FILL and max(h, w) <= BLOB_ASPECT * min(h, w):
        notes.append(f"its ink is one solid blob ({(ink > 0).mean():.0%} of its {w}x{h} box), more a "
                     "dot than a digit's strokes")
    return "; ".join(notes) or None
