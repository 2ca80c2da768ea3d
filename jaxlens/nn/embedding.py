"""Gaussian Fourier features of the noise level (Tancik et al. 2020; score_sde's NCSN++)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["GaussianFourierProjection"]


class GaussianFourierProjection(nn.Module):
    """Random Fourier features [sin(2π W s), cos(2π W s)] of a scalar per example.

    W ~ N(0, scale²) is drawn at initialisation and never trained: the gradient is
    stopped, but W is stored in 'params' (as in score_sde, so parameter counts match).
    Always computed in float32, since s = log σ spans a wide range.

    Attributes:
      embedding_size: number of frequencies; the output has twice as many features.
      scale: standard deviation of the frequencies.
      param_dtype: dtype of W.
    """

    embedding_size: int = 256
    scale: float = 16.0
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, s: jax.Array) -> jax.Array:
        """Embeds s [B] into [B, 2·embedding_size] float32 features."""
        w = self.param(
            "W", nn.initializers.normal(stddev=self.scale), (self.embedding_size,), self.param_dtype
        )
        w = jax.lax.stop_gradient(w).astype(jnp.float32)
        proj = s.astype(jnp.float32)[:, None] * w[None, :] * (2.0 * jnp.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)
