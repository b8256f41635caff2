"""Data augmentation: small random affine jitter of each training image, per batch.

Each image gets its own random rotation, scale and shift (and optional shear), applied by
inverse mapping: every output pixel asks "where in the input did I come from?" and reads
that point by bilinear interpolation; points outside the image read the image's corner
value (its background). Written in Numba, the batch shared among the threads, so it costs
little next to a training step.

    fit(..., augment=RandomAffine(max_shift=2, max_rotation=10, scale=(0.9, 1.1)))
"""
import numpy as np
from numba import njit

from .kernels.fast.parallel import JIT, in_parallel, share_range, threads_for
from .optim import check_hyper


@njit(**JIT)
def _affine_share(t, nchunks, x, mats, offsets, out):
    # out[n, c, r, q] = bilinear(x[n, c], mats[n] @ (r, q) + offsets[n]), for this share's images
    N, C, H, W = x.shape
    n0, n1 = share_range(t, nchunks, N)
    for n in range(n0, n1):
        a, b, c_, d = mats[n, 0, 0], mats[n, 0, 1], mats[n, 1, 0], mats[n, 1, 1]
        oy, ox = offsets[n, 0], offsets[n, 1]
        for ch in range(C):
            plane = x[n, ch]
            fill = plane[0, 0]
            for r in range(H):
                for q in range(W):
                    sy = a * r + b * q + oy
                    sx = c_ * r + d * q + ox
                    y0, x0 = int(np.floor(sy)), int(np.floor(sx))
                    fy, fx = sy - y0, sx - x0
                    acc = 0.0
                    for dy, wy in ((0, 1 - fy), (1, fy)):
                        for dx, wx in ((0, 1 - fx), (1, fx)):
                            yy, xx = y0 + dy, x0 + dx
                            v = plane[yy, xx] if 0 <= yy < H and 0 <= xx < W else fill
                            acc += wy * wx * v
                    out[n, ch, r, q] = acc


def affine_batch(x, mats, offsets):
    """Apply one inverse affine map per image: x (N, C, H, W), mats (N, 2, 2), offsets (N, 2)
    in (row, column) order. Returns a new array of x's dtype."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    in_parallel(_affine_share, threads_for(len(x)), x, np.ascontiguousarray(mats, np.float64),
                np.ascontiguousarray(offsets, np.float64), out)
    return out


class RandomAffine:
    """Random rotation (degrees, uniform in +-max_rotation), isotropic scale (uniform in
    `scale`), shear (degrees) and shift (pixels, uniform in +-max_shift) per image, about
    the image centre. Call as augment(x_batch, rng) -> augmented copy.

    The arguments are checked here, not at the first batch: max_shift, max_rotation >= 0;
    scale a pair (low, high) with 0 < low <= high (a zoom of 0 has no inverse); max_shear
    in [0, 90) degrees (tan(90) is infinite)."""

    def __init__(self, max_shift=2.0, max_rotation=10.0, scale=(0.9, 1.1), max_shear=0.0):
        self.max_shift = check_hyper("RandomAffine", "max_shift", max_shift, 0)
        self.max_rotation = check_hyper("RandomAffine", "max_rotation", max_rotation, 0)
        self.max_shear = check_hyper("RandomAffine", "max_shear", max_shear, 0, 90)
        if isinstance(scale, (str, bytes)) or not hasattr(scale, "__len__") or len(scale) != 2:
            raise ValueError(f"RandomAffine: scale must be a pair (low, high) of zoom factors, e.g. "
                             f"(0.9, 1.1); (1, 1) for no zoom; got {scale!r}")
        low = check_hyper("RandomAffine", "scale[0]", scale[0], 0, low_open=True)
        high = check_hyper("RandomAffine", "scale[1]", scale[1], low)
        self.scale = (low, high)

    def __call__(self, x, rng):
        if x.ndim != 4:
            raise ValueError(f"RandomAffine: expected a batch (N, C, H, W), got shape {x.shape}")
        N, _, H, W = x.shape
        angle = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation, N))
        shear = np.deg2rad(rng.uniform(-self.max_shear, self.max_shear, N))
        zoom = rng.uniform(*self.scale, N)
        shift = rng.uniform(-self.max_shift, self.max_shift, (N, 2))
        # Forward map: p_out = zoom * R(angle) S(shear) (p_in - centre) + centre + shift.
        # We need its inverse, p_in = M (p_out - centre - shift) + centre, with M = (zoom R S)^-1.
        cos, sin = np.cos(angle), np.sin(angle)
        rot = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
        shr = np.zeros((N, 2, 2))
        shr[:, 0, 0] = shr[:, 1, 1] = 1
        shr[:, 0, 1] = np.tan(shear)
        forward = zoom[:, None, None] * rot @ shr
        inverse = np.linalg.inv(forward)
        centre = np.array([(H - 1) / 2, (W - 1) / 2])
        offsets = centre - np.einsum("nij,nj->ni", inverse, centre + shift)
        return affine_batch(x, inverse, offsets)

    def __repr__(self):
        return (f"RandomAffine(max_shift={self.max_shift}, max_rotation={self.max_rotation}, "
                f"scale={self.scale}, max_shear={self.max_shear})")
