"""Non-parametric galaxy morphology and the two-sample Kolmogorov–Smirnov distance.

Used to compare populations of images (prior samples against training
galaxies, posterior samples against the truth). All functions take a stack of
single-band images [..., H, W] and return one value per image, in pixels and
the image's flux units; multiply radii by the pixel scale for arcsec.

Conventions: the centroid is the flux-weighted mean position; radii are
measured from it in circular apertures. The curve of growth treats each pixel
as a point at its centre, with half of its flux counted at its own radius (the
midpoint rule), which removes most of the O(1 pixel) bias of a plain
cumulative sum for well-resolved profiles. The moments are unweighted, so
apply them to noise-free or high-SNR images (posterior samples, means,
simulations); noise in the wings biases them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "Morphology",
    "centroid",
    "concentration",
    "ellipticity",
    "flux_radius",
    "half_light_radius",
    "ks_distance",
    "morphology",
    "morphology_ks",
    "total_flux",
]


def _stack(images) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ValueError(f"images must be [..., H, W] with H, W ≥ 2, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("images have non-finite values")
    return x.reshape((-1,) + x.shape[-2:]), x.shape[:-2]


def total_flux(images) -> np.ndarray:
    """Sum of the pixel values of each image [..., H, W] -> [...]."""
    x, batch = _stack(images)
    return x.sum(axis=(-2, -1)).reshape(batch)


def _centroid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flux = x.sum(axis=(-2, -1))
    safe = np.where(flux > 0, flux, np.nan)  # no centre without positive flux
    i = np.arange(x.shape[-2], dtype=np.float64)
    j = np.arange(x.shape[-1], dtype=np.float64)
    xc = np.einsum("nij,j->n", x, j) / safe
    yc = np.einsum("nij,i->n", x, i) / safe
    return xc, yc, flux


def centroid(images) -> tuple[np.ndarray, np.ndarray]:
    """Flux-weighted centre (x_c, y_c) in pixel indices (x along W/j, y along H/i); NaN if flux ≤ 0."""
    x, batch = _stack(images)
    xc, yc, _ = _centroid(x)
    return xc.reshape(batch), yc.reshape(batch)


def _flux_radii(x: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    xc, yc, flux = _centroid(x)
    i, j = np.indices(x.shape[-2:], dtype=np.float64)
    out = np.full((x.shape[0], fractions.size), np.nan)
    for n in range(x.shape[0]):
        if not flux[n] > 0:
            continue
        r = np.hypot(j - xc[n], i - yc[n]).ravel()
        order = np.argsort(r, kind="stable")
        r, f = r[order], x[n].ravel()[order]
        growth = np.cumsum(f) - 0.5 * f  # flux inside r_k, pixel k counted half
        for m, frac in enumerate(fractions):
            target = frac * flux[n]
            # First crossing: noisy wings (negative pixels) can make the curve non-monotonic.
            k = int(np.argmax(growth >= target))
            if growth[k] < target:
                continue  # never reached: NaN
            if k == 0:
                out[n, m] = r[0] * target / growth[0] if growth[0] > 0 else r[0]
            else:
                g0, g1 = growth[k - 1], growth[k]
                out[n, m] = r[k - 1] + (r[k] - r[k - 1]) * (target - g0) / (g1 - g0)
    return out


def flux_radius(images, fraction: float) -> np.ndarray:
    """Radius (pixels) of the circle around the centroid that holds `fraction` of the total flux.

    Returns NaN for images whose flux is ≤ 0 or whose curve of growth never
    reaches the fraction.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    x, batch = _stack(images)
    return _flux_radii(x, np.array([fraction]))[:, 0].reshape(batch)


def half_light_radius(images) -> np.ndarray:
    """Half-light radius r50 in pixels, around the flux-weighted centroid."""
    return flux_radius(images, 0.5)


def concentration(images) -> np.ndarray:
    """Concentration C = 5 log10(r80 / r20) (Bershady et al. 2000; ≈ 2.14 for a Gaussian)."""
    x, batch = _stack(images)
    r = _flux_radii(x, np.array([0.2, 0.8]))
    return (5.0 * np.log10(r[:, 1] / r[:, 0])).reshape(batch)


def ellipticity(images) -> tuple[np.ndarray, np.ndarray]:
    """Ellipticity (e1, e2) from unweighted central second moments.

    e1 + i e2 = (Q_xx − Q_yy + 2i Q_xy) / (Q_xx + Q_yy + 2 √det Q), so that an
    elliptical profile with axis ratio q and major axis at angle φ from the x
    axis has (e1, e2) = (1 − q)/(1 + q) (cos 2φ, sin 2φ): the lenstronomy
    convention that jaxlens uses for lenses.

    Returns:
      (e1, e2), each [...]; NaN where the flux is ≤ 0.
    """
    x, batch = _stack(images)
    xc, yc, flux = _centroid(x)
    i, j = np.indices(x.shape[-2:], dtype=np.float64)
    dx = j[None] - xc[:, None, None]
    dy = i[None] - yc[:, None, None]
    safe = np.where(flux > 0, flux, np.nan)
    qxx = np.sum(x * dx * dx, axis=(-2, -1)) / safe
    qyy = np.sum(x * dy * dy, axis=(-2, -1)) / safe
    qxy = np.sum(x * dx * dy, axis=(-2, -1)) / safe
    det = np.clip(qxx * qyy - qxy**2, 0.0, None)
    denom = qxx + qyy + 2.0 * np.sqrt(det)
    with np.errstate(invalid="ignore", divide="ignore"):
        e1 = (qxx - qyy) / denom
        e2 = 2.0 * qxy / denom
    return e1.reshape(batch), e2.reshape(batch)


class Morphology(NamedTuple):
    """Per-image morphology, each field [...]: flux, r50 (pixels), concentration, e1, e2, |e|."""

    flux: np.ndarray
    r50: np.ndarray
    concentration: np.ndarray
    e1: np.ndarray
    e2: np.ndarray
    e: np.ndarray


def morphology(images) -> Morphology:
    """All morphology statistics of a stack of images [..., H, W]."""
    x, batch = _stack(images)
    r = _flux_radii(x, np.array([0.2, 0.5, 0.8]))
    e1, e2 = ellipticity(x)
    return Morphology(
        flux=x.sum(axis=(-2, -1)).reshape(batch),
        r50=r[:, 1].reshape(batch),
        concentration=(5.0 * np.log10(r[:, 2] / r[:, 0])).reshape(batch),
        e1=e1.reshape(batch),
        e2=e2.reshape(batch),
        e=np.hypot(e1, e2).reshape(batch),
    )


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov–Smirnov statistic sup_x |F_a(x) − F_b(x)|.

    Same value as ``scipy.stats.ks_2samp(a, b).statistic``.

    Args:
      a, b: 1-D samples (flattened), finite, non-empty.
    """
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_distance needs two non-empty samples")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("ks_distance samples must be finite (drop NaN radii first)")
    # The sup is reached at a data point, where both ECDFs are right-continuous.
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))


def morphology_ks(images_a, images_b) -> dict[str, float]:
    """KS distance between two populations for each `Morphology` statistic (NaNs dropped)."""
    ma, mb = morphology(images_a), morphology(images_b)
    out = {}
    for name in Morphology._fields:
        va, vb = np.ravel(getattr(ma, name)), np.ravel(getattr(mb, name))
        va, vb = va[np.isfinite(va)], vb[np.isfinite(vb)]
        out[name] = ks_distance(va, vb) if va.size and vb.size else float("nan")
    return out
