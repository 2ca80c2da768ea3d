"""VE SDE, Technique 1 (σ_max) and Technique 2 (step count) against closed forms."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import pdist
from scipy.stats import norm

from jaxlens.sde import VESDE, sigma_max_from_data, step_confidence, steps_for_confidence


def test_sigma_schedule_endpoints_and_geometric():
    sde = VESDE(sigma_min=1e-4, sigma_max=263.4)
    np.testing.assert_allclose(sde.sigma(0.0), 1e-4, rtol=1e-6)
    np.testing.assert_allclose(sde.sigma(1.0), 263.4, rtol=1e-5)
    t = jnp.linspace(0, 1, 11)
    np.testing.assert_allclose(sde.sigma(t), 1e-4 * (263.4 / 1e-4) ** np.asarray(t), rtol=1e-5)


def test_g2_is_derivative_of_sigma_squared():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = jnp.linspace(0.05, 0.95, 7)
    dsigma2 = jax.vmap(jax.grad(lambda s: sde.sigma(s) ** 2))(t)
    np.testing.assert_allclose(sde.g2(t), dsigma2, rtol=1e-5)


def test_t_of_sigma_inverts_sigma():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    t = jnp.linspace(0, 1, 9)
    np.testing.assert_allclose(sde.t_of_sigma(sde.sigma(t)), t, atol=1e-6)


def test_perturb_has_marginal_std():
    sde = VESDE(sigma_min=0.01, sigma_max=50.0)
    x0 = jnp.zeros((4000, 3))
    t = jnp.full((4000,), 0.5)
    xt, z = sde.perturb(jax.random.key(0), x0, t)
    np.testing.assert_allclose(xt, sde.sigma(0.5) * z, rtol=1e-6)
    assert abs(float(jnp.std(xt)) / float(sde.sigma(0.5)) - 1) < 0.03


@pytest.mark.parametrize("bad", [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (-1.0, 3.0)])
def test_vesde_rejects_bad_sigmas(bad):
    with pytest.raises(ValueError, match="sigma_min"):
        VESDE(*bad)


def test_sigma_max_from_data_matches_scipy_across_chunks():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, size=(301, 6, 5)).astype(np.float32)
    x[17] += 3.0  # one outlier, so the maximum sits in a specific pair
    expected = pdist(x.reshape(len(x), -1).astype(np.float64)).max()
    for chunk in (7, 64, 1000):
        np.testing.assert_allclose(sigma_max_from_data(x, chunk=chunk), expected, rtol=1e-5)


def test_sigma_max_from_data_rejects_bad_input():
    with pytest.raises(ValueError, match="two images"):
        sigma_max_from_data(np.zeros((1, 4, 4)))
    bad = np.zeros((3, 4, 4))
    bad[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sigma_max_from_data(bad)


def test_technique2_reproduces_paper_numbers():
    d = 256 * 256
    assert abs(step_confidence(2000, d, 1e-4, 263.4) - 0.64) < 0.015
    assert abs(step_confidence(8000, d, 1e-4, 263.4) - 0.99) < 0.005


def test_step_confidence_matches_formula_and_is_monotone():
    d, smin, smax = 4096, 1e-3, 70.0
    n = 500
    gamma = (smax / smin) ** (1 / (n - 1))
    c = math.sqrt(2 * d) * (gamma - 1)
    expected = norm.cdf(c + 3 * gamma) - norm.cdf(c - 3 * gamma)
    np.testing.assert_allclose(step_confidence(n, d, smin, smax), expected, rtol=1e-12)
    ps = [step_confidence(k, d, smin, smax) for k in (100, 300, 1000, 3000)]
    assert all(a < b for a, b in zip(ps, ps[1:]))


def test_steps_for_confidence_is_smallest():
    d, smin, smax = 64 * 64, 1e-4, 70.0
    n = steps_for_confidence(0.97, d, smin, smax)
    assert step_confidence(n, d, smin, smax) >= 0.97
    assert step_confidence(n - 1, d, smin, smax) < 0.97
    with pytest.raises(ValueError):
        steps_for_confidence(1.5, d, smin, smax)
