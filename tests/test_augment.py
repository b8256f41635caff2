"""Augmentation: identity, exact shifts, agreement with SciPy's affine_transform, seeding."""
import numpy as np
import pytest
from scipy.ndimage import affine_transform

from tinycnn.augment import RandomAffine, affine_batch


def batch(n=4, c=1, h=12, w=10, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w)).astype(np.float32)


def test_identity_map_returns_the_input():
    x = batch()
    eye = np.tile(np.eye(2), (len(x), 1, 1))
    np.testing.assert_allclose(affine_batch(x, eye, np.zeros((len(x), 2))), x, atol=1e-6)
    out = RandomAffine(max_shift=0, max_rotation=0, scale=(1, 1))(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, x, atol=1e-5)
    assert out.dtype == np.float32 and out is not x


def test_whole_pixel_shift_moves_the_image():
    x = batch(n=1)
    out = affine_batch(x, np.eye(2)[None], np.array([[-2.0, -1.0]]))   # read from (r-2, q-1)
    np.testing.assert_allclose(out[0, 0, 2:, 1:], x[0, 0, :-2, :-1], atol=1e-6)
    assert np.all(out[0, 0, :2] == x[0, 0, 0, 0])                      # outside: corner value


def test_matches_scipy_affine_transform_inside_the_image():
    rng = np.random.default_rng(1)
    x = batch(n=3, c=2, seed=1).astype(np.float64)
    mats = np.eye(2) + rng.normal(0, 0.1, (3, 2, 2))
    offs = rng.normal(0, 1, (3, 2))
    out = affine_batch(x, mats, offs)
    for n in range(3):
        for c in range(2):
            ref = affine_transform(x[n, c], mats[n], offs[n], order=1, mode="constant", cval=np.nan)
            inside = ~np.isnan(ref)
            np.testing.assert_allclose(out[n, c][inside], ref[inside], atol=1e-9)


def test_seeded_and_centred():
    x = np.zeros((64, 1, 28, 28), np.float32)
    x[:, :, 10:18, 10:18] = 1
    aug = RandomAffine(max_shift=2, max_rotation=10, scale=(0.9, 1.1))
    a, b = aug(x, np.random.default_rng(5)), aug(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    ys, xs = np.indices((28, 28))
    com = np.array([[(img[0] * ys).sum() / img[0].sum(), (img[0] * xs).sum() / img[0].sum()] for img in a])
    assert np.all(np.abs(com - 13.5) <= 2.2)                               # shifts stay within 2 px
    assert not np.array_equal(a[0], a[1])


def test_bad_shape():
    with pytest.raises(ValueError, match=r"expected a batch \(N, C, H, W\)"):
        RandomAffine()(np.zeros((3, 28, 28), np.float32), np.random.default_rng(0))
