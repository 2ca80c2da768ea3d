"""The analytic Gaussian-mixture prior: its score, its exact posterior, and the sampler on a bimodal target.

The closed forms are checked against scipy's multivariate normal in float64, independently of
the eigenbases the module works in.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

from jaxlens.reference import (
    gaussian_prior_score,
    mixture_log_density,
    mixture_moments,
    mixture_posterior,
    mixture_prior,
    mixture_prior_sample,
    mixture_prior_score,
    smooth_gaussian_prior,
)
from jaxlens.sample import sample_prior
from jaxlens.sde import VESDE

SHAPE = (4, 4, 1)
SDE = VESDE(1e-3, 20.0)


def _bimodal_prior():
    u = np.linspace(-1, 1, 4)
    blob = np.exp(-((u[:, None] - 0.5) ** 2 + u[None] ** 2) / 0.3)[..., None]
    a = smooth_gaussian_prior(SHAPE, length_scale=1.5, std=0.3, jitter=0.05)
    b = smooth_gaussian_prior(SHAPE, length_scale=0.7, std=0.2, jitter=0.05)
    return mixture_prior([a._replace(mean=jnp.asarray(blob, jnp.float32)),
                          b._replace(mean=jnp.asarray(-blob[::-1], jnp.float32))], [0.3, 0.7])


@pytest.fixture(scope="module")
def prior():
    return _bimodal_prior()


def _scipy_log_density(prior, x, var=0.0):
    d = x.size
    return np.logaddexp.reduce([
        np.log(w) + multivariate_normal(mu.ravel(), cov + var * np.eye(d)).logpdf(x.ravel())
        for w, mu, cov in zip(prior.weights, prior.means, prior.covariances())])


def test_log_density_and_score_match_the_closed_form(prior):
    rng = np.random.default_rng(0)
    score = mixture_prior_score(prior, SDE)
    for t in (0.05, 0.3, 0.8):
        var = float(SDE.sigma(t)) ** 2
        x = (prior.means[1] + 0.4 * rng.standard_normal(SHAPE)).astype(np.float32)
        assert float(mixture_log_density(prior, x, var)) == pytest.approx(_scipy_log_density(prior, x, var), abs=2e-3)
        grad = jax.grad(lambda z: mixture_log_density(prior, z, var))(jnp.asarray(x))
        np.testing.assert_allclose(score(jnp.asarray(x), jnp.asarray(t)), grad, rtol=1e-3, atol=1e-3)


def test_one_component_is_the_gaussian_prior():
    g = smooth_gaussian_prior(SHAPE, length_scale=1.2, jitter=0.05)
    x = jnp.asarray(np.random.default_rng(1).standard_normal(SHAPE), jnp.float32)
    t = jnp.asarray(0.4)
    np.testing.assert_allclose(mixture_prior_score(mixture_prior([g], [1.0]), SDE)(x, t),
                               gaussian_prior_score(g, SDE)(x, t), rtol=1e-4, atol=1e-5)


def test_posterior_is_prior_times_likelihood(prior):
    # log p(x | y) − log p(x) − log p(y | x) must be the same (−log p(y)) at every x.
    rng = np.random.default_rng(2)
    m = rng.standard_normal((10, 16)) / 4
    sigma_n = 0.1
    x_true = np.asarray(mixture_prior_sample(jax.random.key(0), prior, 1)[0], np.float64)
    y = m @ x_true.ravel() + sigma_n * rng.standard_normal(10)
    post = mixture_posterior(prior, m, y, sigma_n)
    xs = [x_true + 0.1 * rng.standard_normal(SHAPE) for _ in range(6)]
    gaps = [_scipy_log_density(post, x) - _scipy_log_density(prior, x)
            - multivariate_normal(m @ x.ravel(), sigma_n**2 * np.eye(10)).logpdf(y) for x in xs]
    np.testing.assert_allclose(gaps, gaps[0], atol=1e-6)
    # The total-covariance moments against the component pieces.
    mean, cov = mixture_moments(post)
    d = post.means.reshape(2, -1) - mean
    np.testing.assert_allclose(cov, np.einsum("k,kij->ij", post.weights, post.covariances())
                               + np.einsum("k,ki,kj->ij", post.weights, d, d), atol=1e-12)


def test_reverse_sde_on_the_bimodal_posterior_recovers_its_weights_and_moments(prior):
    # A weak observation leaves both components plausible; the reverse SDE, driven by the exact
    # diffused score of that posterior, must put its chains in each mode as often as the posterior does.
    rng = np.random.default_rng(3)
    m = rng.standard_normal((3, 16)) / 4
    sigma_n = 0.3
    y = m @ np.asarray(0.7 * prior.means[0] + 0.3 * prior.means[1], np.float64).ravel()  # both modes fit
    post = mixture_posterior(prior, m, y, sigma_n)
    # A genuinely bimodal target, whose weights the data moved well away from the prior's 0.3 / 0.7.
    assert 0.5 < post.weights[0] < 0.65, post.weights
    n = 2000
    xs = sample_prior(jax.random.key(4), mixture_prior_score(post, SDE), SDE, SHAPE, n, 500, progress=False)
    xs = np.asarray(xs, np.float64).reshape(n, -1)
    # Each sample's component: the one whose posterior density is highest there (the modes are far apart).
    comp = np.argmax([[np.log(w) + multivariate_normal(mu.ravel(), c).logpdf(x)
                       for w, mu, c in zip(post.weights, post.means, post.covariances())] for x in xs], axis=1)
    frac = np.mean(comp == 0)
    assert abs(frac - post.weights[0]) < 4 * np.sqrt(post.weights[0] * (1 - post.weights[0]) / n), (frac, post.weights)
    mean, cov = mixture_moments(post)
    sd = np.sqrt(np.diag(cov))
    z = (xs.mean(0) - mean) / (sd / np.sqrt(n))
    assert np.sqrt(np.mean(z**2)) < 1.5 and np.abs(z).max() < 4.5
    np.testing.assert_allclose(xs.std(0, ddof=1) / sd, 1.0, atol=0.08)
