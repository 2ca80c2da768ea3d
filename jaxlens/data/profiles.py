"""Galaxy light profiles and their pixel rendering (numpy, float64 inside, float32 out).

`GalaxyParams` describes one galaxy; `render` draws it. Lengths are in units of the
stamp side (npix), so the same parameters give the same galaxy at any npix.

Components (surface brightness, summed):
  * a Sérsic bulge, I(R) = I_e exp(-b_n [(R/r_e)^(1/n) - 1]) on the elliptical radius
    R = sqrt(x'² + (y'/q)²), with b_n from Ciotti & Bertin (1999), normalised to the
    total flux 2π q r_e² n e^(b_n) b_n^(-2n) Γ(2n) I_e;
  * an inclined exponential disk, projected axis ratio q_disk² = cos²i + q0² sin²i;
  * in the disk plane: logarithmic spiral arms, a Ferrers bar, flocculent texture (a
    log-normal random field) and an m=1 lopsided mode;
  * a dust lane on the near side of highly inclined disks;
  * star-forming clumps and tidal-tail knots: round Gaussians integrated exactly over
    each pixel (erf differences);
  * an optional companion galaxy (itself a `GalaxyParams`).

Smooth components are averaged over an oversample² sub-pixel grid (3×3 by default) and
the bulge again over 15×15 in the 7×7 pixels around its centre (45×45 in the pixels
touching it), so cuspy n ~ 4 bulges are not aliased. Pixel [i, j] is centred on (x_j, y_i) = ((j - (npix-1)/2)/npix,
(i - (npix-1)/2)/npix): x grows with j and y with i (FITS order). Position angles are
counter-clockwise from +x.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["GalaxyParams", "render", "sersic_b"]


@dataclasses.dataclass(frozen=True, eq=False)
class GalaxyParams:
    """One procedural galaxy. Lengths in stamp units (fraction of npix), angles in radians.

    Fluxes are relative: only their ratios matter, the rendered image is rescaled to `peak`.
    Clump and tail arrays have shapes [K, 2] (x, y centres relative to the stamp centre)
    and [K] (Gaussian σ, flux).
    """

    kind: str
    center: tuple[float, float]
    pa: float
    inclination: float
    thickness: float
    peak: float
    bulge_flux: float
    sersic_n: float
    r_e: float
    q_bulge: float
    disk_flux: float
    r_d: float
    n_arms: int
    pitch: float
    arm_strength: float
    arm_sharpness: float
    arm_phase: float
    arm_start: float
    bar_flux: float
    bar_length: float
    bar_q: float
    texture: float
    texture_k: np.ndarray  # [M, 2] wave vectors in the disk plane (radians per stamp unit)
    texture_amp: np.ndarray  # [M], Σ amp²/2 = 1 so the field has unit variance
    texture_phase: np.ndarray  # [M]
    lopsided: float
    lopsided_phase: float
    dust_tau: float
    clump_xy: np.ndarray
    clump_sigma: np.ndarray
    clump_flux: np.ndarray
    tail_xy: np.ndarray
    tail_sigma: np.ndarray
    tail_flux: np.ndarray
    companion: GalaxyParams | None = None
    flux_ratio: float = 1.0  # of a companion: its total flux over the main galaxy's

    @property
    def q_disk(self) -> float:
        """Projected axis ratio of the disk."""
        c, s = math.cos(self.inclination), math.sin(self.inclination)
        return math.sqrt(c * c + (self.thickness * s) ** 2)


def sersic_b(n: float) -> float:
    """b_n with Γ(2n) = 2 γ(2n, b_n), asymptotic series of Ciotti & Bertin (1999)."""
    return (2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n**2) + 131 / (1148175 * n**3)
            - 2194697 / (30690717750 * n**4))


def _coords(npix: int, oversample: int) -> np.ndarray:
    k = (np.arange(npix * oversample) + 0.5) / oversample - 0.5
    return (k - (npix - 1) / 2) / npix


def _rotate(x, y, p: GalaxyParams):
    c, s = math.cos(p.pa), math.sin(p.pa)
    dx, dy = x - p.center[0], y - p.center[1]
    return c * dx + s * dy, -s * dx + c * dy


def _sersic(x, y, p: GalaxyParams) -> np.ndarray:
    """Bulge surface brightness normalised to total flux `bulge_flux`."""
    n, re, q = p.sersic_n, p.r_e, p.q_bulge
    b = sersic_b(n)
    xr, yr = _rotate(x, y, p)
    radius = np.sqrt(xr**2 + (yr / q) ** 2)
    i_e = p.bulge_flux / (2 * np.pi * q * re**2 * n * math.exp(b) * b ** (-2 * n) * math.gamma(2 * n))
    return i_e * np.exp(-b * ((radius / re) ** (1 / n) - 1))


def _texture_field(x, y, p: GalaxyParams) -> np.ndarray:
    """Σ_m a_m cos(k_m · (x_d, y_d) + φ_m) on the grid x [1, S] × y [S, 1].

    The disk-plane coordinates are affine in the sky ones, so each wave is an outer
    product of 1D factors and the sum over waves is a matrix product.
    """
    c, s, q = math.cos(p.pa), math.sin(p.pa), p.q_disk
    kx, ky = p.texture_k[:, 0], p.texture_k[:, 1]
    alpha, beta = kx * c - ky * s / q, kx * s + ky * c / q
    gamma = p.texture_phase - alpha * p.center[0] - beta * p.center[1]
    phase_y = y.reshape(-1, 1) * beta + gamma
    phase_x = x.reshape(-1, 1) * alpha
    amp = p.texture_amp
    # cos(u + v) = cos u cos v - sin u sin v, as two real matrix products.
    return (amp * np.cos(phase_y)) @ np.cos(phase_x).T - (amp * np.sin(phase_y)) @ np.sin(phase_x).T


def _disk(x, y, p: GalaxyParams) -> np.ndarray:
    """Exponential disk with arms, bar, texture and lopsidedness, in the disk plane."""
    xr, yr = _rotate(x, y, p)
    q = p.q_disk
    xd, yd = xr, yr / q
    radius = np.hypot(xd, yd) + 1e-9
    phi = np.arctan2(yd, xd)
    h = p.r_d
    light = np.exp(-radius / h) / (2 * np.pi * h * h * q)
    if p.n_arms:
        psi = p.n_arms * phi - p.arm_phase - p.n_arms * np.log(radius / p.arm_start) / math.tan(p.pitch)
        w = p.arm_sharpness
        mean = math.gamma(w + 0.5) / (math.sqrt(math.pi) * math.gamma(w + 1))
        pattern = ((1 + np.cos(psi)) / 2) ** w / mean
        onset = 1 - np.exp(-((radius / p.arm_start) ** 4))
        light = light * (1 + p.arm_strength * onset * (pattern - 1))
    if p.texture:
        g = _texture_field(x, y, p)
        light = light * np.exp(p.texture * g - p.texture**2 / 2)
    if p.lopsided:
        light = light * (1 + p.lopsided * np.cos(phi - p.lopsided_phase) * radius / (radius + h))
    light = p.disk_flux * light
    if p.bar_flux:
        ba = p.arm_phase / max(p.n_arms, 1)
        u = (np.cos(ba) * xd + np.sin(ba) * yd) / p.bar_length
        v = (-np.sin(ba) * xd + np.cos(ba) * yd) / (p.bar_length * p.bar_q)
        ferrers = np.clip(1 - u**2 - v**2, 0, None) ** 2
        norm = math.pi * p.bar_length**2 * p.bar_q * q / 3
        light = light + p.bar_flux * ferrers / norm
    return light


def _dust(x, y, p: GalaxyParams) -> np.ndarray:
    """Transmission of a thin absorbing lane along the major axis, offset to the near side."""
    xr, yr = _rotate(x, y, p)
    width = p.r_d * (0.12 + 0.3 * math.cos(p.inclination))
    offset = 0.4 * width
    tau = p.dust_tau * np.exp(-0.5 * ((yr - offset) / width) ** 2) * np.exp(-np.abs(xr) / (2.5 * p.r_d))
    return np.exp(-tau)


def _pixel_gaussians(xy, sigma, flux, npix) -> np.ndarray:
    """Round Gaussians integrated exactly over pixels: erf differences at the pixel edges."""
    out = np.zeros((npix, npix))
    if len(flux) == 0:
        return out
    edges = (np.arange(npix + 1) - npix / 2) / npix
    erf = np.frompyfunc(math.erf, 1, 1)
    scale = 1 / (np.sqrt(2) * sigma[:, None])
    fx = np.diff(erf((edges[None] - xy[:, :1]) * scale).astype(float), axis=1) / 2
    fy = np.diff(erf((edges[None] - xy[:, 1:]) * scale).astype(float), axis=1) / 2
    # Surface brightness is the flux per pixel area (npix^-2 in stamp units).
    return np.einsum("k,ki,kj->ij", flux * npix**2, fy, fx)


def _bulge_pixels(p: GalaxyParams, npix: int, oversample: int, xs: np.ndarray) -> np.ndarray:
    """Pixel-averaged bulge: the pixels within 3 px of its centre are resampled on a
    15×15 grid, and the (up to 2×2) pixels touching the centre on 45×45 (the cusp)."""
    sub = _sersic(xs[None, :], xs[:, None], p).reshape(npix, oversample, npix, oversample).mean((1, 3))
    yc, xc = p.center[1] * npix + (npix - 1) / 2, p.center[0] * npix + (npix - 1) / 2
    ci, cj = int(round(yc)), int(round(xc))
    for i in range(max(ci - 3, 0), min(ci + 4, npix)):
        for j in range(max(cj - 3, 0), min(cj + 4, npix)):
            fine = 45 if abs(i - yc) <= 1 and abs(j - xc) <= 1 else 15
            offs = ((np.arange(fine) + 0.5) / fine - 0.5) / npix
            y0, x0 = (i - (npix - 1) / 2) / npix, (j - (npix - 1) / 2) / npix
            sub[i, j] = _sersic(x0 + offs[None, :], y0 + offs[:, None], p).mean()
    return sub


def _render_one(p: GalaxyParams, npix: int, oversample: int) -> np.ndarray:
    xs = _coords(npix, oversample)
    x, y = xs[None, :], xs[:, None]
    pool = lambda a: a.reshape(npix, oversample, npix, oversample).mean((1, 3))  # noqa: E731
    light = _bulge_pixels(p, npix, oversample, xs) if p.bulge_flux else np.zeros((npix, npix))
    if p.disk_flux or p.bar_flux:
        light = light + pool(_disk(x, y, p))
    light = light + _pixel_gaussians(p.clump_xy, p.clump_sigma, p.clump_flux, npix)
    if p.dust_tau:
        light = light * pool(_dust(x, y, p))
    return light


def render(params: GalaxyParams, npix: int, *, oversample: int = 3, taper: bool = True,
           normalize: bool = True) -> np.ndarray:
    """Render a galaxy.

    Args:
      params: the galaxy.
      npix: stamp side in pixels.
      oversample: sub-pixel samples per pixel side for the smooth components.
      taper: multiply by a cos² window from 0.42 to 0.5 stamp units from the centre, so
        the stamp edge is dark (the lens operator extends the source by zeros).
      normalize: scale the brightest pixel to `params.peak`; otherwise return the
        surface brightness in flux per stamp area (flux / npix⁻² per pixel).

    Returns:
      float32 [npix, npix], non-negative.
    """
    if npix < 4 or oversample < 1:
        raise ValueError(f"need npix >= 4 and oversample >= 1, got npix={npix}, oversample={oversample}")
    image = _render_one(params, npix, oversample)
    image = image + _pixel_gaussians(params.tail_xy, params.tail_sigma, params.tail_flux, npix)
    if params.companion is not None:
        comp = _render_one(params.companion, npix, oversample)
        image = image + comp * (params.companion.flux_ratio * image.sum() / max(comp.sum(), 1e-300))
    if taper:
        xs = (np.arange(npix) - (npix - 1) / 2) / npix
        r = np.hypot(xs[None, :], xs[:, None])
        window = np.cos(np.clip((r - 0.42) / 0.08, 0, 1) * np.pi / 2) ** 2
        image = image * np.where(r < 0.42, 1.0, np.where(r < 0.5, window, 0.0))
    if normalize:
        image = image * (params.peak / image.max())
    return np.maximum(image, 0).astype(np.float32)
