"""The pure sampling core composes with jit, vmap and grad, and the runner is built on it.

Oracles: separate runs with the same keys (vmap), the runner `sample_posterior` (same chains),
central finite differences in float64 (grad through the lens), and the exact linear-Gaussian
posterior (prior-only and posterior runs through the core).
"""

from __future__ import annotations

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlens.lensing import LensParams, lens_operator, render, simulate
from jaxlens.reference import gaussian_prior_score, smooth_gaussian_prior
from jaxlens.sample import (
    DPS,
    Eq12,
    Eq19,
    Tweedie,
    observe,
    posterior_chains,
    posterior_score,
    prior_chains,
    sample_observations,
    sample_posterior,
)
from jaxlens.sde import VESDE

from test_sample import GEOM, LENS, SHAPE  # noqa: E402 (the 16² problem of the sampler tests)

SDE = VESDE(1e-2, 20.0)
PRIOR = smooth_gaussian_prior(SHAPE, length_scale=2.0, std=0.5)
SCORE = gaussian_prior_score(PRIOR, SDE)
SOURCE = 0.5 * jnp.exp(-jnp.sum(jnp.square(jnp.indices((16, 16)) - 7.5), axis=0) / 18.0)[..., None]


def _lenses():
    base = np.asarray(LENS)
    rows = [base, base + [0.1, -0.05, 0.03, 0.01, 0.0, -0.01, 0.02], base + [-0.1, 0.0, 0.05, -0.02, 0.02, 0.0, 0.0]]
    return [LensParams(*map(float, r)) for r in rows]


def test_vmap_over_observations_equals_separate_runs():
    lenses, sigmas = _lenses(), [0.05, 0.1, 0.2]
    ys = [simulate(jax.random.key(i), SOURCE, lens, GEOM, s) for i, (lens, s) in enumerate(zip(lenses, sigmas))]
    keys = jax.random.split(jax.random.key(3), 3)

    def run(key, y, sigma_n, lens):
        obs = observe(y, sigma_n, lens=lens, geometry=GEOM)
        return posterior_chains(key, SCORE, obs, SDE, likelihood=Tweedie(), n_chains=2, n_steps=30)

    stacked_lens = jax.tree.map(lambda *v: jnp.stack(v), *lenses)
    batched = jax.jit(jax.vmap(run))(keys, jnp.stack(ys), jnp.asarray(sigmas), stacked_lens)
    assert batched.shape == (3, 2) + SHAPE
    for i in range(3):
        alone = run(keys[i], ys[i], sigmas[i], lenses[i])
        np.testing.assert_allclose(batched[i], alone, rtol=1e-4, atol=1e-4)
    assert float(jnp.std(batched[0] - batched[1])) > 1e-2  # different lenses and keys: different samples


def test_jit_of_a_user_function_that_simulates_and_samples_from_traced_lens_parameters():
    @jax.jit
    def simulate_and_sample(key, theta_e):
        lens = LENS._replace(theta_e=theta_e)
        k_obs, k_sample = jax.random.split(key)
        y = simulate(k_obs, SOURCE, lens, GEOM, 0.05)
        obs = observe(y, 0.05, lens=lens, geometry=GEOM)
        samples = posterior_chains(k_sample, SCORE, obs, SDE, likelihood=Eq19(), n_chains=4, n_steps=200)
        chi2 = jnp.mean(jnp.square(jax.vmap(lambda x: y - render(x, lens, GEOM))(samples)))
        return samples, chi2 / 0.05**2

    samples, chi2 = simulate_and_sample(jax.random.key(0), 1.1)
    assert samples.shape == (4,) + SHAPE and np.all(np.isfinite(samples))
    assert 0.5 < float(chi2) < 2.0  # the samples fit the data they were drawn for
    again, _ = simulate_and_sample(jax.random.key(0), 1.1)
    np.testing.assert_array_equal(samples, again)


@pytest.mark.parametrize("likelihood", [Eq19(), Tweedie(lanczos_cap=8, differentiable=True), DPS()],
                         ids=lambda t: t.name)
def test_grad_of_the_posterior_score_wrt_each_lens_parameter_matches_finite_differences(likelihood):
    with jax.enable_x64(True):
        y = simulate(jax.random.key(1), SOURCE.astype(jnp.float64), LENS, GEOM, 0.05)
        x = jnp.asarray(np.random.default_rng(0).normal(0.0, 0.3, SHAPE))
        probe = jnp.asarray(np.random.default_rng(1).normal(size=SHAPE))
        t = jnp.asarray(0.4)
        score = gaussian_prior_score(PRIOR, SDE)

        def scalar(params):
            obs = observe(y, 0.05, lens=LensParams(*params), geometry=GEOM)
            s = posterior_score(lambda z, tt: score(z, tt).astype(z.dtype), likelihood, obs, SDE)(x, t)
            return jnp.sum(probe * s)

        p0 = jnp.asarray(LENS, jnp.float64)
        grad = jax.grad(scalar)(p0)
        eps = 1e-5
        for i, name in enumerate(LensParams._fields):
            e = jnp.zeros(7).at[i].set(eps)
            fd = (scalar(p0 + e) - scalar(p0 - e)) / (2 * eps)
            assert np.isfinite(float(grad[i])), name
            np.testing.assert_allclose(float(grad[i]), float(fd), rtol=2e-4, atol=1e-6 * abs(float(fd)) + 1e-8,
                                       err_msg=name)


def test_grad_through_a_whole_posterior_run_matches_finite_differences():
    def mean_flux(theta_e, y):
        obs = observe(y, 0.05, lens=LENS._replace(theta_e=theta_e), geometry=GEOM)
        samples = posterior_chains(jax.random.key(2), SCORE, obs, SDE, likelihood=Eq19(), n_chains=2, n_steps=20)
        return jnp.mean(samples)

    with jax.enable_x64(True):
        y = simulate(jax.random.key(1), SOURCE.astype(jnp.float64), LENS, GEOM, 0.05)
        g = jax.jit(jax.grad(mean_flux))(1.0, y)
        eps = 1e-5
        fd = (mean_flux(1.0 + eps, y) - mean_flux(1.0 - eps, y)) / (2 * eps)
    assert abs(float(fd)) > 1e-3  # a real dependence, not a zero on both sides
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-4)


@pytest.mark.parametrize("likelihood", [Eq19(), Eq12(cg_maxiter=10), Tweedie()], ids=lambda t: t.name)
def test_runner_gives_the_cores_samples(likelihood):
    y = simulate(jax.random.key(4), SOURCE, LENS, GEOM, 0.1)
    A, AT = lens_operator(LENS, GEOM)
    key = jax.random.key(5)
    core = posterior_chains(key, SCORE, observe(y, 0.1, A=A, AT=AT), SDE, likelihood=likelihood, n_chains=4,
                            n_steps=200)
    run = sample_posterior(key, SCORE, y, A, AT, 0.1, SDE, 4, 200, likelihood=likelihood, chunk_size=3,
                           progress=True)
    assert np.all(np.abs(core) < 10)  # stable chains, so equality is meaningful
    # CG's stopping decisions amplify the rounding of reductions vectorised over 8 devices instead of
    # one vmap to about its tolerance; the other terms agree to float32 rounding.
    tol = 1e-2 if isinstance(likelihood, Eq12) else 1e-4
    np.testing.assert_allclose(run, core, rtol=tol, atol=tol)
    by_lens = posterior_chains(key, SCORE, observe(y, 0.1, lens=LENS, geometry=GEOM), SDE, likelihood=likelihood,
                               n_chains=4, n_steps=200)
    np.testing.assert_allclose(by_lens, core, rtol=10 * tol, atol=tol)  # Aᵀ by linear_transpose vs sparse


def test_prior_chains_are_the_core_with_no_likelihood_and_have_the_prior_moments():
    n = 256
    prior = np.asarray(prior_chains(jax.random.key(6), SCORE, SDE, SHAPE, n_chains=n, n_steps=200))
    sd = np.sqrt(np.diag(np.asarray(PRIOR.covariance()))).reshape(SHAPE)
    z = (prior.mean(0) - np.asarray(PRIOR.mean)) / sd * np.sqrt(n)
    r = (prior.std(0, ddof=1) / sd - 1.0) * np.sqrt(2 * n)
    # Monte-Carlo z-scores (see test_sample.py); EM at N = 200 is ~1 % narrow, well inside.
    assert np.sqrt(np.mean(z**2)) < 1.5 and np.sqrt(np.mean(r**2)) < 1.5


def test_bad_counts_and_keys_are_clear_errors():
    obs = observe(simulate(jax.random.key(0), SOURCE, LENS, GEOM, 0.1), 0.1, lens=LENS, geometry=GEOM)
    with pytest.raises(ValueError, match="n_chains"):
        posterior_chains(jax.random.key(0), SCORE, obs, SDE, n_chains=0, n_steps=10)
    with pytest.raises(ValueError, match="n_steps"):
        posterior_chains(jax.random.key(0), SCORE, obs, SDE, n_chains=2, n_steps=2.5)
    with pytest.raises(ValueError, match="typed PRNG key"):
        posterior_chains(jax.random.PRNGKey(0), SCORE, obs, SDE, n_chains=2, n_steps=10)
    with pytest.raises(ValueError, match="either lens"):
        observe(obs.y, 0.1)
    with pytest.raises(ValueError, match="geometry observes"):
        observe(jnp.zeros((9, 9)), 0.1, lens=LENS, geometry=GEOM)


def test_sample_observations_batches_the_core_with_one_key_per_observation():
    lenses = _lenses()
    obs = [observe(simulate(jax.random.key(i), SOURCE, lens, GEOM, 0.1), 0.1, lens=lens, geometry=GEOM)
           for i, lens in enumerate(lenses)]
    key = jax.random.key(9)
    got = sample_observations(key, SCORE, obs, SDE, likelihood=Tweedie(), n_chains=2, n_steps=50, batch=2, first=4)
    assert got.shape == (3, 2) + SHAPE
    for k in range(3):
        alone = posterior_chains(jax.random.fold_in(key, 4 + k), SCORE, obs[k], SDE, likelihood=Tweedie(),
                                 n_chains=2, n_steps=50)
        np.testing.assert_allclose(got[k], alone, rtol=1e-4, atol=1e-4)


def test_the_differentiable_tweedie_term_has_the_same_value():
    y = simulate(jax.random.key(1), SOURCE, LENS, GEOM, 0.05)
    obs = observe(y, 0.05, lens=LENS, geometry=GEOM)
    x = SOURCE + 0.1 * jax.random.normal(jax.random.key(2), SHAPE)
    fast, fixed = (Tweedie(lanczos_cap=8, differentiable=d).score(SCORE, obs, x, jnp.float32(0.4), SDE)
                   for d in (False, True))
    np.testing.assert_allclose(fixed, fast, rtol=1e-5, atol=1e-6)
