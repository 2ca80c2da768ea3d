"""An out-of-distribution source for the paper's figure 2: a knotty "7".

The glyph comes from matplotlib's own font (DejaVu Sans Bold, shipped with
matplotlib), rasterised by point-in-polygon tests on a sub-pixel grid, so the
image is the same on every machine and needs no download.
"""

from __future__ import annotations

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextPath


def _gaussian_filter(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, truncated at 4σ, with mirrored edges (scipy.ndimage's defaults)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = np.pad(np.asarray(image, np.float64), r, mode="symmetric")
    out = np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 0, out)
    return np.apply_along_axis(lambda v: np.convolve(v, k, mode="valid"), 1, out)


def glyph_mask(char: str, npix: int, *, height: float = 0.6, oversample: int = 4) -> np.ndarray:
    """Fraction of each pixel covered by `char`, [npix, npix] float64 in [0, 1].

    The glyph is centred and scaled so that its taller side spans `height` of the
    image; index [i, j] is at (x_j, y_i) with y up, so the glyph reads upright
    with origin='lower'.
    """
    if not 0 < height <= 1:
        raise ValueError(f"height must be in (0, 1], got {height}")
    path = TextPath((0.0, 0.0), char, size=1.0, prop=FontProperties(family="DejaVu Sans", weight="bold"))
    lo, hi = path.vertices.min(axis=0), path.vertices.max(axis=0)
    scale = height * npix / float(np.max(hi - lo))
    centre = 0.5 * (lo + hi)
    fine = npix * oversample
    c = (np.arange(fine) + 0.5) / oversample - npix / 2.0  # pixel units, origin at the centre
    xx, yy = np.meshgrid(c, c, indexing="xy")
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1) / scale + centre
    inside = path.contains_points(pts).reshape(fine, fine).astype(np.float64)
    return inside.reshape(npix, oversample, npix, oversample).mean(axis=(1, 3))


def seven_source(npix: int = 64, *, seed: int = 7, n_knots: int = 4, smooth: float = 0.8) -> np.ndarray:
    """A smoothed "7" with a few bright Gaussian knots on its strokes, peak 1.

    Args:
      npix: image side, pixels.
      seed: places the knots (any pixel well inside the glyph).
      n_knots: number of knots.
      smooth: Gaussian smoothing of the glyph, in pixels at npix = 64 (scaled with npix).

    Returns:
      float32 [npix, npix], non-negative, maximum 1.
    """
    scale = npix / 64.0
    base = _gaussian_filter(0.5 * glyph_mask("7", npix), smooth * scale)
    rng = np.random.default_rng(seed)
    inside = np.argwhere(glyph_mask("7", npix) > 0.99)
    i, j = np.indices((npix, npix), dtype=np.float64)
    image = base
    for k in rng.choice(len(inside), size=n_knots, replace=False):
        ci, cj = inside[k]
        width = rng.uniform(1.0, 1.8) * scale
        image = image + rng.uniform(0.5, 1.0) * np.exp(-((i - ci) ** 2 + (j - cj) ** 2) / (2 * width**2))
    return (image / image.max()).astype(np.float32)
