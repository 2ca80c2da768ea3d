"""Variance-exploding SDE and the step-count heuristics of Song & Ermon (2020).

The forward process is dx = sqrt(g²(t)) dw on t ∈ [0, 1], with
σ(t) = σ_min (σ_max/σ_min)^t and g²(t) = dσ²/dt = 2 σ(t)² log(σ_max/σ_min).
"""

from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "VESDE",
    "sigma_max_from_data",
    "stable_steps",
    "step_confidence",
    "steps_for_confidence",
]


@flax.struct.dataclass
class VESDE:
    """Variance-exploding SDE with a geometric noise schedule.

    Attributes:
      sigma_min: noise level at t = 0 (same units as the data).
      sigma_max: noise level at t = 1; should be the largest pairwise distance in
        the training set (Technique 1).
    """

    sigma_min: float = flax.struct.field(pytree_node=False, default=0.01)
    sigma_max: float = flax.struct.field(pytree_node=False, default=50.0)

    def __post_init__(self):
        if not (self.sigma_min > 0 and self.sigma_max > self.sigma_min):
            raise ValueError(
                f"VESDE needs 0 < sigma_min < sigma_max, got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )

    @property
    def log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: jax.typing.ArrayLike) -> jax.Array:
        """σ(t) = σ_min (σ_max/σ_min)^t."""
        t = jnp.asarray(t)
        return self.sigma_min * jnp.exp(t * self.log_ratio)

    def g2(self, t: jax.typing.ArrayLike) -> jax.Array:
        """g(t)² = dσ²/dt = 2 log(σ_max/σ_min) σ(t)²."""
        return 2.0 * self.log_ratio * self.sigma(t) ** 2

    def t_of_sigma(self, sigma: jax.typing.ArrayLike) -> jax.Array:
        """Inverse of `sigma`: the time at which the marginal noise is `sigma`."""
        return jnp.log(jnp.asarray(sigma) / self.sigma_min) / self.log_ratio

    def perturb(self, key: jax.Array, x0: jax.typing.ArrayLike, t: jax.typing.ArrayLike):
        """Samples x_t ~ N(x0, σ(t)² I). `t` broadcasts against the leading axis of x0.

        Returns:
          (x_t, z) where z is the standard normal noise used.
        """
        x0 = jnp.asarray(x0)
        z = jax.random.normal(key, x0.shape, x0.dtype)
        s = self.sigma(t).astype(x0.dtype)
        s = jnp.reshape(s, s.shape + (1,) * (x0.ndim - s.ndim))
        return x0 + s * z, z


def sigma_max_from_data(images: jax.typing.ArrayLike, *, chunk: int = 256) -> float:
    """Largest pairwise Euclidean distance in a data set (Technique 1), computed exactly.

    Distances are formed block by block from the Gram matrix, so memory stays at
    O(chunk²) distances plus the data itself: a few thousand 256² images fit easily.

    Args:
      images: [N, ...] array of N images (any trailing shape).
      chunk: block size of the pairwise computation.

    Returns:
      max_{i,j} ||x_i - x_j||_2 as a Python float.
    """
    x = np.asarray(images)
    if x.ndim < 2 or x.shape[0] < 2:
        raise ValueError(f"sigma_max_from_data needs at least two images, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("sigma_max_from_data: images contain non-finite values")
    x = jnp.asarray(x.reshape(x.shape[0], -1), jnp.float32)
    # Centre first: distances are translation invariant, and it reduces the
    # cancellation in |a|² + |b|² - 2 a·b.
    x = x - jnp.mean(x, axis=0)
    sq = jnp.sum(x * x, axis=1)

    @jax.jit
    def block_max(a, sa, b, sb):
        d2 = sa[:, None] + sb[None, :] - 2.0 * (a @ b.T)
        return jnp.max(d2)

    n = x.shape[0]
    best = 0.0
    for i in range(0, n, chunk):
        a, sa = x[i : i + chunk], sq[i : i + chunk]
        for j in range(i, n, chunk):
            best = max(best, float(block_max(a, sa, x[j : j + chunk], sq[j : j + chunk])))
    return math.sqrt(max(best, 0.0))


def _std_normal_cdf(x: float) -> float:
    # erfc keeps full double precision in the tails, unlike 1 - erf.
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def step_confidence(
    n_steps: int, n_dims: int, sigma_min: float, sigma_max: float
) -> float:
    """Technique 2 (eq. 22): probability mass shared by consecutive noise levels.

    With the geometric ratio γ = (σ_max/σ_min)^(1/(N-1)),
    p(N) = Φ(√(2D)(γ−1) + 3γ) − Φ(√(2D)(γ−1) − 3γ), where D is the data dimension.
    """
    if n_steps < 2:
        raise ValueError(f"n_steps must be >= 2, got {n_steps}")
    if n_dims < 1:
        raise ValueError(f"n_dims must be >= 1, got {n_dims}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    gamma = math.exp(math.log(sigma_max / sigma_min) / (n_steps - 1))
    c = math.sqrt(2.0 * n_dims) * (gamma - 1.0)
    return _std_normal_cdf(c + 3.0 * gamma) - _std_normal_cdf(c - 3.0 * gamma)


def stable_steps(curvature: float, sigma_min: float, sigma_max: float) -> int:
    """Fewest Euler–Maruyama steps that keep a stiff linear term of the reverse drift stable.

    A likelihood term Aᵀ(y − A x)/(σ_n² + σ²) (eq. 19) has curvature up to λ = λ_max(AᵀA)
    /(σ_n² + σ²). With N uniform steps in t, a step moves x by g² Δt = 2 σ² log(σ_max/σ_min)/N
    times the drift, and explicit Euler stays stable while that times λ is below 2, i.e. for
    N > log(σ_max/σ_min) · λ_max(AᵀA) once σ ≫ σ_n. Below it, samples of strongly magnified
    lenses blow up. Pass `curvature` = λ_max(AᵀA) (`jaxlens.lensing.normal_operator_norm`).
    """
    if not curvature >= 0:
        raise ValueError(f"curvature must be >= 0, got {curvature}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    return max(2, math.floor(math.log(sigma_max / sigma_min) * curvature) + 1)


def steps_for_confidence(
    p: float, n_dims: int, sigma_min: float, sigma_max: float, *, max_steps: int = 10**7
) -> int:
    """Smallest N with step_confidence(N, ...) >= p (bisection; p(N) is increasing)."""
    if not 0 < p < 1:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    lo, hi = 2, 2
    while step_confidence(hi, n_dims, sigma_min, sigma_max) < p:
        lo, hi = hi, hi * 2
        if hi > max_steps:
            raise ValueError(f"no step count below {max_steps} reaches p={p}")
    while lo < hi:
        mid = (lo + hi) // 2
        if step_confidence(mid, n_dims, sigma_min, sigma_max) >= p:
            hi = mid
        else:
            lo = mid + 1
    return lo
