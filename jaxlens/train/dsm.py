"""Denoising score matching loss under the VE SDE (Adam et al. 2022, eq. 3)."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxlens.sde import VESDE

# apply_fn(params, x [B,H,W,C], sigma [B], *, train, rngs) -> ε_θ [B,H,W,C]
ApplyFn = Callable[..., jax.Array]


def dsm_loss(
    params: Any,
    apply_fn: ApplyFn,
    key: jax.Array,
    x0: jax.Array,
    sde: VESDE,
    *,
    t_min: float = 1e-5,
    train: bool = True,
) -> jax.Array:
    """E_t E_z ||ε_θ(x0 + σ(t) z, σ(t)) + z||², summed over pixels, averaged over the batch.

    With s_θ = ε_θ/σ this is σ(t)²·||s_θ − ∇ log p(x_t|x0)||², i.e. score matching with the
    usual λ(t) = σ(t)² weighting.

    Args:
      params: network parameters.
      apply_fn: the network; returns ε_θ.
      key: PRNG key; split into times, noise and dropout.
      x0: [B, H, W, C] clean images.
      sde: the VE SDE.
      t_min: smallest diffusion time drawn (t ~ U(t_min, 1)).
      train: passed to the network (dropout on/off).

    Returns:
      Scalar loss.
    """
    if x0.ndim != 4:
        raise ValueError(f"dsm_loss expects images [B, H, W, C], got shape {x0.shape}")
    k_t, k_z, k_drop = jax.random.split(key, 3)
    t = jax.random.uniform(k_t, (x0.shape[0],), minval=t_min, maxval=1.0)
    xt, z = sde.perturb(k_z, x0, t)
    eps = apply_fn(params, xt, sde.sigma(t), train=train, rngs={"dropout": k_drop})
    per_example = jnp.sum(jnp.square(eps + z), axis=(1, 2, 3))
    return jnp.mean(per_example)
