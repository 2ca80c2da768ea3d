"""Euler–Maruyama's stability bound for the eq. 19 likelihood term, and the λ_max(AᵀA) it needs."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from astropy.io import fits

from jaxlens.diagnostics import metrics
from jaxlens.lensing import Geometry, LensParams, lens_operator, normal_operator_norm
from jaxlens.reconstruct import DivergedError, SamplingOptions, write_outputs, n_steps_for, simulated_problem
from jaxlens.reference import dense_operator, gaussian_prior_score, isotropic_gaussian_prior
from jaxlens.sample import Eq19, Tweedie, sample_posterior
from jaxlens.sde import VESDE, stable_steps

GEOM = Geometry(src_npix=16, src_fov=2.0, fine_npix=32, img_fov=3.0, pool=2)
SDE = VESDE(1e-3, 40.0)
SHAPE = (4, 4, 1)


@pytest.mark.parametrize("theta_e", [0.8, 1.2])
def test_normal_operator_norm_matches_the_dense_spectral_norm(theta_e):
    lens = LensParams(theta_e, 0.1, -0.05, 0.02, -0.03, 0.02, 0.01)
    A, AT = lens_operator(lens, GEOM)
    dense = np.linalg.norm(dense_operator(A, GEOM.src_shape + (1,)), 2) ** 2
    assert normal_operator_norm(A, AT, GEOM.src_shape + (1,)) == pytest.approx(dense, rel=2e-3)


def _run(lam, n_steps):
    # A = √λ I: AᵀA has the single eigenvalue λ; a broad N(0, I) prior leaves the likelihood stiffest.
    A = lambda x: math.sqrt(lam) * x  # noqa: E731
    score = gaussian_prior_score(isotropic_gaussian_prior(SHAPE), SDE)
    return sample_posterior(jax.random.key(0), score, jnp.zeros(SHAPE), A, A, 0.05, SDE, 8, n_steps,
                            likelihood=Eq19(), progress=False)


def test_euler_maruyama_diverges_below_the_bound_and_not_above(lam=12.0):
    n = stable_steps(lam, SDE.sigma_min, SDE.sigma_max)
    below, above = _run(lam, int(0.8 * n)), _run(lam, int(1.25 * n))
    assert not np.all(np.abs(below) < 1e3), "expected a blow-up below the bound"
    # Above it the chains end near the posterior, whose std is ~σ_n/√λ.
    assert np.all(np.isfinite(above)) and np.abs(above).max() < 1.0


def test_diverged_chains_finds_the_chains_run_below_the_bound(lam=12.0):
    # Two chains run below the bound hidden among six run above it: the χ²_ν test must name them.
    n = stable_steps(lam, SDE.sigma_min, SDE.sigma_max)
    x = np.concatenate([_run(lam, int(1.25 * n))[:3], _run(lam, int(0.8 * n))[:2], _run(lam, int(1.25 * n))[3:6]])
    chi2 = metrics.reduced_chi2(math.sqrt(lam) * x, 0.05)  # y = 0
    np.testing.assert_array_equal(metrics.diverged_chains(chi2, x), [0, 0, 0, 1, 1, 0, 0, 0])


def test_outputs_leave_the_diverged_chains_out(tmp_path):
    lens = LensParams(1.0, 0.1, -0.05, 0.02, -0.03, 0.02, 0.01)
    u = np.linspace(-1, 1, GEOM.src_npix)
    truth = np.exp(-(u[:, None] ** 2 + u[None] ** 2) / 0.2)
    problem = simulated_problem(jax.random.key(0), truth, lens, GEOM, 0.02)
    A, _ = lens_operator(lens, GEOM)
    samples = truth[None, ..., None] + 0.01 * np.random.default_rng(0).normal(size=(6,) + truth.shape + (1,))
    samples = samples.astype(np.float32)
    samples[1] *= 30.0
    samples[4, 3, 3] = np.nan
    with pytest.warns(UserWarning, match=r"2 of 6 chains diverged \(chains \[1, 4\]"):
        summary = write_outputs(problem, problem.y, samples, A, str(tmp_path))
    assert summary["diverged_chains"] == [1, 4] and summary["n_chains"] == 6
    assert summary["chi2_nu"][4] is None and summary["chi2_nu"][1] > 100
    kept = samples[[0, 2, 3, 5]]
    assert summary["chi2_nu_median"] == pytest.approx(np.median(np.asarray(summary["chi2_nu"])[[0, 2, 3, 5]]))
    with fits.open(tmp_path / "samples.fits") as h:
        np.testing.assert_array_equal(h[0].data, kept[..., 0])
        assert h[0].header["DIVERGED"] == 2
    with fits.open(tmp_path / "mean.fits") as h:
        np.testing.assert_allclose(np.squeeze(h[0].data), kept.mean(0)[..., 0], atol=1e-6)
    # With fewer than two chains left there is no posterior to summarise: a clear error, not NaN maps.
    samples[[0, 2, 3]] = np.nan
    with pytest.raises(DivergedError, match="5 of 6 chains diverged"):
        write_outputs(problem, problem.y, samples, A, str(tmp_path / "again"))


def test_n_steps_for_respects_the_bound():
    class Prior:  # n_steps_for reads only the prior's SDE
        sde = SDE

    shape = (16, 16, 1)
    stiff = 400.0
    need = stable_steps(stiff, SDE.sigma_min, SDE.sigma_max)
    eq19 = Eq19()
    auto = n_steps_for(SamplingOptions(n_steps=0, likelihood=eq19), Prior, shape, stiff)
    assert auto >= need and n_steps_for(SamplingOptions(n_steps=0, likelihood=eq19), Prior, shape) < need
    with pytest.warns(UserWarning, match="below the .* steps that keep Euler–Maruyama stable"):
        n_steps_for(SamplingOptions(n_steps=need - 1, likelihood=eq19), Prior, shape, stiff)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        n_steps_for(SamplingOptions(n_steps=need, likelihood=eq19), Prior, shape, stiff)
        n_steps_for(SamplingOptions(n_steps=need - 1, likelihood=Tweedie()), Prior, shape, stiff)


def test_tweedie_warns_only_below_the_steps_measured_stable():
    class Prior:
        sde = SDE

    with pytest.warns(UserWarning, match="measured stable"):
        n_steps_for(SamplingOptions(n_steps=49, likelihood=Tweedie()), Prior, (16, 16, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Technique 2 gives N = 200 a confidence near 0 here: not a warning
        n_steps_for(SamplingOptions(n_steps=50, likelihood=Tweedie()), Prior, (64, 64, 1))
