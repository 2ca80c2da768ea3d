"""Goodness of fit and posterior summaries: χ²_ν, residual SNR, mean/std maps, spread/skill, magnification regions.

These run on the host after sampling, in numpy (float64 accumulation), and take
plain arrays. Noise conventions follow `jaxlens.io.read_noise`: σ_n is a scalar
or a map, and an infinite σ_n masks a pixel.

Masks: ``mask`` is True where a pixel is *excluded* (as in numpy.ma and
astronomical bad-pixel masks).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "RegionStats",
    "diverged_chains",
    "high_magnification_mask",
    "magnification_from_rays",
    "magnification_map",
    "magnification_region",
    "posterior_moments",
    "reduced_chi2",
    "region_std",
    "residual_snr",
    "spread_and_skill",
    "spread_skill",
]


def _sigma_and_used(sigma_n, mask, pixel_shape: tuple[int, ...]):
    sigma = np.asarray(sigma_n, dtype=np.float64)
    if np.isnan(sigma).any() or np.any(sigma <= 0):
        raise ValueError("sigma_n must be > 0 (use +inf to mask a pixel), without NaN")
    try:
        sigma = np.broadcast_to(sigma, pixel_shape)
    except ValueError as err:
        raise ValueError(f"sigma_n of shape {np.shape(sigma_n)} does not broadcast to {pixel_shape}") from err
    used = np.isfinite(sigma)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise ValueError(f"mask must be boolean (True = excluded), got dtype {mask.dtype}")
        try:
            used = used & ~np.broadcast_to(mask, pixel_shape)
        except ValueError as err:
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to {pixel_shape}") from err
    return sigma, used


def reduced_chi2(residual, sigma_n, *, mask=None, n_params: int = 0) -> np.ndarray:
    """Reduced χ² of each sample: χ²_ν = Σ (r/σ_n)² / ν over the used pixels.

    ν = (number of used pixel values) − n_params. Pixels with σ_n = +inf or
    mask = True are not used.

    Args:
      residual: y − A x, [N, H, W] or [N, H, W, C] (one value per sample), or a
        single image [H, W] (gives a 0-d result). A single multi-band image
        needs a leading axis of 1.
      sigma_n: noise standard deviation, a scalar or a map broadcasting to the
        per-sample shape ([H, W] or [H, W, C]; a [H, W] map needs C = 1 or an
        explicit trailing axis [H, W, 1]).
      mask: optional boolean array broadcasting to the per-sample shape, True
        where a pixel is excluded.
      n_params: parameters fitted to the data (0 for posterior samples checked
        against the noise, the paper's use).

    Returns:
      float64 array [N] (or 0-d for a single image).
    """
    r = np.asarray(residual, dtype=np.float64)
    if r.ndim not in (2, 3, 4):
        raise ValueError(f"residual must be [H, W], [N, H, W] or [N, H, W, C], got shape {r.shape}")
    batched = r.ndim > 2
    pixel_shape = r.shape[1:] if batched else r.shape
    sigma, used = _sigma_and_used(sigma_n, mask, pixel_shape)
    nu = int(used.sum()) - int(n_params)
    if nu <= 0:
        raise ValueError(f"no degrees of freedom: {int(used.sum())} used pixels, n_params={n_params}")
    if not np.isfinite(r[..., used] if batched else r[used]).all():
        raise ValueError("residual has non-finite values on used pixels")
    z2 = np.where(used, np.square(np.where(used, r, 0.0) / sigma), 0.0)
    axes = tuple(range(1, r.ndim)) if batched else None
    return np.sum(z2, axis=axes) / nu


def residual_snr(observation, model, sigma_n) -> np.ndarray:
    """Residual in units of the noise, (y − model)/σ_n; 0 where σ_n = +inf.

    Args:
      observation: y, [H, W] or [H, W, C].
      model: A x, broadcasting against y (e.g. [N, H, W] samples or a mean).
      sigma_n: scalar or map broadcasting against y.

    Returns:
      float32 array of the broadcast shape.
    """
    y = np.asarray(observation, dtype=np.float64)
    m = np.asarray(model, dtype=np.float64)
    try:
        shape = np.broadcast_shapes(y.shape, m.shape)
    except ValueError as err:
        raise ValueError(f"observation {y.shape} and model {m.shape} do not broadcast") from err
    sigma, used = _sigma_and_used(sigma_n, None, shape)
    out = np.where(used, (y - m) / np.where(used, sigma, 1.0), 0.0)
    return out.astype(np.float32)


def posterior_moments(samples, *, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and standard deviation maps over the sample axis.

    The standard deviation uses ddof = 1 (unbiased variance), so it needs at
    least two samples.

    Args:
      samples: e.g. [N, H, W, C].
      axis: the sample axis.

    Returns:
      (mean, std) float32, the shape of one sample.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim < 1 or x.shape[axis] < 2:
        raise ValueError(f"posterior_moments needs at least two samples along axis {axis}, got {x.shape}")
    return x.mean(axis=axis).astype(np.float32), x.std(axis=axis, ddof=1).astype(np.float32)


def diverged_chains(chi2_nu, samples=None, *, factor: float = 2.0) -> np.ndarray:
    """Which chains failed: a non-finite sample or χ²_ν, or χ²_ν above `factor` × max(1, typical).

    An explicit reverse-SDE solver can throw a chain off the data manifold (a step below the
    stability bound, or a one-step spike of the likelihood drift); such a chain ends far from
    the data, with a χ²_ν of tens to thousands, where a posterior sample's is 1 within
    ~√(2/ν). The typical χ²_ν is the lower median of the finite ones: with a mis-specified
    noise or lens, where every chain fits equally badly, nothing is flagged, and with two
    chains one bad chain is still caught. If most chains diverge the typical χ²_ν is itself
    large and this cannot tell; look at it too (`bin/sample` warns above `factor`).

    Args:
      chi2_nu: [n_chains] reduced χ² of each chain's sample.
      samples: optionally the samples, [n_chains, ...]; a non-finite pixel flags its chain.
      factor: the multiple of max(1, typical χ²_ν) that marks a chain as failed; at the
        default 2 a posterior sample is flagged with negligible probability once ν ≳ 100.

    Returns:
      bool [n_chains], True for the failed chains.
    """
    chi2 = np.asarray(chi2_nu, np.float64)
    if chi2.ndim != 1 or not factor > 1:
        raise ValueError(f"need chi2_nu [n_chains] and factor > 1, got shape {chi2.shape}, factor {factor}")
    bad = ~np.isfinite(chi2)
    if samples is not None:
        x = np.asarray(samples)
        if x.shape[:1] != chi2.shape:
            raise ValueError(f"samples {x.shape} do not match chi2_nu {chi2.shape}")
        bad |= ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.all():
        return bad
    typical = np.percentile(chi2[~bad], 50, method="lower")
    return bad | (chi2 > factor * max(typical, 1.0))


def spread_skill(samples, truths, *, n_bootstrap: int = 500, seed: int = 0) -> tuple[float, float]:
    """(ratio, bootstrap std) of E‖x_i − x_j‖² between samples to E‖x_i − x*‖² from samples to truth.

    For a calibrated posterior the truth is exchangeable with the samples, so both are 2 tr Cov
    and the ratio of their means over simulations is 1; < 1 means samples closer to each other
    than to the truth (over-confident), > 1 the reverse. Samples spread k times the posterior
    around its mean give 2k²/(k² + 1). Unlike TARP's worst-α deviation it pools every pixel of
    every simulation, so its bootstrap error (over simulations) is far smaller.

    Args:
      samples: [n_sims, n_samples >= 2, ...].
      truths: [n_sims, ...].
    """
    spread, skill = spread_and_skill(samples, truths)
    idx = np.random.default_rng(seed).integers(0, len(spread), (n_bootstrap, len(spread)))
    boot = spread[idx].mean(1) / skill[idx].mean(1)
    return float(spread.mean() / skill.mean()), float(boot.std())


def spread_and_skill(samples, truths) -> tuple[np.ndarray, np.ndarray]:
    """Per simulation: the mean ‖x_i − x_j‖² over sample pairs, and the mean ‖x_i − x*‖² over samples.

    Args:
      samples: [n_sims, n_samples >= 2, ...].
      truths: [n_sims, ...].

    Returns:
      (spread [n_sims], skill [n_sims]), float64.
    """
    x = np.asarray(samples, np.float64)
    t = np.asarray(truths, np.float64)
    if x.ndim < 2 or x.shape[1] < 2 or t.shape != x.shape[:1] + x.shape[2:]:
        raise ValueError(f"need samples [n_sims, n >= 2, ...] and truths [n_sims, ...], got {x.shape}, {t.shape}")
    x, t = x.reshape(x.shape[0], x.shape[1], -1), t.reshape(t.shape[0], -1)
    skill = ((x - t[:, None]) ** 2).sum(-1).mean(1)
    # The mean over pairs of ‖x_i − x_j‖² is 2 Σ‖x_i − x̄‖² / (n − 1).
    spread = 2.0 * ((x - x.mean(1, keepdims=True)) ** 2).sum((1, 2)) / (x.shape[1] - 1)
    return spread, skill


# --------------------------------------------------------------------------- magnification


def _centres(n: int, fov: float) -> np.ndarray:
    return (np.arange(n) - (n - 1) / 2.0) * (fov / n)


def magnification_from_rays(
    ray_shoot: Callable,
    *,
    src_npix: int,
    src_fov: float,
    img_npix: int,
    img_fov: float,
    rows_per_batch: int = 256,
) -> np.ndarray:
    """Source-plane magnification by ray counting.

    Shoots one ray per pixel centre of an img_npix² grid over img_fov and
    accumulates, in each source pixel, the image-plane area of the rays that
    land there: μ = (image area mapped into the pixel)/(source pixel area),
    the *total* magnification of a small source in that pixel, summed over all
    its images. Each ray's area (img_fov/img_npix)² is shared among the four
    nearest source pixel centres with bilinear (cloud-in-cell) weights, the
    adjoint of the bilinear interpolation used by the forward model; this
    removes the aliasing of plain nearest-pixel counting on a regular ray
    lattice, at the cost of a one-pixel tent smoothing. Images outside
    img_fov are not counted, so μ is underestimated where an image falls off
    the field.

    Args:
      ray_shoot: (x, y) -> (β_x, β_y), arcsec; vectorised over arrays.
      src_npix, src_fov: source grid (pixels, arcsec), centred on the origin.
      img_npix, img_fov: ray grid (pixels, arcsec), centred on the origin.
      rows_per_batch: ray rows traced per call, to bound memory.

    Returns:
      float64 map [src_npix, src_npix], index [i, j] at (x_j, y_i).
    """
    for name, value in (("src_npix", src_npix), ("img_npix", img_npix)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")
    if not (src_fov > 0 and img_fov > 0):
        raise ValueError(f"fields of view must be > 0, got src_fov={src_fov}, img_fov={img_fov}")
    xs = _centres(img_npix, img_fov)
    rows = min(int(rows_per_batch), img_npix)
    # NaN rows pad the last batch so a jitted ray_shoot sees one shape; they land nowhere.
    ys = np.concatenate([xs, np.full(-img_npix % rows, np.nan)])
    d_src = src_fov / src_npix
    counts = np.zeros(src_npix * src_npix, dtype=np.float64)
    for start in range(0, ys.size, rows):
        y, x = np.meshgrid(ys[start : start + rows], xs, indexing="ij")
        with np.errstate(invalid="ignore"):
            bx, by = (np.asarray(b, dtype=np.float64).ravel() for b in ray_shoot(x, y))
        ok = np.isfinite(bx) & np.isfinite(by)
        u = (bx[ok] + src_fov / 2) / d_src - 0.5  # in units of pixels, 0 at the first centre
        v = (by[ok] + src_fov / 2) / d_src - 0.5
        j0, i0 = np.floor(u), np.floor(v)
        wu, wv = u - j0, v - i0
        for dj, di, w in ((0, 0, (1 - wu) * (1 - wv)), (1, 0, wu * (1 - wv)), (0, 1, (1 - wu) * wv), (1, 1, wu * wv)):
            j, i = j0 + dj, i0 + di
            inside = (j >= 0) & (j < src_npix) & (i >= 0) & (i < src_npix)
            flat = (i[inside] * src_npix + j[inside]).astype(np.int64)
            counts += np.bincount(flat, weights=w[inside], minlength=src_npix * src_npix)
    ratio = (img_fov / img_npix) ** 2 / d_src**2
    return counts.reshape(src_npix, src_npix) * ratio


def magnification_map(lens, geometry, *, oversample: int = 4) -> np.ndarray:
    """Source-plane magnification map of a `LensParams` on a `Geometry`'s source grid.

    Rays are shot on the fine grid refined `oversample` times per side
    (fine_npix · oversample rays per side) with `jaxlens.lensing.ray_trace`.

    Returns:
      float64 map [src_npix, src_npix]; 0 where no ray lands (unobserved).
    """
    import jax
    import jax.numpy as jnp

    from jaxlens.lensing import ray_trace  # lazy: metrics work without the physics

    if int(oversample) != oversample or oversample < 1:
        raise ValueError(f"oversample must be a positive integer, got {oversample}")
    lens = type(lens)(*(jnp.asarray(v, dtype=jnp.float32) for v in lens))
    traced = jax.jit(ray_trace)

    def shoot(x, y):
        bx, by = traced(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), lens)
        return np.asarray(bx), np.asarray(by)

    return magnification_from_rays(
        shoot,
        src_npix=geometry.src_npix,
        src_fov=geometry.src_fov,
        img_npix=geometry.fine_npix * int(oversample),
        img_fov=geometry.img_fov,
    )


def high_magnification_mask(mu, *, threshold: float = 5.0) -> np.ndarray:
    """True where μ ≥ threshold: the multiply-imaged, high-magnification region near caustics."""
    mu = np.asarray(mu)
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    return mu >= threshold


def magnification_region(lens, geometry, *, threshold: float = 5.0, oversample: int = 4):
    """Magnification map and its high-magnification mask.

    Returns:
      (mu [src_npix, src_npix] float64, mask [src_npix, src_npix] bool).
    """
    mu = magnification_map(lens, geometry, oversample=oversample)
    return mu, high_magnification_mask(mu, threshold=threshold)


class RegionStats(NamedTuple):
    """Statistics of a map inside and outside a region (e.g. posterior std vs magnification).

    Attributes:
      inside_mean, inside_median: over pixels where the mask is True.
      outside_mean, outside_median: over the `outside` pixels.
      n_inside, n_outside: pixel counts (times channels).
      ratio: inside_mean / outside_mean.
    """

    inside_mean: float
    inside_median: float
    outside_mean: float
    outside_median: float
    n_inside: int
    n_outside: int
    ratio: float


def region_std(std_map, mask, *, outside=None) -> RegionStats:
    """Compares a map (typically the posterior std) inside and outside a region.

    Args:
      std_map: [H, W] or [H, W, C].
      mask: boolean [H, W], True inside the region.
      outside: boolean [H, W] of the comparison pixels; default ~mask. Pass
        e.g. ``(mu > 0) & ~mask`` to leave out unobserved source pixels.

    Returns:
      `RegionStats`; means are NaN for an empty side.
    """
    s = np.asarray(std_map, dtype=np.float64)
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != s.shape[:2] or s.ndim not in (2, 3):
        raise ValueError(f"need std_map [H, W] or [H, W, C] and a boolean mask [H, W]; got {s.shape}, {mask.shape} {mask.dtype}")
    outside = ~mask if outside is None else np.asarray(outside, dtype=bool)
    if outside.shape != mask.shape:
        raise ValueError(f"outside must have shape {mask.shape}, got {outside.shape}")
    inner, outer = s[mask].ravel(), s[outside].ravel()

    def stat(f, v):
        return float(f(v)) if v.size else float("nan")

    mean_in, mean_out = stat(np.mean, inner), stat(np.mean, outer)
    return RegionStats(
        inside_mean=mean_in,
        inside_median=stat(np.median, inner),
        outside_mean=mean_out,
        outside_median=stat(np.median, outer),
        n_inside=int(inner.size),
        n_outside=int(outer.size),
        ratio=mean_in / mean_out if outer.size and mean_out != 0 else float("nan"),
    )
