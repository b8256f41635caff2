"""Digits drawn with a pen, the way a person makes them: strokes, not MNIST pixels.

`digit_strokes(d, rng)` gives the pen strokes of digit d (a hand-made template per digit,
jittered: size, slant, rotation, wobble), and `render(strokes, ...)` draws them dark on a
large light "paper" with a pen of random width, off-centre, with uneven lighting, noise and
a little blur, like a phone photo of a note. Used by examples/paper_digits.py to measure how
often a model reads such pictures right, and by the browser test of `tinycnn serve`'s page
(tests/test_serve_browser.py) to draw with real pointer events.
"""
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Strokes in a unit box (x right, y down), one list of points per pen stroke.
TEMPLATES = {
    0: [[(0.5, 0.08), (0.3, 0.18), (0.22, 0.5), (0.3, 0.82), (0.5, 0.92), (0.7, 0.82), (0.78, 0.5),
         (0.7, 0.18), (0.5, 0.08)]],
    1: [[(0.38, 0.25), (0.56, 0.08), (0.52, 0.92)]],
    2: [[(0.25, 0.3), (0.35, 0.14), (0.55, 0.09), (0.72, 0.2), (0.72, 0.38), (0.5, 0.6), (0.24, 0.9),
         (0.8, 0.9)]],
    3: [[(0.25, 0.15), (0.55, 0.08), (0.72, 0.22), (0.6, 0.42), (0.42, 0.48), (0.6, 0.52), (0.76, 0.68),
         (0.68, 0.87), (0.45, 0.93), (0.22, 0.83)]],
    4: [[(0.58, 0.92), (0.58, 0.08), (0.2, 0.64), (0.82, 0.64)]],
    5: [[(0.74, 0.1), (0.33, 0.1), (0.28, 0.45), (0.5, 0.4), (0.7, 0.5), (0.73, 0.72), (0.55, 0.9),
         (0.25, 0.85)]],
    6: [[(0.66, 0.1), (0.42, 0.28), (0.28, 0.6), (0.34, 0.85), (0.54, 0.92), (0.71, 0.76), (0.63, 0.56),
         (0.43, 0.52), (0.3, 0.64)]],
    7: [[(0.2, 0.12), (0.8, 0.12), (0.45, 0.92)]],
    8: [[(0.5, 0.5), (0.3, 0.34), (0.36, 0.13), (0.6, 0.1), (0.68, 0.3), (0.5, 0.5), (0.28, 0.7),
         (0.38, 0.91), (0.62, 0.91), (0.72, 0.7), (0.5, 0.5)]],
    9: [[(0.7, 0.33), (0.55, 0.47), (0.35, 0.42), (0.3, 0.24), (0.45, 0.1), (0.65, 0.13), (0.7, 0.33),
         (0.66, 0.6), (0.56, 0.92)]],
}


def _smooth(points, per_segment=12):
    """Densify a polyline with Catmull-Rom splines, so strokes curve like a pen's."""
    p = np.asarray(points, dtype=float)
    p = np.vstack([p[0], p, p[-1]])
    out = []
    for i in range(1, len(p) - 2):
        p0, p1, p2, p3 = p[i - 1], p[i], p[i + 1], p[i + 2]
        for t in np.linspace(0, 1, per_segment, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(0.5 * (2 * p1 + (p2 - p0) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t2
                              + (3 * p1 - p0 - 3 * p2 + p3) * t3))
    out.append(p[-2])
    return np.array(out)


def digit_strokes(digit, rng):
    """Jittered strokes of `digit` in the unit box: a list of (K, 2) arrays."""
    angle = np.deg2rad(rng.uniform(-12, 12))
    slant = rng.uniform(-0.25, 0.15)
    sx, sy = rng.uniform(0.75, 1.1), rng.uniform(0.85, 1.05)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    strokes = []
    for stroke in TEMPLATES[digit]:
        pts = np.asarray(stroke) + rng.normal(0, 0.025, (len(stroke), 2))   # a wobbly hand
        pts = _smooth(pts) - 0.5
        pts[:, 0] += slant * pts[:, 1]
        pts = (pts * [sx, sy]) @ rot.T + 0.5
        strokes.append(pts)
    return strokes


def render(strokes, rng, size=(900, 1200)):
    """Strokes -> an RGB PIL image of dark ink on light, unevenly lit paper, with the digit
    somewhere off-centre at 25-50% of the picture's height."""
    W, H = size
    box = rng.uniform(0.25, 0.5) * H
    x0, y0 = rng.uniform(0.05 * W, W - box - 0.05 * W), rng.uniform(0.05 * H, H - box - 0.05 * H)
    paper = rng.uniform(200, 245)
    yy, xx = np.mgrid[0:H, 0:W]
    light = paper - rng.uniform(0, 40) * (xx / W) * rng.choice([-1, 1]) - rng.uniform(0, 30) * (yy / H)
    img = Image.fromarray(np.clip(light, 0, 255).astype(np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(img)
    ink = tuple(int(v) for v in rng.uniform(10, 70, 3))
    width = max(2, int(box * rng.uniform(0.05, 0.1)))
    for pts in strokes:
        xy = [(x0 + x * box, y0 + y * box) for x, y in pts]
        draw.line(xy, fill=ink, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):               # round pen ends
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=ink)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, rng.uniform(2, 8), (H, W, 1))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
