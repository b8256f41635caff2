"""Turning a picture of a digit into what an MNIST model expects.

MNIST digits are white ink on black, scaled so the digit fits a 20x20 box (aspect ratio
kept), then placed in a 28x28 frame so that their centre of mass is at the frame's centre.
A photo or a drawing is usually the opposite: dark ink on light paper, large, off-centre,
with a border and noise, and a phone photo adds a shadow, uneven light and the table around
the sheet. `to_mnist` undoes each difference, in this order:

    grayscale (alpha composited on white, or on black under light ink) -> which side is paper
    -> (a 28x28 picture already in MNIST form is returned as it is)
    -> each pixel's darkness against the paper around it (shadows and light divide out)
    -> ink = clearly darker (Otsu threshold); its pieces that are not the digit are left out
       (the table at the edges, ruled lines, a grid, specks) -> crop to the ink
    -> resize the longer side to 20 px (antialiased) -> centre of mass to the centre
"""
import mmap
import os
import re
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
            _check_decoding_work(image, f)
            image.load()
    except _TooMuchWork as err:
        raise ValueError(f"{name}: {err}") from None
    except Image.UnidentifiedImageError:     # its own message would show the file object's repr
        raise ValueError(f"{name}: not an image file (PNG, JPEG, GIF, BMP, TIFF, WebP, AVIF or PPM)") from None
    # A decoder fed a hostile file can raise almost anything (OSError, SyntaxError,
    # struct.error, DecompressionBombError...): each is this file's fault, not the caller's.
    except Exception as err:      # noqa: BLE001
        raise ValueError(f"{name}: cannot read this image ({err})") from None
    return _upright(_shrink(image), name)


# Work a decoder would do beyond what the pixel count says. A progressive JPEG decodes
# in scans, each a pass over every block of the picture: libjpeg writes 6-10, and any number
# may follow (a 200 KB file with 1,000 repeats of one scan over 36 megapixels took 33 s).
# A TIFF's tiles are allocated whole, as declared: a 100x100 TIFF of 254 bytes declaring a
# 46336x46336 tile made libtiff allocate 2.1 GB before it failed.
MAX_JPEG_SCANS = 100
MAX_JPEG_SEGMENTS = 10_000     # (each is a step of the scan count; a photo has a few dozen)
MAX_TILE_PIXELS = 1 << 22        # 2048 x 2048 (TIFF writers use 16 x 16 to 1024 x 1024)


class _TooMuchWork(ValueError):
    """An image refused for the work its decoding would take (its message names the file)."""


def _check_decoding_work(image, f):
    """Refuse a JPEG with more than MAX_JPEG_SCANS scans (or MAX_JPEG_SEGMENTS segments) and a
    TIFF whose tiles are larger than the picture and than MAX_TILE_PIXELS. Reads the file's
    bytes, not its pixels."""
    if image.format in ("JPEG", "MPO"):
        scans, segments = _jpeg_work(f)
        if scans > MAX_JPEG_SCANS:
            raise _TooMuchWork(f"a JPEG of more than {MAX_JPEG_SCANS} scans, each a pass over the whole picture "
                               "(cameras write 1-10): refused")
        if segments > MAX_JPEG_SEGMENTS:
            raise _TooMuchWork(f"a JPEG of more than {MAX_JPEG_SEGMENTS:,} segments (cameras write a few "
                               "dozen): refused")
    if image.format == "TIFF":
        tile = image.tag_v2.get(322, 0) * image.tag_v2.get(323, 0)     # TileWidth x TileLength
        if tile > max(image.size[0] * image.size[1], MAX_TILE_PIXELS):
            raise _TooMuchWork(f"its TIFF tiles are {image.tag_v2[322]}x{image.tag_v2[323]} pixels, larger than "
                               f"the {image.size[0]}x{image.size[1]} picture: refused")


# A JPEG marker: 0xFF, then a byte that is not 0x00 (a stuffed 0xFF inside entropy-coded
# data), a restart number (0xD0-0xD7, also inside it) or 0xFF (fill before a marker).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_work(f):
    """(scans, segments): how many scans (SOS segments) and segments the JPEG in f has before
    its end (EOI), each counted up to one past its limit (MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS).
    The next marker is found by a regular expression (in C: 8 MB of stuffed bytes or of
    garbage cost milliseconds, where a loop in Python took 1.5 s), and a segment is skipped
    by its length, so an EXIF thumbnail inside APP1 is not counted, nor anything after EOI
    (a phone's motion photo appends a video)."""
    f.seek(0)
    try:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError):       # (io.BytesIO: a request's body)
        data = f.read()
    try:
        i, scans, segments = 2, 0, 0
        while scans <= MAX_JPEG_SCANS and segments <= MAX_JPEG_SEGMENTS:
            found = _JPEG_MARKER.search(data, i)
            if found is None or data[found.start() + 1] == 0xD9:     # the end, or EOI
                break
            i, marker = found.start() + 2, data[found.start() + 1]
            segments += 1
            if marker not in (0x01, 0xD8) and i + 2 <= len(data):    # (TEM and SOI have no length)
                i += (data[i] << 8) | data[i + 1]
            scans += marker == 0xDA               # (its entropy-coded data: skipped by the search)
        return scans, segments
    finally:
        if isinstance(data, mmap.mmap):
            data.close()


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
        try:
            image = image.convert("I" if image.mode in WIDE_MODES else
                                  "RGBA" if image.mode in ("P", "PA", "La", "RGBa") else "L")
        except ValueError:                                           # as _grayscale says it
            raise ValueError(_unsupported_mode(image.mode)) from None
    return image.reduce(factor)


def _unsupported_mode(mode):
    return f"to_mnist: colour mode {mode} is not supported; save the image as RGB or greyscale"


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
            raise ValueError(_unsupported_mode(image.mode)) from None
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
# Finding the digit in a photo (read_digit, _darkness, _the_digit):
LIGHT_WINDOW = 0.4     # the paper's brightness is estimated over windows of this much of the longer side
MIN_DARKNESS = 0.25    # ink is at least this much darker than its paper...
FAINT = 0.1            # ...or, when nothing is, at least this much (read with a note: faint ink)
EDGE_BAND = 0.1        # a piece mostly within this much of the edges hugs them (a table, a shadow)
NEAR = 0.02            # a hugging piece this close (of the longer side) to the digit is part of it
MAX_HOLES = 4          # a piece spanning the picture with more holes is a grid (a digit has at most 2)
MAX_MESHES = 4         # spanning pieces whose holes are counted (the largest; counting labels a whole box)
SPECK = 0.05           # a piece under this much of the largest one, away from it, is dirt
MAX_PIECES = 20_000    # separate marks a picture may have (a noisy photo: a few thousand)


def to_mnist(image):
    """A digit image (PIL image, path or array; grayscale, RGB or RGBA; any size; uint8 or
    float) -> (28, 28) float32 in [0, 1], bright ink on black, MNIST-style. Raises ValueError
    for an image with no visible ink."""
    return read_digit(image)[0]


def read_digit(image):
    """(to_mnist(image), note): note is None, or says why the reading deserves less trust:
    the digit is smaller than the 20x20 box MNIST's digits fill (it was enlarged), its ink
    is a solid blob (a dot), not strokes, it looks like several digits side by side, the
    ink is faint, or dark parts at the picture's edges were left out. A model answers
    either way."""
    g = _grayscale(image)
    if g.max() - g.min() < 0.1:
        raise ValueError("to_mnist: the image looks blank (its darkest and lightest parts differ by "
                         f"{g.max() - g.min():.0%} of the full range, under 10%; if a faint digit is "
                         "there, raise its contrast)")
    paper_is_light = _paper_is_light(g)
    bright_ink = 1 - g if paper_is_light else g
    if _already_mnist(bright_ink):
        return bright_ink.astype(np.float32), None
    darkness = _darkness(g if paper_is_light else 1 - g)      # (paper light, ink dark)
    marks, notes = _the_digit(darkness)
    rows, cols = np.flatnonzero(marks.any(axis=1)), np.flatnonzero(marks.any(axis=0))
    ink = np.where(marks, darkness, 0)[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    notes = _reading_notes(ink) + notes
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
    return (frame / frame.max()).astype(np.float32), "; ".join(notes) or None


def _paper_is_light(g):
    """Whether g (grey, 1 = white) is dark ink on light paper. The picture's border is
    usually paper; but a photo's border may be half table, so when the border is mixed
    (under 80% of it on one side of its own Otsu threshold) the whole picture's median
    decides, paper being most of a picture."""
    border = np.concatenate([g[0], g[-1], g[:, 0], g[:, -1]])
    light = float((border > otsu_threshold(border)).mean()) if np.ptp(border) >= 0.1 else 1.0
    if light >= 0.8 or light <= 0.2:
        return bool(np.median(border) > 0.5)
    return bool(np.median(g) > 0.5)


def _darkness(p):
    """How much darker each pixel of p (light paper, dark ink) is than the paper around it,
    as a fraction, in [0, 1]: 1 - p / paper. The paper's brightness is p's morphological
    closing over a window of LIGHT_WINDOW of the picture's longer side (the brightest
    nearby, then the darkest of those): strokes narrower than the window disappear from it,
    while a shadow, a gradient of light or a table at the edge, wider than the window,
    stays in it, and so divides out."""
    from scipy.ndimage import grey_closing
    k = max(3, round(LIGHT_WINDOW * max(p.shape)))
    paper = grey_closing(p, size=(k, k), mode="nearest")
    return np.clip(1 - p / np.maximum(paper, 1 / 255), 0, 1).astype(np.float32)


def _the_digit(darkness, t=None):
    """(marks, notes): which pixels are the digit's ink, and notes on what was left out.
    Ink is what is clearly darker than its paper (Otsu's threshold on the darkness, at least
    MIN_DARKNESS); of its connected pieces, these are not the digit:
      - a line across the whole picture (ruled paper) or a mesh (squared paper: a digit has
        at most 2 holes); a digit written on them, darker than they are, joins them, so
        their own pixels are thresholded again (Otsu among them) to find it;
      - a piece that hugs the picture's edges (most of it within EDGE_BAND of them: a table
        around the sheet, a dark corner), when a piece away from the edges remains;
      - a speck: under SPECK of the largest piece, away from the digit.
    Raises ValueError when nothing is left."""
    from scipy import ndimage
    top = float(darkness.max())
    notes = []
    if t is None:
        floor = MIN_DARKNESS if top >= MIN_DARKNESS else FAINT
        t = max(otsu_threshold(darkness / top) * top, floor) if top > 0 else 1.0
        if floor == FAINT and top >= FAINT:
            notes.append(f"the ink is faint (at most {top:.0%} darker than the paper around it)")
    labels, n = ndimage.label(darkness > t, structure=np.ones((3, 3)))
    blank = ("to_mnist: the image looks blank (no mark is {}; lines, shading and dark edges "
             "of the picture are not read as a digit; if a faint digit is there, raise its contrast)")
    if n == 0:
        raise ValueError(blank.format(f"more than {FAINT:.0%} darker than the paper around it"))
    if n > MAX_PIECES:            # (and each piece costs a step below: 10 s for a page of dots)
        raise ValueError(f"to_mnist: the image looks like noise or a texture ({n:,} separate marks, "
                         f"above {MAX_PIECES:,}), not a digit")
    H, W = darkness.shape
    index = np.arange(1, n + 1)
    area = ndimage.sum_labels(np.ones_like(darkness), labels, index)
    boxes = ndimage.find_objects(labels)
    band = np.zeros((H, W), bool)
    bh, bw = max(1, round(EDGE_BAND * H)), max(1, round(EDGE_BAND * W))
    band[:bh], band[-bh:], band[:, :bw], band[:, -bw:] = True, True, True, True
    in_band = ndimage.sum_labels(band, labels, index) / area
    edge = np.zeros(n + 1, bool)
    edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    edge = edge[1:]
    keep = np.ones(n, bool)
    spanning = []
    for i, box in enumerate(boxes):
        h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
        keep[i] = not (edge[i] and w >= 0.9 * W and h <= 0.1 * H)      # a ruled line, edge to edge
        if w >= 0.9 * W and h >= 0.9 * H:
            spanning.append(i)
    # A grid is one piece spanning the picture with many holes. Counting holes labels the
    # piece's whole box, so only the largest few are looked at (136 diagonal lines across
    # a 2048x2048 page took 12 s when each was).
    for i in sorted(spanning, key=lambda i: -area[i])[:MAX_MESHES]:
        keep[i] = _holes(labels[boxes[i]] == i + 1) <= MAX_HOLES
    if not keep.any():
        lines = darkness[labels > 0]
        higher = otsu_threshold(lines / top) * top
        if higher >= 1.2 * t and (lines > higher).sum() >= 16:       # darker ink on the lines
            return _the_digit(darkness, higher)
        raise ValueError(blank.format("there but lines across the picture or a grid"))
    hugging = keep & edge & (in_band >= 0.6)
    if hugging.any() and (away := keep & ~hugging).any():
        # A piece away from the edges that is not a speck beside them (at least 2% of the
        # largest hugging piece: a table is large, a digit's stroke or a dot on a sheet small)
        # marks where the digit is; hugging pieces reaching within NEAR of its box are part of
        # it (a 5's bar drawn along the top edge of the pad, its bowl a stroke of its own).
        found = np.flatnonzero(away & (area >= max(16, 1e-4 * H * W, 0.02 * area[hugging].max())))
        if len(found):
            m = round(NEAR * max(H, W))
            near = np.zeros((H, W), bool)
            for rows, cols in (boxes[i] for i in found):
                near[max(0, rows.start - m):rows.stop + m, max(0, cols.start - m):cols.stop + m] = True
            far = hugging & (ndimage.sum_labels(near, labels, index) == 0)
            if far.any():
                keep &= ~far
                notes.append("dark parts at the picture's edges were left out (a table, a shadow?); if "
                             "the digit itself touches an edge, leave a margin around it")
    biggest = int(np.argmax(np.where(keep, area, 0)))
    b = boxes[biggest]
    y0, y1, x0, x1 = b[0].start, b[0].stop, b[1].start, b[1].stop
    my, mx = (y1 - y0) // 2, (x1 - x0) // 2
    for i, box in enumerate(boxes):          # specks: small and away from the largest piece
        if keep[i] and area[i] < SPECK * area[biggest]:
            near = box[0].stop > y0 - my and box[0].start < y1 + my and box[1].stop > x0 - mx and box[1].start < x1 + mx
            keep[i] = near
    if (big := keep & (area >= 0.3 * area[biggest])).sum() >= 2 and _side_by_side([boxes[i] for i in np.flatnonzero(big)]):
        notes.append(f"it looks like {int(big.sum())} marks side by side, not one digit: crop to one digit")
    return np.isin(labels, np.flatnonzero(keep) + 1), notes


def _holes(mask):
    """How many holes (background regions it encloses, of 4 pixels or more) mask has."""
    from scipy import ndimage
    background, n = ndimage.label(~np.pad(mask, 1))
    sizes = ndimage.sum_labels(np.ones_like(background), background, np.arange(1, n + 1))
    return int((sizes[1:] >= 4).sum()) if n else 0          # (label 1: the outside, via the padding)


def _side_by_side(boxes):
    """Whether pieces' boxes (slices) stand in a row: no two share much of their columns."""
    spans = sorted((b[1].start, b[1].stop) for b in boxes)
    return all(min(a1, b1) - max(a0, b0) < 0.2 * min(a1 - a0, b1 - b0) for (a0, a1), (b0, b1) in zip(spans, spans[1:]))


def _reading_notes(ink):
    """read_digit's notes on the ink cropped to its bounding box (zero where there is none)."""
    h, w = ink.shape
    notes = []
    if max(h, w) < BOX:
        notes.append(f"the digit is {w}x{h} pixels, enlarged to the {BOX}x{BOX} box MNIST's digits "
                     "fill: too small to read reliably")
    if (ink > 0).mean() >= BLOB_FILL and max(h, w) <= BLOB_ASPECT * min(h, w):
        notes.append(f"its ink is one solid blob ({(ink > 0).mean():.0%} of its {w}x{h} box), more a "
                     "dot than a digit's strokes")
    return notes
