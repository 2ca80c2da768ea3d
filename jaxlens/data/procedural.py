"""Procedural galaxies: the embedded default training set.

Each galaxy is drawn from an integer seed (``numpy.random.default_rng(seed)``) by
`draw_params` as a `GalaxyParams` (see `jaxlens.data.profiles` for the light profiles)
and rendered noise-free. Lengths are in units of the stamp side, so one seed gives the
same galaxy at any npix, filling the stamp like a PROBES cutout: disks have scale lengths
0.065-0.12 of the side and stay visible out to ~0.3-0.45 of it.

The mix (fractions of seeds): spirals 50% (2-4 log-spiral arms of pitch 12-32°, 30%
barred, 4-24 clumps mostly on the arms, flocculent texture), lenticulars 10%,
ellipticals 8% (Sérsic n 2-4.5), irregulars 12% (clumpy, lopsided, no bulge to speak
of) and mergers 20% (a spiral/S0/elliptical with a smaller offset companion, 1-2 tidal
tails and a lopsided disk). Inclinations are isotropic (cos i uniform in [0.08, 1]).
Bulge n is 1-4 in disks; the bulge flux is capped so that its mean surface brightness
within 0.016 of the stamp is at most 0.7-2.5 times the disk's central one, so disks and
arms stay visible on a linear scale. Images are scaled so the brightest pixel is `peak`,
drawn uniformly in [0.7, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from jaxlens.data.profiles import GalaxyParams, render, sersic_b

__all__ = ["GalaxyParams", "KINDS", "VALIDATION_SEED_START", "HELD_OUT_SEED_START", "draw_params",
           "procedural_galaxy", "procedural_galaxies"]

# Seed ranges: training sets use seeds below VALIDATION_SEED_START, validation sets the
# range above it, and the held-out lenses used to test sampling start at
# HELD_OUT_SEED_START, so no galaxy the prior was trained or validated on is ever a test source.
VALIDATION_SEED_START = 500_000
HELD_OUT_SEED_START = 1_000_000

KINDS = ("spiral", "lenticular", "elliptical", "irregular", "merger")
_KIND_P = (0.50, 0.10, 0.08, 0.12, 0.20)
# Resolution scale (stamp units) at which the bulge is compared with the disk: the
# mean bulge surface brightness inside this radius is capped at a drawn multiple of the
# disk's central surface brightness, so that disks and arms stay visible on a linear
# scale (the brightest pixel is not a lone bulge cusp).
_CORE = 0.016


def _sersic_enclosed(n: float, x: float) -> float:
    """Regularised lower incomplete gamma P(2n, x): the Sérsic light fraction inside R with x = b (R/r_e)^(1/n)."""
    a = 2 * n
    term = total = 1.0 / a
    k = 0
    while term > 1e-12 * total and k < 500:
        k += 1
        term *= x / (a + k)
        total += term
    return float(math.exp(a * math.log(x) - x - math.lgamma(a)) * total) if x > 0 else 0.0


def _cap_bulge(bulge_flux, disk_flux, *, n, r_e, q_bulge, r_d, q_disk, ratio) -> float:
    """Largest bulge flux ≤ bulge_flux whose mean SB within _CORE is ≤ ratio × the disk's central SB."""
    frac = _sersic_enclosed(n, sersic_b(n) * (_CORE / r_e) ** (1 / n))
    core_sb_per_flux = frac / (math.pi * q_bulge * _CORE**2)
    disk_sb = disk_flux / (2 * math.pi * r_d**2 * q_disk)
    return min(bulge_flux, ratio * disk_sb / core_sb_per_flux)


def _empty() -> np.ndarray:
    return np.zeros((0,), np.float64)


def _spiral_clumps(rng, *, r_d, n_arms, pitch, phase, arm_start, frac_on_arms, count, q, pa, center):
    """Clump centres in the sky plane: on the arms (with scatter) or anywhere in the disk."""
    radius = np.clip(rng.gamma(2.0, r_d, count), 0.4 * r_d, 3.8 * r_d)
    on_arm = rng.random(count) < frac_on_arms
    arm = rng.integers(0, max(n_arms, 1), count)
    phi_arm = (phase + 2 * np.pi * arm) / max(n_arms, 1) + np.log(radius / arm_start) / math.tan(pitch)
    phi = np.where(on_arm, phi_arm + rng.normal(0, 0.12, count), rng.uniform(0, 2 * np.pi, count))
    xd, yd = radius * np.cos(phi), radius * np.sin(phi) * q
    c, s = math.cos(pa), math.sin(pa)
    return np.stack([center[0] + c * xd - s * yd, center[1] + s * xd + c * yd], -1)


def _irregular_clumps(rng, *, r_d, count, q, pa, center):
    """Clumps gathered in 2-4 star-forming complexes scattered over the disk."""
    ncx = int(rng.integers(2, 5))
    radius = r_d * rng.uniform(0.2, 1.8, ncx)
    phi = rng.uniform(0, 2 * np.pi, ncx)
    which = rng.integers(0, ncx, count)
    xd = radius[which] * np.cos(phi[which]) + rng.normal(0, 0.35 * r_d, count)
    yd = (radius[which] * np.sin(phi[which]) + rng.normal(0, 0.35 * r_d, count)) * q
    c, s = math.cos(pa), math.sin(pa)
    return np.stack([center[0] + c * xd - s * yd, center[1] + s * xd + c * yd], -1)


def _tidal_tail(rng, *, r_d, center, flux):
    """A curved, fading stream of overlapping Gaussians leaving the galaxy."""
    m = 40
    start, sweep = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.1) * np.pi * rng.choice([-1, 1])
    tpar = np.linspace(0, 1, m)
    phi = start + sweep * tpar
    radius = r_d * rng.uniform(1.2, 2.0) * np.exp(abs(sweep) * tpar * math.tan(math.radians(rng.uniform(15, 30))))
    xy = np.stack([center[0] + radius * np.cos(phi), center[1] + radius * np.sin(phi)], -1)
    sigma = r_d * (0.25 + 0.35 * tpar)
    w = np.exp(-2.5 * tpar)
    return xy, sigma, flux * w / w.sum()


def draw_params(rng: np.random.Generator, *, kind: str | None = None) -> GalaxyParams:
    """Draw one galaxy's parameters.

    Args:
      rng: a numpy Generator; the draws depend only on its state.
      kind: force a morphology from `KINDS`; default: drawn with the built-in mix.

    Returns:
      A `GalaxyParams`.
    """
    return _draw(rng, kind, companion=False)


def _draw(rng: np.random.Generator, kind: str | None, *, companion: bool) -> GalaxyParams:
    if kind is None:
        kind = str(rng.choice(KINDS, p=_KIND_P))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    main_kind = str(rng.choice(["spiral", "spiral", "lenticular", "elliptical"])) if kind == "merger" else kind
    size = 0.65 if companion else 1.0
    center = tuple(float(v) for v in np.clip(rng.normal(0, 0.015, 2), -0.04, 0.04))
    pa = rng.uniform(0, np.pi)
    inclination = math.acos(rng.uniform(0.08, 1.0))
    thickness = rng.uniform(0.1, 0.22)
    r_d = size * math.exp(rng.uniform(math.log(0.065), math.log(0.12)))
    m = rng.choice([2, 3, 4], p=[0.6, 0.25, 0.15])
    p = dict(kind=kind, center=center, pa=pa, inclination=inclination, thickness=thickness,
             peak=rng.uniform(0.7, 1.0), bulge_flux=0.0, sersic_n=1.0, r_e=0.2 * r_d, q_bulge=1.0,
             disk_flux=1.0, r_d=r_d, n_arms=0, pitch=math.radians(20.0), arm_strength=0.0,
             arm_sharpness=2.0, arm_phase=rng.uniform(0, 2 * np.pi), arm_start=r_d,
             bar_flux=0.0, bar_length=r_d, bar_q=0.35, texture=0.0,
             lopsided=rng.uniform(0.0, 0.15), lopsided_phase=rng.uniform(0, 2 * np.pi), dust_tau=0.0)
    q_disk = math.sqrt(math.cos(inclination) ** 2 + (thickness * math.sin(inclination)) ** 2)
    n_clumps, clump_frac, on_arms = 0, 0.0, 0.0

    if main_kind == "spiral":
        bt = rng.uniform(0.05, 0.4)
        p.update(bulge_flux=bt, disk_flux=1 - bt, sersic_n=rng.uniform(1.0, 4.0),
                 r_e=r_d * rng.uniform(0.2, 0.5), q_bulge=max(q_disk, rng.uniform(0.65, 0.95)),
                 n_arms=int(m), pitch=math.radians(rng.uniform(12, 32)) * rng.choice([-1, 1]),
                 arm_strength=rng.uniform(0.45, 0.85), arm_sharpness=rng.uniform(1.5, 4.0),
                 arm_start=r_d * rng.uniform(0.5, 1.1), texture=rng.uniform(0.15, 0.4))
        # Arms and clumps blur into the disk when seen edge-on (line-of-sight mixing).
        p["arm_strength"] *= min(1.0, 2 * math.cos(inclination))
        if rng.random() < 0.3:
            p.update(bar_flux=rng.uniform(0.05, 0.15), bar_length=p["arm_start"] * rng.uniform(0.9, 1.2),
                     bar_q=rng.uniform(0.25, 0.45))
        n_clumps, clump_frac, on_arms = int(rng.integers(4, 25)), rng.uniform(0.04, 0.15), 0.75
    elif main_kind == "lenticular":
        bt = rng.uniform(0.25, 0.6)
        p.update(bulge_flux=bt, disk_flux=1 - bt, sersic_n=rng.uniform(2.0, 4.0),
                 r_e=r_d * rng.uniform(0.25, 0.5), q_bulge=max(q_disk, rng.uniform(0.6, 0.95)),
                 texture=rng.uniform(0.0, 0.06))
    elif main_kind == "elliptical":
        p.update(bulge_flux=1.0, disk_flux=0.0, sersic_n=rng.uniform(2.0, 4.5),
                 r_e=size * math.exp(rng.uniform(math.log(0.07), math.log(0.16))),
                 q_bulge=rng.uniform(0.45, 1.0), lopsided=0.0)
    else:  # irregular
        bt = rng.uniform(0.0, 0.1)
        p.update(bulge_flux=bt, disk_flux=1 - bt, sersic_n=1.0, r_e=r_d * 0.4, q_bulge=0.8,
                 texture=rng.uniform(0.4, 0.75), lopsided=rng.uniform(0.3, 0.7), thickness=rng.uniform(0.3, 0.6))
        n_clumps, clump_frac = int(rng.integers(8, 30)), rng.uniform(0.15, 0.4)
    q_disk = math.sqrt(math.cos(inclination) ** 2 + (p["thickness"] * math.sin(inclination)) ** 2)
    if 0 < p["bulge_flux"] < 1:
        p["bulge_flux"] = _cap_bulge(p["bulge_flux"], p["disk_flux"], n=p["sersic_n"], r_e=p["r_e"],
                                     q_bulge=p["q_bulge"], r_d=r_d, q_disk=q_disk, ratio=rng.uniform(0.7, 2.5))
    if kind == "merger":
        p["lopsided"] = rng.uniform(0.2, 0.5) if p["disk_flux"] else 0.0
    if p["disk_flux"] > 0 and math.degrees(inclination) > 68:
        p["dust_tau"] = rng.uniform(0.4, 1.6)

    # Flocculent texture: a Gaussian random field of M plane waves with wavelengths
    # 0.03-0.2 of the stamp and a red spectrum (amplitude ∝ wavelength), so large patches
    # dominate and the finest ripples span a few pixels at npix = 64.
    mwaves = 64
    lmin, lmax = (0.05, 0.25) if main_kind == "irregular" else (0.03, 0.2)
    lam = size * np.exp(rng.uniform(math.log(lmin), math.log(lmax), mwaves))
    ang = rng.uniform(0, 2 * np.pi, mwaves)
    p["texture_k"] = (2 * np.pi / lam)[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
    p["texture_amp"] = lam / np.sqrt(np.sum(lam**2) / 2)
    p["texture_phase"] = rng.uniform(0, 2 * np.pi, mwaves)

    if n_clumps and main_kind == "irregular":
        p["clump_xy"] = _irregular_clumps(rng, r_d=r_d, count=n_clumps, q=q_disk, pa=pa, center=center)
    elif n_clumps:
        p["clump_xy"] = _spiral_clumps(rng, r_d=r_d, n_arms=p["n_arms"], pitch=p["pitch"],
                                       phase=p["arm_phase"], arm_start=p["arm_start"], frac_on_arms=on_arms,
                                       count=n_clumps, q=q_disk, pa=pa, center=center)
    if n_clumps:
        p["clump_sigma"] = size * rng.uniform(0.006, 0.016, n_clumps)
        w = rng.lognormal(0, 0.7, n_clumps)
        p["clump_flux"] = clump_frac * p["disk_flux"] * w / w.sum()
    else:
        p.update(clump_xy=np.zeros((0, 2)), clump_sigma=_empty(), clump_flux=_empty())

    p.update(tail_xy=np.zeros((0, 2)), tail_sigma=_empty(), tail_flux=_empty())
    if kind == "merger" and not companion:
        comp = _draw(rng, str(rng.choice(["spiral", "elliptical", "irregular"])), companion=True)
        dist, ang = rng.uniform(0.17, 0.3), rng.uniform(0, 2 * np.pi)
        offset = (float(center[0] + dist * math.cos(ang)), float(center[1] + dist * math.sin(ang)))
        shift = np.subtract(offset, comp.center)
        p["companion"] = dataclasses.replace(comp, center=offset, clump_xy=comp.clump_xy + shift,
                                             flux_ratio=rng.uniform(0.1, 0.5), dust_tau=0.0)
        tails = [_tidal_tail(rng, r_d=r_d, center=center, flux=rng.uniform(0.04, 0.12))
                 for _ in range(int(rng.integers(1, 3)))]
        p.update(tail_xy=np.concatenate([t[0] for t in tails]),
                 tail_sigma=np.concatenate([t[1] for t in tails]),
                 tail_flux=np.concatenate([t[2] for t in tails]))
    return GalaxyParams(**p)


def procedural_galaxy(seed: int, npix: int, *, channel_axis: bool = False, oversample: int = 3,
                      **overrides) -> np.ndarray:
    """The galaxy of one integer seed.

    Args:
      seed: non-negative integer; the same seed gives the same galaxy at any npix.
      npix: stamp side in pixels.
      channel_axis: return [npix, npix, 1] instead of [npix, npix].
      oversample: sub-pixel samples per pixel side.
      **overrides: `GalaxyParams` fields to replace after drawing (e.g. n_arms=0), or
        `kind=` to force a morphology.

    Returns:
      float32 [npix, npix] (or [npix, npix, 1]), peak = params.peak in [0.7, 1].
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    kind = overrides.pop("kind", None)
    params = draw_params(np.random.default_rng(int(seed)), kind=kind)
    if overrides:
        params = dataclasses.replace(params, **overrides)
    image = render(params, npix, oversample=oversample)
    return image[..., None] if channel_axis else image


def procedural_galaxies(seeds: Iterable[int] | tuple[int, int], npix: int, **options) -> np.ndarray:
    """Stack of procedural galaxies.

    Args:
      seeds: an iterable of seeds, or a (start, count) pair meaning range(start, start+count).
        A pair must be a tuple; pass a list for two explicit seeds.
      npix: stamp side in pixels.
      **options: passed to `procedural_galaxy`.

    Returns:
      float32 [N, npix, npix] (or [N, npix, npix, 1] with channel_axis=True).
    """
    if isinstance(seeds, tuple) and len(seeds) == 2:
        seeds = range(seeds[0], seeds[0] + seeds[1])
    seeds = list(seeds)
    if not seeds:
        raise ValueError("no seeds given")
    return np.stack([procedural_galaxy(s, npix, **options) for s in seeds])
