"""Simulated lensing problems: held-out galaxies seen through random SIE + shear lenses.

Every simulated observation goes through `jaxlens.lensing.simulate` (render, then
Gaussian noise); this module only chooses the sources, lenses and keys:

  problem  = simulated_problem(key, source, lens, geometry, sigma_n)
  problems = held_out_problems(n, seed, geometry, sigma_n)      # for studies over many lenses
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlens.data import HELD_OUT_SEED_START, procedural_galaxy
from jaxlens.lensing import Geometry, LensParams, simulate

__all__ = ["Problem", "held_out_problems", "random_lenses", "simulated_problem", "STUDY_SOURCE_OFFSET"]

# Held-out seeds of the studies' sources, apart from the ones the default run and README use.
STUDY_SOURCE_OFFSET = 10_000


class Problem(NamedTuple):
    """A lensing observation with a known lens.

    Attributes:
      y: observation [h, w, C].
      sigma_n: noise std, a number or a map [h, w] / [h, w, C] (inf: unused pixel).
      lens: lens parameters.
      geometry: source, ray-tracing and detector grids.
      truth: the true source [H, W, C] when simulated, else None.
    """

    y: np.ndarray
    sigma_n: Any
    lens: LensParams
    geometry: Geometry
    truth: np.ndarray | None = None


def simulated_problem(
    key: jax.Array, source: np.ndarray, lens: LensParams, geometry: Geometry, sigma_n: float
) -> Problem:
    """Observes `source` [H, W] or [H, W, C] through the lens with Gaussian noise σ_n."""
    if not (np.isfinite(sigma_n) and sigma_n > 0):
        raise ValueError(f"sigma_n must be a finite number > 0, got {sigma_n}")
    source = np.asarray(source, np.float32)
    if source.ndim == 2:
        source = source[..., None]
    y = simulate(key, source, lens, geometry, sigma_n)
    return Problem(np.asarray(y), float(sigma_n), lens, geometry, source)


def random_lenses(n: int, seed: int) -> list[LensParams]:
    """SIE + shear lenses around the default: θ_E in [1, 1.5]″, |e| ≤ 0.2, |γ| ≤ 0.05, centre within 0.1″."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        e, phi, g, psi = rng.uniform(0, 0.2), rng.uniform(0, np.pi), rng.uniform(0, 0.05), rng.uniform(0, np.pi)
        cx, cy = rng.uniform(-0.1, 0.1, size=2)
        out.append(LensParams(float(rng.uniform(1.0, 1.5)), float(e * np.cos(2 * phi)), float(e * np.sin(2 * phi)),
                              float(cx), float(cy), float(g * np.cos(2 * psi)), float(g * np.sin(2 * psi))))
    return out


def held_out_problems(n: int, seed: int, geometry: Geometry, sigma_n: float, sources=None) -> list[Problem]:
    """n observations of held-out galaxies through `random_lenses(n, seed + 1)`.

    Problem k uses the noise key fold_in(key(seed), k) and, unless `sources` [n, H, W(, C)] is
    given, the procedural galaxy of seed HELD_OUT_SEED_START + STUDY_SOURCE_OFFSET + k.
    """
    lenses = random_lenses(n, seed + 1)
    if sources is None:
        sources = [procedural_galaxy(HELD_OUT_SEED_START + STUDY_SOURCE_OFFSET + k, geometry.src_npix)
                   for k in range(n)]
    key = jax.random.key(seed)
    return [simulated_problem(jax.random.fold_in(key, k), src, lens, geometry, sigma_n)
            for k, (src, lens) in enumerate(zip(sources, lenses))]
