"""An analytic Gaussian-mixture prior: a non-Gaussian prior whose posterior is still exact.

A mixture Σ_k w_k N(μ_k, Σ_k) diffused by the VE SDE stays a mixture, with covariances
Σ_k + σ(t)² I, so its score is known in closed form at every t; and with a linear observation
y = M x + η the posterior is again a mixture, of the components' linear-Gaussian posteriors
weighted by w_k N(y; M μ_k, M Σ_k Mᵀ + diag(σ_n²)). Unlike the Gaussian prior of
`jaxlens.sample.gaussian`, p(x₀ | x_t) is multimodal here, so it tells apart the likelihood terms
that assume it is Gaussian ('tweedie') from the exact posterior (experiments/mixture_calibration.py).
Small problems only: each component keeps a dense [D, D] eigenbasis.

Flattening follows `jaxlens.sample.gaussian`: index (i, j, c) of [H, W, C] is i·W·C + j·C + c.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.reference.gaussian import GaussianPrior, linear_gaussian_posterior
from jaxlens.sde import VESDE

__all__ = [
    "MixturePrior",
    "mixture_prior",
    "mixture_prior_score",
    "mixture_prior_sample",
    "mixture_log_density",
    "mixture_posterior",
    "mixture_moments",
]


class MixturePrior(NamedTuple):
    """Σ_k weights[k] N(means[k], V_k diag(eigvals[k]) V_kᵀ).

    Attributes:
      weights: [K] positive, summing to 1.
      means: [K, H, W, C].
      eigvals: [K, D] eigenvalues of each component's covariance (D = H·W·C).
      eigvecs: [K, D, D] orthonormal eigenvectors (columns) of each.
    """

    weights: np.ndarray
    means: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.means.shape[1:])

    def covariances(self) -> np.ndarray:
        """The dense [K, D, D] covariances in float64."""
        v, lam = np.asarray(self.eigvecs, np.float64), np.asarray(self.eigvals, np.float64)
        return np.einsum("kij,kj,klj->kil", v, lam, v)


def mixture_prior(components: Sequence[GaussianPrior], weights: Sequence[float]) -> MixturePrior:
    """The mixture of Gaussian priors of one shape with the given weights (normalised here)."""
    w = np.asarray(weights, np.float64)
    if len(components) < 1 or w.shape != (len(components),) or not np.all(w > 0):
        raise ValueError(f"need one positive weight per component, got {len(components)} components, weights {w}")
    shapes = {c.shape for c in components}
    if len(shapes) != 1:
        raise ValueError(f"components have different shapes: {sorted(shapes)}")
    d = int(np.prod(components[0].shape))
    vecs = [np.eye(d) if c.eigvecs is None else np.asarray(c.eigvecs, np.float64) for c in components]
    return MixturePrior(
        weights=w / w.sum(),
        means=np.stack([np.asarray(c.mean, np.float64) for c in components]),
        eigvals=np.stack([np.asarray(c.eigvals, np.float64) for c in components]),
        eigvecs=np.stack(vecs),
    )


def _component_terms(prior: MixturePrior, x: jax.Array, var_t: jax.Array):
    """Per component: log w_k + log N(x; μ_k, Σ_k + σ² I), and the score of that component."""
    dtype = x.dtype
    k = prior.weights.shape[0]
    v = jnp.asarray(prior.eigvecs, dtype)
    var = jnp.asarray(prior.eigvals, dtype) + var_t
    d = (x[None] - jnp.asarray(prior.means, dtype)).reshape(k, -1)
    z = jnp.einsum("kij,ki->kj", v, d)  # V_kᵀ (x − μ_k)
    log_p = (jnp.log(jnp.asarray(prior.weights, dtype)) - 0.5 * jnp.sum(z * z / var, axis=1)
             - 0.5 * jnp.sum(jnp.log(2 * jnp.pi * var), axis=1))
    scores = -jnp.einsum("kij,kj->ki", v, z / var)
    return log_p, scores


def mixture_log_density(prior: MixturePrior, x: jax.Array, var_t: float | jax.Array = 0.0) -> jax.Array:
    """log p(x) of one state [H, W, C] under the prior diffused to variance var_t."""
    x = jnp.asarray(x)
    log_p, _ = _component_terms(prior, x, jnp.asarray(var_t, x.dtype))
    return jax.nn.logsumexp(log_p)


def mixture_prior_score(prior: MixturePrior, sde: VESDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Exact score of the diffused mixture, Σ_k r_k(x) (Σ_k + σ(t)² I)⁻¹ (μ_k − x).

    r_k(x) are the components' responsibilities at x under the diffused mixture. Returns
    score_fn(x, t) for one state x [H, W, C] and a scalar t; vmap it for chains.
    """

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape != prior.shape:
            raise ValueError(f"state shape {x.shape} != prior shape {prior.shape}")
        log_p, scores = _component_terms(prior, x, sde.sigma(t).astype(x.dtype) ** 2)
        return (jax.nn.softmax(log_p) @ scores).reshape(x.shape)

    return score_fn


def mixture_prior_sample(key: jax.Array, prior: MixturePrior, n: int, dtype=jnp.float32) -> jax.Array:
    """n independent draws, [n, H, W, C]."""
    k_comp, k_z = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(jnp.asarray(prior.weights, dtype)), shape=(n,))
    z = jax.random.normal(k_z, (n, prior.eigvals.shape[1]), dtype)
    z = z * jnp.sqrt(jnp.asarray(prior.eigvals, dtype))[comp]
    x = jnp.einsum("nij,nj->ni", jnp.asarray(prior.eigvecs, dtype)[comp], z)
    return jnp.asarray(prior.means, dtype)[comp] + x.reshape((n,) + prior.shape)


def mixture_posterior(prior: MixturePrior, matrix: np.ndarray, y: np.ndarray, sigma_n) -> MixturePrior:
    """Exact posterior of x ~ prior given y = M x + η, η ~ N(0, diag(σ_n²)), as a mixture (float64).

    Args:
      prior: the mixture prior over states [H, W, C].
      matrix: [m, D] dense forward operator (see `jaxlens.sample.dense_operator`).
      y: observation with m elements.
      sigma_n: noise standard deviation, scalar or broadcastable to y (finite).
    """
    m = np.asarray(matrix, np.float64)
    yv = np.asarray(y, np.float64).ravel()
    noise_var = np.broadcast_to(np.asarray(sigma_n, np.float64) ** 2, np.shape(y)).ravel()
    if not np.all(np.isfinite(noise_var) & (noise_var > 0)) or m.shape[0] != yv.size:
        raise ValueError(f"need a finite sigma_n > 0 and a [{yv.size}, D] matrix, got {m.shape}")
    log_w, means, lams, vecs = [], [], [], []
    for w, mu, lam_k, vec_k, cov in zip(prior.weights, prior.means, prior.eigvals, prior.eigvecs,
                                        prior.covariances()):
        mean, post = linear_gaussian_posterior(GaussianPrior(mu, lam_k, vec_k), m, y, sigma_n)
        # The evidence N(y; M μ_k, M Σ_k Mᵀ + N) weighs the components.
        s = m @ cov @ m.T + np.diag(noise_var)
        r = yv - m @ mu.ravel()
        _, logdet = np.linalg.slogdet(s)
        log_w.append(np.log(w) - 0.5 * (r @ np.linalg.solve(s, r) + logdet))
        lam, vec = np.linalg.eigh(post)
        means.append(mean)
        lams.append(np.maximum(lam, 0.0))
        vecs.append(vec)
    log_w = np.asarray(log_w)
    weights = np.exp(log_w - log_w.max())
    return MixturePrior(weights / weights.sum(), np.stack(means), np.stack(lams), np.stack(vecs))


def mixture_moments(prior: MixturePrior) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of the mixture, float64, by the law of total covariance."""
    w = np.asarray(prior.weights, np.float64)
    mu = np.asarray(prior.means, np.float64).reshape(len(w), -1)
    mean = w @ mu
    d = mu - mean
    cov = np.einsum("k,kij->ij", w, prior.covariances()) + np.einsum("k,ki,kj->ij", w, d, d)
    return mean, cov
