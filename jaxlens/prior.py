"""A trained score network as a prior score `score_fn(x, t)`, and loading it from a checkpoint."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxlens.sde import VESDE

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def network_score_fn(model: Any, params: Any, sde: VESDE) -> ScoreFn:
    """score(x, t) = ε_θ(x, σ(t)) / σ(t) for ONE state x [H, W, C] and a scalar t.

    The batch axis is added here, so `jax.vmap` over chains becomes one batched
    network call.
    """

    def score(x: jax.Array, t: jax.Array) -> jax.Array:
        sigma = sde.sigma(t)
        eps = model.apply({"params": params}, x[None], jnp.reshape(sigma, (1,)), train=False)[0]
        return (eps / sigma).astype(x.dtype)

    return score
