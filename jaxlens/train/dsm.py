"""Denoising score matching under the VE SDE (Adam et al. 2022, eq. 3), and the recipe's choices.

Two recipes share the network's output contract (ε_θ, with score = ε_θ / σ):

- score_sde's: t ~ U(t_min, 1), the loss ||ε_θ + z||², i.e. λ(σ) = σ² score matching.
- EDM-style (Karras et al. 2022): ln σ ~ N(ln σ_data + p_mean, p_std²), clipped to the SDE's range, and
  λ(σ) = σ²(σ² + σ_data²)/σ_data², which gives the preconditioned network's raw output a unit-variance
  target at every σ. It goes with an NCSNpp built with the same `sigma_data` (its c_in, c_skip, c_out).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxlens.sde import VESDE

# apply_fn(params, x [B,H,W,C], sigma [B], *, train, rngs) -> ε_θ [B,H,W,C]
ApplyFn = Callable[..., jax.Array]
# score_fn(x [H,W,C], t scalar) -> score [H,W,C]
ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]

NOISE_LEVELS = ("uniform_t", "lognormal")


@dataclasses.dataclass(frozen=True)
class DSMRecipe:
    """Which noise levels the loss draws and how it weights them.

    Attributes:
      noise_levels: 'uniform_t' (t ~ U(t_min, 1), score_sde) or 'lognormal' (EDM, around sigma_data).
      t_min: smallest diffusion time; also the lower clip of the log-normal σ.
      p_mean: log-normal: mean of ln(σ / sigma_data).
      p_std: log-normal: standard deviation of ln σ.
      sigma_data: > 0: EDM loss weighting (the network must be preconditioned with the same value);
        0: λ(σ) = σ².
    """

    noise_levels: str = "uniform_t"
    t_min: float = 1e-5
    p_mean: float = 0.0
    p_std: float = 2.0
    sigma_data: float = 0.0

    def __post_init__(self):
        if self.noise_levels not in NOISE_LEVELS:
            raise ValueError(f"noise_levels must be one of {NOISE_LEVELS}, got {self.noise_levels!r}")
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {self.t_min}")
        if self.sigma_data < 0 or not math.isfinite(self.sigma_data):
            raise ValueError(f"sigma_data must be >= 0 (0: no preconditioning), got {self.sigma_data}")
        if self.noise_levels == "lognormal" and not (self.sigma_data > 0 and self.p_std > 0):
            raise ValueError("lognormal noise levels need sigma_data > 0 and p_std > 0, "
                             f"got sigma_data={self.sigma_data}, p_std={self.p_std}")

    def sample_times(self, key: jax.Array, n: int, sde: VESDE) -> jax.Array:
        """n diffusion times t ∈ [t_min, 1] (σ = sde.sigma(t))."""
        if self.noise_levels == "uniform_t":
            return jax.random.uniform(key, (n,), minval=self.t_min, maxval=1.0)
        log_sigma = math.log(self.sigma_data) + self.p_mean + self.p_std * jax.random.normal(key, (n,))
        return jnp.clip(sde.t_of_sigma(jnp.exp(log_sigma)), self.t_min, 1.0)

    def weight(self, sigma: jax.Array) -> jax.Array:
        """Weight of ||ε_θ + z||² at noise σ, relative to λ(σ) = σ²."""
        if self.sigma_data > 0:
            return 1.0 + jnp.square(sigma / self.sigma_data)
        return jnp.ones_like(sigma)


def dsm_loss(
    params: Any,
    apply_fn: ApplyFn,
    key: jax.Array,
    x0: jax.Array,
    sde: VESDE,
    *,
    recipe: DSMRecipe = DSMRecipe(),
    train: bool = True,
) -> jax.Array:
    """E_σ E_z w(σ) ||ε_θ(x0 + σ z, σ) + z||², summed over pixels, averaged over the batch.

    With s_θ = ε_θ/σ, ||ε_θ + z||² = σ²·||s_θ − ∇ log p(x_t|x0)||²: score matching with λ(σ) = σ²
    times the recipe's weight w(σ).

    Args:
      params: network parameters.
      apply_fn: the network; returns ε_θ.
      key: PRNG key; split into times, noise and dropout.
      x0: [B, H, W, C] clean images.
      sde: the VE SDE.
      recipe: noise-level distribution and weighting.
      train: passed to the network (dropout on/off).

    Returns:
      Scalar loss.
    """
    if x0.ndim != 4:
        raise ValueError(f"dsm_loss expects images [B, H, W, C], got shape {x0.shape}")
    k_t, k_z, k_drop = jax.random.split(key, 3)
    t = recipe.sample_times(k_t, x0.shape[0], sde)
    xt, z = sde.perturb(k_z, x0, t)
    sigma = sde.sigma(t)
    eps = apply_fn(params, xt, sigma, train=train, rngs={"dropout": k_drop})
    per_example = jnp.sum(jnp.square(eps + z), axis=(1, 2, 3))
    return jnp.mean(recipe.weight(sigma) * per_example)


def validation_key(seed: int) -> jax.Array:
    """The noise key `bin/train` logs `validation_loss` with, so any checkpoint can be re-measured alike."""
    return jax.random.fold_in(jax.random.key(seed), 0x5A1)


def validation_loss(
    score_fn: ScoreFn, images: jax.Array, sde: VESDE, key: jax.Array, *, n_times: int = 12,
    t_min: float = 1e-5,
) -> dict[str, float]:
    """score_sde's DSM objective E_t ||σ s(x_t, t) + z||² on held-out images, by quadrature in t.

    The same measure for any recipe or parameterisation (it sees only the score), so runs of different
    recipes compare on it. t runs over the midpoints of `n_times` equal bins of [t_min, 1]; with a fixed
    `key` the noise is common to every checkpoint, so differences between checkpoints are not noise.

    Returns:
      `val_dsm` (all t) and `val_dsm_low` / `_mid` / `_high` (the three thirds of the t range: σ near
      σ_min, in between, near σ_max), each summed over pixels and averaged over images.
    """
    if images.ndim != 4 or n_times < 3:
        raise ValueError(f"need images [N, H, W, C] and n_times >= 3, got {images.shape}, {n_times}")
    ts = t_min + (1.0 - t_min) * (jnp.arange(n_times) + 0.5) / n_times
    keys = jax.random.split(key, n_times)

    @jax.jit
    def at_time(k, t):
        xt, z = sde.perturb(k, images, t)
        s = jax.vmap(score_fn, in_axes=(0, None))(xt, t)
        return jnp.mean(jnp.sum(jnp.square(sde.sigma(t) * s + z), axis=(1, 2, 3)))

    per_t = [float(at_time(k, t)) for k, t in zip(keys, ts)]
    thirds = [per_t[i * n_times // 3:(i + 1) * n_times // 3] for i in range(3)]
    out = {"val_dsm": sum(per_t) / n_times}
    out.update({f"val_dsm_{name}": sum(v) / len(v) for name, v in zip(("low", "mid", "high"), thirds)})
    return out
