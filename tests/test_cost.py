"""Network evaluations are counted as the chains run, and the drift tolerance buys them back safely.

Oracles: the solvers' fixed costs (one score call per Euler–Maruyama step, n_corrector + 1 per
predictor–corrector step, two per Heun step); the Tweedie term's own count at each state of a run;
the converged solve (a tight tolerance) for the drift-stopped one; and, on an analytic Gaussian
prior where Tweedie is exact, the exact law of the Euler–Maruyama chain within Monte-Carlo error.
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlens.lensing import lens_operator, simulate
from jaxlens.reference import gaussian_em_moments, gaussian_prior_score, smooth_gaussian_prior
from jaxlens.sample import (
    DPS,
    Eq19,
    PredictorCorrector,
    ProbabilityFlow,
    Tweedie,
    advance_chains,
    init_chains,
    observe,
    posterior_chains,
    posterior_score,
    prior_chains,
    sample_posterior,
)
from jaxlens.sde import VESDE

from test_sample import GEOM, LENS, MC_MAX, MC_RMS, SDE, SHAPE, _observe, _zscores, lens  # noqa: F401 (fixture)

SMOOTH = smooth_gaussian_prior(SHAPE, length_scale=2.0, std=0.5)
SMOOTH_SDE = VESDE(1e-2, 20.0)
SMOOTH_SCORE = gaussian_prior_score(SMOOTH, SMOOTH_SDE)
SOURCE = 0.5 * jnp.exp(-jnp.sum(jnp.square(jnp.indices((16, 16)) - 7.5), axis=0) / 18.0)[..., None]


def _obs(sigma_n=0.05):
    return observe(simulate(jax.random.key(1), SOURCE, LENS, GEOM, sigma_n), sigma_n, lens=LENS, geometry=GEOM)


@pytest.mark.parametrize("solver, per_step", [(None, 1), (PredictorCorrector(n_corrector=2), 3),
                                              (ProbabilityFlow(method="heun"), 2)],
                         ids=["em", "pc", "heun"])
def test_fixed_cost_solvers_count_their_score_calls(solver, per_step):
    kw = {} if solver is None else {"solver": solver}
    _, cost = prior_chains(jax.random.key(0), SMOOTH_SCORE, SMOOTH_SDE, SHAPE, n_chains=3, n_steps=7,
                           with_cost=True, **kw)
    np.testing.assert_array_equal(cost, 7 * per_step)
    if solver is not None:
        return  # the rest does not depend on the solver
    _, cost = prior_chains(jax.random.key(0), SMOOTH_SCORE, SMOOTH_SDE, SHAPE, n_chains=2, n_steps=7,
                           denoise=True, with_cost=True)
    np.testing.assert_array_equal(cost, 7 + 1)
    # eq19 adds no network call to the prior's; dps adds a vector-Jacobian product.
    for term, per_call in ((Eq19(), 1), (DPS(), 2)):
        _, cost = posterior_chains(jax.random.key(0), SMOOTH_SCORE, _obs(), SMOOTH_SDE, likelihood=term,
                                   n_chains=2, n_steps=5, with_cost=True)
        np.testing.assert_array_equal(cost, 5 * per_call)


def test_tweedie_counts_one_linearisation_and_each_lanczos_step_of_every_step():
    obs, term, n_steps = _obs(), Tweedie(lanczos_cap=12), 6
    key, index = jax.random.key(2), jnp.arange(3, dtype=jnp.int32)
    x = init_chains(key, index, SMOOTH_SDE, SHAPE)
    score = jax.vmap(lambda z, t: term.posterior_score_and_cost(SMOOTH_SCORE, obs, z, t, SMOOTH_SDE),
                     in_axes=(0, None))
    counted = posterior_score(SMOOTH_SCORE, term, obs, SMOOTH_SDE, counted=True)
    total = np.zeros(3, np.int64)
    for i in range(n_steps):
        _, expected = score(x, jnp.float32(1.0 - i / n_steps))
        assert np.all((expected >= 2) & (expected <= 13))  # a linearisation, then 1..cap Lanczos steps
        x, n = advance_chains(key, index, x, counted, SMOOTH_SDE, jnp.array([i]), n_steps, with_cost=True)
        np.testing.assert_array_equal(n, expected)
        total += np.asarray(n)
    samples, cost = posterior_chains(key, SMOOTH_SCORE, obs, SMOOTH_SDE, likelihood=term, n_chains=3,
                                     n_steps=n_steps, with_cost=True)
    np.testing.assert_array_equal(cost, total)
    np.testing.assert_allclose(samples, x, rtol=1e-5, atol=1e-5)
    assert total.max() < n_steps * 13  # the solve stopped before its cap somewhere


def test_the_runner_returns_and_resumes_the_cores_counts(tmp_path):
    y = simulate(jax.random.key(4), SOURCE, LENS, GEOM, 0.1)
    obs = observe(y, 0.1, lens=LENS, geometry=GEOM)
    A, AT = lens_operator(LENS, GEOM)
    key, term = jax.random.key(5), Tweedie(lanczos_cap=8)
    _, core = posterior_chains(key, SMOOTH_SCORE, obs, SMOOTH_SDE, likelihood=term, n_chains=5, n_steps=20,
                               with_cost=True)
    kw = dict(likelihood=term, chunk_size=2, out_dir=str(tmp_path), progress=False, return_cost=True)
    _, run = sample_posterior(key, SMOOTH_SCORE, y, A, AT, 0.1, SMOOTH_SDE, 5, 20, **kw)
    np.testing.assert_array_equal(run, core)
    _, again = sample_posterior(key, SMOOTH_SCORE, y, A, AT, 0.1, SMOOTH_SDE, 5, 20, **kw)  # every chunk loaded
    np.testing.assert_array_equal(again, core)


@pytest.mark.parametrize("t", [0.9, 0.6, 0.3])
def test_the_drift_stop_stays_near_the_converged_score(t):
    obs = _obs()
    x = SOURCE + float(SMOOTH_SDE.sigma(t)) * jax.random.normal(jax.random.key(3), SHAPE)
    tt = jnp.float32(t)
    full, n_full = Tweedie(lanczos_cap=40, lanczos_tol=1e-7).posterior_score_and_cost(SMOOTH_SCORE, obs, x, tt,
                                                                                       SMOOTH_SDE)
    tol = 0.03
    got, n_got = Tweedie(lanczos_cap=40, lanczos_tol=1e-7, drift_tol=tol).posterior_score_and_cost(
        SMOOTH_SCORE, obs, x, tt, SMOOTH_SDE)
    # The stop is on the change of one Lanczos step relative to the posterior score; the error left is
    # of that order (the products it saves over a run: test_the_drift_stopped_sampler_keeps_...).
    err = float(jnp.linalg.norm(got - full) / jnp.linalg.norm(full))
    assert err < 3 * tol, err
    assert int(n_got) <= int(n_full) + 2, (n_got, n_full)  # a 1e-7 tolerance stops by float32 chance


def test_the_drift_stopped_sampler_keeps_the_exact_gaussian_law(lens):
    """A smooth Gaussian prior (galaxy-like correlations), the real 16² operator, σ_n = 0.2: Tweedie is
    exact here and cap 20 converges, so the default term (drift tolerance 0.05) at N = 50 (the default is 57)
    must match the exact Euler–Maruyama law of the converged term within Monte-Carlo error, at well
    under half the Jacobian products. (At σ_n = 0.05 the stop leaves a mean bias of ~0.1 posterior
    std RMS here; docs/validation.md.)"""
    _, _, M, Ad, ATd = lens
    prior = smooth_gaussian_prior(SHAPE, length_scale=2.0, std=0.5)
    score = gaussian_prior_score(prior, SDE)
    sigma_n, n, n_steps = 0.2, 128, 50
    y = _observe(prior, M, sigma_n)
    law_mu, law_cov = gaussian_em_moments(prior, M, y, sigma_n, SDE, n_steps, likelihood="tweedie")
    samples, cost = sample_posterior(jax.random.key(1), score, y, Ad, ATd, sigma_n, SDE, n, n_steps,
                                     likelihood=Tweedie(), progress=False, return_cost=True)
    z, r = _zscores(samples, law_mu, np.sqrt(np.diag(law_cov)).reshape(SHAPE))
    msg = f"rms z {np.sqrt(np.mean(z**2)):.2f} max {np.abs(z).max():.2f}, std rms {np.sqrt(np.mean(r**2)):.2f}"
    assert np.sqrt(np.mean(z**2)) < MC_RMS and np.abs(z).max() < MC_MAX, msg
    assert np.sqrt(np.mean(r**2)) < MC_RMS and np.abs(r).max() < MC_MAX, msg
    _, full = sample_posterior(jax.random.key(1), score, y, Ad, ATd, sigma_n, SDE, 8, n_steps,
                               likelihood=Tweedie(drift_tol=0), progress=False, return_cost=True)
    assert cost.mean() < 0.5 * full.mean(), (cost.mean(), full.mean())  # the stop saved products


def test_bad_drift_tolerance_is_a_clear_error():
    for bad in (-0.1, True, "0.1"):
        with pytest.raises(ValueError, match="drift_tol"):
            Tweedie(drift_tol=bad)
