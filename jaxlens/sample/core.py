"""The pure sampling core: a batch of reverse-SDE chains for one observation, as one function.

  samples = posterior_chains(key, prior_score, obs, sde, likelihood=Tweedie(), n_chains=8, n_steps=200)
  samples = prior_chains(key, prior_score, sde, (64, 64, 1), n_chains=8, n_steps=1000)

Both are pure functions of their array arguments (the key, the observation's y, noise
and lens parameters): they have no side effects, so they can be `jax.jit`ted inside a
user's function, `jax.vmap`ped over observations, noise levels and lenses, and
differentiated with `jax.grad` with respect to the lens. `n_chains` and `n_steps` are
Python integers (static under jit).

Chain g of a run with key k starts from σ_max · N(0, I) drawn with
fold_in(fold_in(k, g), 0) and integrates with the path key fold_in(fold_in(k, g), 1),
so its randomness depends on (k, g) only. The runner (`sample_posterior`) calls the
same `init_chains` / `advance_chains` / `denoise_chains` in chunks and segments, and
gives the same samples as these functions.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxlens.sample.likelihood import Likelihood, Tweedie, posterior_score
from jaxlens.sample.observation import Observation
from jaxlens.sample.solvers import EulerMaruyama, Solver, integrate, tweedie_denoise
from jaxlens.sde import VESDE

__all__ = ["advance_chains", "chain_keys", "check_key", "denoise_chains", "init_chains", "posterior_chains",
           "prior_chains"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def check_key(key: jax.Array) -> None:
    """Raises unless `key` is one typed PRNG key, the only kind the chain keys are defined for."""
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.shape != ():
        raise ValueError("key must be a single typed PRNG key from jax.random.key(seed)")


def chain_keys(key: jax.Array, index: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(initial-state key, path key) of chain `index` of a run with `key`."""
    k = jax.random.fold_in(key, index)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1)


def init_chains(key: jax.Array, index: jax.Array, sde: VESDE, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """States at t = 1, σ_max · N(0, I), of the chains numbered `index` [n] → [n, *shape]."""

    def one(g):
        return sde.sigma_max * jax.random.normal(chain_keys(key, g)[0], shape, dtype)

    return jax.vmap(one)(index)


def advance_chains(key: jax.Array, index: jax.Array, x: jax.Array, score_fn: ScoreFn, sde: VESDE,
                   step_indices: jax.Array, n_steps: int, *, solver: Solver = EulerMaruyama(),
                   with_cost: bool = False):
    """Runs steps `step_indices` of the N-step grid on the chains `index` [n] in states x [n, H, W, C].

    With `with_cost` it returns (x, network evaluations of each chain [n]).
    """

    def one(g, xi):
        return integrate(chain_keys(key, g)[1], score_fn, sde, xi, step_indices, n_steps, solver=solver,
                         with_cost=with_cost)

    return jax.vmap(one)(index, x)


def denoise_chains(score_fn: ScoreFn, sde: VESDE, x: jax.Array) -> jax.Array:
    """A final Tweedie step E[x_0 | x] at t = 0 on every chain of x [n, H, W, C]."""
    return jax.vmap(lambda xi: tweedie_denoise(score_fn, sde, xi))(x)


def _check_counts(n_chains, n_steps) -> None:
    for name, v in (("n_chains", n_chains), ("n_steps", n_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive Python integer, got {v!r}")


def _chains(key, score_fn, sde, shape, dtype, n_chains, n_steps, solver, denoise, with_cost=False):
    _check_counts(n_chains, n_steps)
    check_key(key)
    index = jnp.arange(n_chains, dtype=jnp.int32)
    x = init_chains(key, index, sde, tuple(shape), dtype)
    x, cost = advance_chains(key, index, x, score_fn, sde, jnp.arange(n_steps, dtype=jnp.int32), n_steps,
                             solver=solver, with_cost=True)
    if denoise:
        x, cost = denoise_chains(score_fn, sde, x), cost + 1
    return (x, cost) if with_cost else x


def posterior_chains(
    key: jax.Array,
    prior_score: ScoreFn,
    observation: Observation,
    sde: VESDE,
    *,
    likelihood: Likelihood = Tweedie(),
    n_chains: int,
    n_steps: int,
    solver: Solver = EulerMaruyama(),
    denoise: bool = False,
    with_cost: bool = False,
):
    """Posterior samples of the source for one observation: the reverse SDE, chains vmapped.

    Args:
      key: typed PRNG key (jax.random.key); chain g depends on (key, g) only.
      prior_score: prior score of ONE state, prior_score(x [H, W, C], t scalar) → [H, W, C].
      observation: from `observe(y, sigma_n, lens=..., geometry=...)` or `observe(..., A=, AT=)`.
      sde: the VE SDE of the prior.
      likelihood: Tweedie() (calibrated, the default), Eq19() (the paper's), Eq12() or DPS().
      n_chains: number of independent chains (samples), a Python int.
      n_steps: N, Euler–Maruyama steps from t = 1 to t = 0, a Python int.
      solver: EulerMaruyama(), PredictorCorrector(...) or ProbabilityFlow(...).
      denoise: apply a final Tweedie step at t = 0.
      with_cost: also return each chain's network evaluations, counted as the run makes them.

    Returns:
      samples [n_chains, H, W, C], a jax.Array in the observation's dtype, or (samples,
      evaluations [n_chains] int32) with `with_cost`.
    """
    obs = observation.bind()
    score = posterior_score(prior_score, likelihood, obs, sde, counted=True)
    return _chains(key, score, sde, obs.source_shape, obs.y.dtype, n_chains, n_steps, solver, denoise, with_cost)


def prior_chains(
    key: jax.Array,
    prior_score: ScoreFn,
    sde: VESDE,
    shape: tuple[int, int, int],
    *,
    n_chains: int,
    n_steps: int,
    solver: Solver = EulerMaruyama(),
    denoise: bool = False,
    dtype=jnp.float32,
    with_cost: bool = False,
):
    """Unconditional samples [n_chains, *shape]: `posterior_chains` with no likelihood term."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (H, W, C), got {shape}")
    return _chains(key, prior_score, sde, shape, jnp.dtype(dtype), n_chains, n_steps, solver, denoise, with_cost)
