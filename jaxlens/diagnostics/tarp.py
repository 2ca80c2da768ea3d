"""TARP coverage test (Lemos et al. 2023, "Sampling-based accuracy testing of posterior estimators").

For each simulation i with truth θ*_i, posterior samples θ_ij (j = 1…n) and a
random reference point r_i, let k_i be the number of samples closer to r_i
than θ*_i is. The credible region of level α is the ball around r_i holding a
fraction α of the posterior mass; θ*_i falls inside it iff f_i < α, with
f_i = k_i/n. The expected coverage probability is ECP(α) = mean_i [f_i < α],
and an accurate posterior gives ECP(α) = α for every α and every reference
distribution.

We break the ties of the discrete rank with the randomised probability integral
transform f_i = (k_i + u_i)/(n + 1), u_i ~ U(0, 1): if θ*_i is a draw from the
same posterior as the samples, f_i is then exactly uniform on [0, 1], so the
curve has no O(1/n) offset at α = 0 or 1 and its sup-deviation from the
diagonal follows the Kolmogorov–Smirnov law in the number of simulations.

Reading the curve (Euclidean distance, references uniform over the truths'
bounding box): an over-confident (under-dispersed) posterior mostly lies below
the diagonal, an under-confident (over-dispersed) one above it, and a biased
one anywhere. `coverage_bias` = ∫ (ECP − α) dα = ½ − mean f summarises the
direction: < 0 over-confident, > 0 under-confident.

With `n_references` > 1 every simulation is tested against several reference
points and ECP(α) is averaged over them. Each reference draw alone gives an
unbiased curve, so the average is unbiased too; for image-sized D the f_i of
different references are only weakly correlated, so averaging shrinks the
scatter that one reference per simulation leaves (KS-like, ~1.36/√n_sims at
95 %). The bootstrap still resamples whole simulations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "coverage_bias",
    "max_calibration_error",
    "tarp_bootstrap",
    "tarp_coverage",
    "tarp_statistic",
    "tarp_summary",
]


def _as_key(key) -> jax.Array:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single typed PRNG key, got shape {key.shape}")
        return key
    raise ValueError("key must be an int seed or a typed key from jax.random.key(seed)")


def _flatten(samples, truths) -> tuple[jax.Array, jax.Array]:
    s = jnp.asarray(samples)
    t = jnp.asarray(truths)
    if s.ndim < 3:
        raise ValueError(f"samples must be [n_sims, n_samples, D...], got shape {s.shape}")
    if t.shape != (s.shape[0],) + s.shape[2:]:
        raise ValueError(
            f"truths must be [n_sims, D...] = {(s.shape[0],) + s.shape[2:]} to match samples {s.shape}, "
            f"got {t.shape}"
        )
    if s.shape[0] < 2 or s.shape[1] < 1:
        raise ValueError(f"need at least 2 simulations and 1 sample each, got samples {s.shape}")
    dtype = jnp.result_type(float, s.dtype, t.dtype)
    return s.reshape(s.shape[:2] + (-1,)).astype(dtype), t.reshape(t.shape[0], -1).astype(dtype)


def _scale(truths: jax.Array, norm: bool) -> tuple[jax.Array, jax.Array]:
    lo, hi = truths.min(axis=0), truths.max(axis=0)
    width = jnp.where(hi > lo, hi - lo, 1.0)  # a constant dimension carries no scale
    if not norm:
        return jnp.zeros_like(lo), jnp.ones_like(lo)
    return lo, width


@jax.jit
def _rank_fraction(samples, truths, references, lo, width, u):
    def one(args):
        s, t, r, v = args
        d_s = jnp.sqrt(jnp.sum(jnp.square((s - lo) / width - r), axis=-1))
        d_t = jnp.sqrt(jnp.sum(jnp.square((t - lo) / width - r)))
        k = jnp.sum(d_s < d_t)
        return (k + v) / (s.shape[0] + 1)

    # lax.map bounds memory to a few simulations' samples at a time (image-sized D).
    return jax.lax.map(one, (samples, truths, references, u), batch_size=8)


def tarp_statistic(samples, truths, *, key, norm: bool = True, references=None) -> jax.Array:
    """The per-simulation fraction f_i whose empirical CDF is the TARP curve.

    Args:
      samples: posterior samples [n_sims, n_samples, D...] (trailing axes,
        e.g. H, W, C of images, are flattened).
      truths: true values [n_sims, D...].
      key: typed PRNG key (jax.random.key) or int seed, for the references and
        the rank tie-breaking.
      norm: rescale every dimension by the range of the truths before
        measuring distances (the TARP paper's normalisation).
      references: optional reference points [n_sims, D...], in the normalised
        space when norm=True. Default: uniform over the truths' bounding box.

    Returns:
      f [n_sims] in [0, 1].
    """
    s, t = _flatten(samples, truths)
    lo, width = _scale(t, norm)
    k_ref, k_u = jax.random.split(_as_key(key))
    if references is None:
        box_lo, box_w = ((t.min(axis=0) - lo) / width, (t.max(axis=0) - t.min(axis=0)) / width)
        r = box_lo + box_w * jax.random.uniform(k_ref, t.shape, t.dtype)
    else:
        r = jnp.asarray(references, t.dtype)
        if r.size != t.size:
            raise ValueError(f"references must match truths {tuple(jnp.shape(truths))}, got {r.shape}")
        r = r.reshape(t.shape)
    u = jax.random.uniform(k_u, (t.shape[0],), t.dtype)
    return _rank_fraction(s, t, r, lo, width, u)


def _statistics(samples, truths, key, norm, references, n_references: int) -> jax.Array:
    """f [n_references, n_sims]: `tarp_statistic` for independent reference draws."""
    if int(n_references) != n_references or n_references < 1:
        raise ValueError(f"n_references must be a positive integer, got {n_references}")
    if references is not None and n_references != 1:
        raise ValueError("give either explicit references or n_references > 1, not both")
    keys = [_as_key(key)] if n_references == 1 else jax.random.split(_as_key(key), int(n_references))
    return jnp.stack([tarp_statistic(samples, truths, key=k, norm=norm, references=references) for k in keys])


def _alpha_grid(n_alpha: int) -> jax.Array:
    if int(n_alpha) != n_alpha or n_alpha < 1:
        raise ValueError(f"n_alpha must be a positive integer, got {n_alpha}")
    return jnp.linspace(0.0, 1.0, int(n_alpha) + 1)


def tarp_coverage(
    samples, truths, *, key, n_alpha: int = 100, norm: bool = True, references=None, n_references: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """TARP expected coverage probability against credibility level.

    Args:
      samples: [n_sims, n_samples, D...] posterior samples.
      truths: [n_sims, D...] true values.
      key: typed PRNG key or int seed.
      n_alpha: number of α intervals; the grid has n_alpha + 1 points on [0, 1].
      norm: see `tarp_statistic`.
      references: see `tarp_statistic`.
      n_references: reference draws per simulation, averaged (module docstring).

    Returns:
      (alpha [n_alpha+1], ecp [n_alpha+1]) as numpy float arrays; ecp(0) = 0
      and ecp(1) = 1.
    """
    alpha = _alpha_grid(n_alpha)
    f = _statistics(samples, truths, key, norm, references, n_references)
    ecp = jnp.mean(f[..., None] < alpha, axis=(0, 1))
    return np.asarray(alpha), np.asarray(ecp)


def tarp_bootstrap(
    samples,
    truths,
    *,
    key,
    n_alpha: int = 100,
    norm: bool = True,
    n_bootstrap: int = 100,
    references=None,
    n_references: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TARP curve with a bootstrap over simulations.

    The simulations are resampled with replacement `n_bootstrap` times (the
    references stay attached to their simulation). Arguments as in
    `tarp_coverage`.

    Returns:
      (alpha [n_alpha+1], ecp mean [n_alpha+1], ecp std [n_alpha+1]).
    """
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be an integer ≥ 2, got {n_bootstrap}")
    alpha = _alpha_grid(n_alpha)
    k_stat, k_boot = jax.random.split(_as_key(key))
    f = _statistics(samples, truths, k_stat, norm, references, n_references)
    idx = jax.random.randint(k_boot, (int(n_bootstrap), f.shape[1]), 0, f.shape[1])
    ecp = jnp.mean(f[:, idx, None] < alpha, axis=(0, 2))
    return np.asarray(alpha), np.asarray(ecp.mean(axis=0)), np.asarray(ecp.std(axis=0, ddof=1))


def _check_curve(alpha, ecp) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alpha, dtype=np.float64)
    e = np.asarray(ecp, dtype=np.float64)
    if a.ndim != 1 or a.shape != e.shape or a.size < 2:
        raise ValueError(f"alpha and ecp must be 1-D of equal length ≥ 2, got {a.shape}, {e.shape}")
    return a, e


def max_calibration_error(alpha, ecp) -> float:
    """Largest distance of the curve from the diagonal, max |ECP(α) − α|."""
    a, e = _check_curve(alpha, ecp)
    return float(np.max(np.abs(e - a)))


def coverage_bias(alpha, ecp) -> float:
    """Signed area ∫ (ECP − α) dα (trapezoid rule): < 0 over-confident, > 0 under-confident."""
    a, e = _check_curve(alpha, ecp)
    d = e - a
    return float(np.sum(0.5 * (d[1:] + d[:-1]) * np.diff(a)))


def tarp_summary(samples, truths, *, key, n_references: int = 64, n_bootstrap: int = 200,
                 n_alpha: int = 50) -> dict:
    """The coverage test of image posteriors, with its own noise floor, as the studies report it.

    Samples 1..S−1 of each simulation are the posterior; sample 0 stands in for the truth in a second
    curve, the noise floor: the deviation a perfectly calibrated posterior would show with these many
    simulations, samples and references. Distances are plain Euclidean (norm=False): rescaling every
    pixel by the truths' range, the TARP paper's default, blows up the background pixels where every
    truth is ~0, and any posterior then looks under-confident.

    Args:
      samples: [n_sims, S, D...] with S ≥ 3; truths: [n_sims, D...].
      key: typed PRNG key or int seed (the same references for both curves).

    Returns:
      dict with max_dev (max |ECP − α|), max_dev_std (its bootstrap std over simulations), floor_dev,
      signed_area (`coverage_bias`: < 0 over-confident), and the curves `curve` and `floor`, each
      (alpha, ecp, ecp std).
    """
    samples = np.asarray(samples)
    if samples.ndim < 3 or samples.shape[1] < 3:
        raise ValueError(f"need samples [n_sims, S >= 3, D...], got shape {samples.shape}")
    kw = dict(key=key, n_alpha=n_alpha, norm=False, n_references=n_references, n_bootstrap=n_bootstrap)
    curve = tarp_bootstrap(samples[:, 1:], truths, **kw)
    floor = tarp_bootstrap(samples[:, 1:], samples[:, 0], **kw)
    worst = int(np.argmax(np.abs(curve[1] - curve[0])))
    return {"max_dev": max_calibration_error(curve[0], curve[1]), "max_dev_std": float(curve[2][worst]),
            "floor_dev": max_calibration_error(floor[0], floor[1]), "signed_area": coverage_bias(curve[0], curve[1]),
            "curve": curve, "floor": floor}
