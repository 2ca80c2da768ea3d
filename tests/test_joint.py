"""Joint source and lens sampling against closed forms: a Gaussian source prior makes p(κ | y) exact.

With x ~ N(μ, S) and y = A_κ x + η, the lens marginal is p(y | κ) = N(y; A_κ μ, A_κ S A_κᵀ + σ_n² I),
evaluated here on a grid of (θ_E, e1) with dense float64 algebra, and the source given the lens is the
linear-Gaussian posterior.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlens.lensing import Geometry, LensParams, lens_operator, render
from jaxlens.reference.gaussian import (gaussian_prior_sample, gaussian_prior_score, linear_gaussian_posterior,
                                        smooth_gaussian_prior)
from jaxlens.sample import Eq19, Tweedie, observe, posterior_chains
from jaxlens.sample.joint import JointStep, LensPrior, joint_chains
from jaxlens.fit_lens import FitLensOptions, run_joint
from jaxlens.sde import VESDE

GEO = Geometry(src_npix=12, src_fov=3.0, fine_npix=24, img_fov=5.0, pool=2)
SDE = VESDE(1e-3, 20.0)
SIGMA_N = 0.1
TRUTH = LensParams(1.2, 0.1, -0.05, 0.0, 0.0, 0.0, 0.0)
GUESS = TRUTH._replace(theta_e=1.25, e1=0.07)
WIDTHS = LensParams(0.1, 0.05, 0.0, 0.0, 0.0, 0.0, 0.0)  # θ_E and e1 free


@pytest.fixture(scope="module")
def problem():
    prior = smooth_gaussian_prior((12, 12, 1), length_scale=2.0, std=0.5)
    x_true = gaussian_prior_sample(jax.random.key(0), prior, 1)[0]
    clean = render(x_true, TRUTH, GEO)
    y = clean + SIGMA_N * jax.random.normal(jax.random.key(1), clean.shape)
    return prior, y


def _dense(lens):
    basis = jnp.eye(144).reshape(144, 12, 12, 1)
    return jax.vmap(lambda e: render(e, lens, GEO))(basis).reshape(144, -1).T  # [m, D]


def _exact_marginal(prior, y):
    """p(θ_E, e1 | y) on a grid, with the Gaussian lens prior."""
    te, e1 = np.linspace(1.1, 1.3, 41), np.linspace(-0.05, 0.2, 41)
    grid = [GUESS._replace(theta_e=a, e1=b) for a in te for b in e1]
    stack = LensParams(*(jnp.asarray([float(g[i]) for g in grid]) for i in range(7)))
    mats = np.asarray(jax.jit(jax.vmap(_dense))(stack), np.float64)
    cov, mu, yv = prior.covariance(), np.asarray(prior.mean, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    logp = np.empty(len(grid))
    for k, (m, g) in enumerate(zip(mats, grid)):
        s = m @ cov @ m.T + SIGMA_N**2 * np.eye(len(yv))
        r = yv - m @ mu
        logp[k] = -0.5 * (r @ np.linalg.solve(s, r) + np.linalg.slogdet(s)[1])
        logp[k] += -0.5 * ((g.theta_e - GUESS.theta_e) / 0.1) ** 2 - 0.5 * ((g.e1 - GUESS.e1) / 0.05) ** 2
    p = np.exp(logp - logp.max()).reshape(len(te), len(e1))
    return te, e1, p / p.sum()


def _moments(values, weights):
    m = np.sum(values * weights)
    return m, math.sqrt(np.sum(values**2 * weights) - m**2)


@pytest.mark.slow
def test_lens_marginal_approaches_the_gaussian_closed_form_with_gibbs_sweeps(problem):
    prior, y = problem
    te, e1, p = _exact_marginal(prior, y)
    exact = {"theta_e": _moments(te, p.sum(1)), "e1": _moments(e1, p.sum(0))}
    step = JointStep.make(gaussian_prior_score(prior, SDE), observe(y, SIGMA_N, lens=GUESS, geometry=GEO), SDE,
                          LensPrior.make(GUESS, WIDTHS), likelihood=Tweedie(lanczos_cap=10, lanczos_tol=1e-6, drift_tol=0))
    n, n_steps = 48, 100
    swept = run_joint(step, jax.random.key(2), n, n_steps, FitLensOptions(refresh_cycles=4, refresh_t=0.6),
                      progress=False)
    for j, name in enumerate(["theta_e", "e1"]):
        mean, std = exact[name]
        # The lens trace after the first pass's last step, and at the end of the sweeps.
        first, last = np.asarray(swept[2][:, n_steps - 1, j]), np.asarray(swept[1][:, j])
        # The mean is right to Monte-Carlo error after one pass already.
        assert abs(first.mean() - mean) < 3 * first.std() / math.sqrt(n), (name, first.mean(), mean)
        assert abs(last.mean() - mean) < 3 * last.std() / math.sqrt(n), (name, last.mean(), mean)
        # One pass is too wide (κ is pinned only once the sources have formed); the sweeps, an MCMC
        # whose kernels leave the joint invariant, bring the width towards the exact one.
        assert last.std() < first.std(), (name, last.std(), first.std())
        assert 0.8 * std < last.std() < 1.6 * std, (name, last.std(), std)
    # The source given each chain's lens: whitened by the closed-form conditional, it is N(0, I).
    x, u = np.asarray(swept[0]), np.asarray(swept[1])
    z2 = []
    for g in range(0, n, 6):
        lens = GUESS._replace(theta_e=float(u[g, 0]), e1=float(u[g, 1]))
        mean, cov = linear_gaussian_posterior(prior, np.asarray(_dense(lens)), np.asarray(y), SIGMA_N)
        w, v = np.linalg.eigh(cov)
        z = (v.T @ (x[g].ravel() - mean.ravel())) / np.sqrt(np.maximum(w, 1e-12))
        z2.append(np.mean(z**2))
    assert 0.75 < np.mean(z2) < 1.35, z2


def test_a_delta_lens_prior_is_the_known_lens_sampler(problem):
    prior, y = problem
    obs = observe(y, SIGMA_N, lens=TRUTH, geometry=GEO)
    score = gaussian_prior_score(prior, SDE)
    delta = LensPrior.make(TRUTH, LensParams(*([0.0] * 7)))
    for term in (Eq19(), Tweedie()):
        run = jax.jit(lambda k: joint_chains(k, score, obs, SDE, delta, likelihood=term, n_chains=3,
                                             n_steps=40))(jax.random.key(5))
        known = posterior_chains(jax.random.key(5), score, obs, SDE, likelihood=term, n_chains=3, n_steps=40)
        # The same chain keys; only float32 rounding differs (the joint run builds its operator under jit).
        np.testing.assert_allclose(run.samples, known, rtol=1e-3, atol=2e-4)
        assert run.lens_trace.shape == (3, 40, 0)
        np.testing.assert_allclose(run.lens.theta_e, [TRUTH.theta_e] * 3)


def test_vmap_over_observations_equals_separate_runs(problem):
    prior, y = problem
    score = gaussian_prior_score(prior, SDE)
    lp = LensPrior.make(GUESS, WIDTHS)
    ys = jnp.stack([y, 0.9 * y])

    @jax.jit
    def run(yy):
        return joint_chains(jax.random.key(3), score, observe(yy, SIGMA_N, lens=GUESS, geometry=GEO), SDE, lp,
                            likelihood=Tweedie(), n_chains=2, n_steps=20)

    both = jax.vmap(run)(ys)
    for i in range(2):
        single = run(ys[i])
        np.testing.assert_allclose(both.samples[i], single.samples, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(both.lens_trace[i], single.lens_trace, rtol=1e-4, atol=1e-6)


def test_lens_prior_bounds_and_bad_widths():
    lp = LensPrior.make(TRUTH, LensParams(0.5, 0.6, 0.6, 0.0, 0.0, 0.0, 0.0))
    u = jax.vmap(lp.sample)(jax.random.split(jax.random.key(0), 2000))
    lens = jax.vmap(lp.lens)(u)
    assert float(lens.theta_e.min()) > 0 and float(jnp.hypot(lens.e1, lens.e2).max()) < 0.95
    assert np.isneginf(float(lp.log_prob(jnp.asarray([-0.1, 0.0, 0.0]))))
    assert np.isneginf(float(lp.log_prob(jnp.asarray([1.2, 0.9, 0.5]))))
    assert np.isfinite(float(lp.log_prob(jnp.asarray([1.2, 0.1, 0.0]))))
    with pytest.raises(ValueError, match="widths"):
        LensPrior.make(TRUTH, TRUTH._replace(e1=-0.1))
    with pytest.raises(ValueError, match="theta_e > 0"):
        LensPrior.make(TRUTH._replace(theta_e=-1.0), WIDTHS)
    with pytest.raises(ValueError, match="geometry"):
        A, AT = lens_operator(TRUTH, GEO)
        joint_chains(jax.random.key(0), lambda x, t: -x, observe(jnp.zeros((12, 12)), 0.1, A=A, AT=AT), SDE,
                     LensPrior.make(TRUTH, WIDTHS), n_chains=1, n_steps=2)


def test_corner_plot_and_lens_table(tmp_path):
    from jaxlens.fit_lens import _write_lens_outputs

    table = np.asarray(TRUTH)[None] + 0.01 * np.random.default_rng(0).normal(size=(40, 7))
    _write_lens_outputs(str(tmp_path), table, LensPrior.make(GUESS, WIDTHS), TRUTH)
    assert (tmp_path / "corner.png").stat().st_size > 10_000
    np.testing.assert_allclose(np.loadtxt(tmp_path / "lens_samples.csv", delimiter=",", skiprows=1), table,
                               rtol=1e-7)


def test_fit_lens_cli_writes_lens_samples_and_diagnostics(tmp_path):
    import subprocess
    import sys
    import os

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    guess = tmp_path / "guess.json"
    guess.write_text(json.dumps({**TRUTH._asdict(), "theta_e": 1.26, "e1": 0.05, "gamma1": 0.02,
                                 "gamma2": -0.01}))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, os.path.join(repo, "bin", "sample"), "--fit_lens", f"--lens={guess}",
                        f"--out={out}", "--config.sampling.n_chains=2", "--config.fit_lens.n_steps=25"],
                       env=dict(os.environ, XLA_FLAGS=""), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("lens_samples.csv", "samples.fits", "summary.json", "figure1.png"):
        assert (out / name).is_file(), name
    assert not (out / "corner.png").exists() and "no corner.png: 2 samples of 7" in r.stderr
    table = np.loadtxt(out / "lens_samples.csv", delimiter=",", skiprows=1)
    assert table.shape == (2, 7) and (out / "lens_samples.csv").read_text().startswith("theta_e,e1,e2")
    lens = json.loads((out / "summary.json").read_text())["lens"]
    assert lens["first_guess"]["theta_e"] == 1.26 and lens["truth"]["theta_e"] == 1.2
    assert set(lens["free"]) == set(LensParams._fields) and 0 < lens["acceptance"] <= 1
    assert all(k in lens["rhat"] and k in lens["ess"] for k in lens["free"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_steps"] == 25 and summary["network_evaluations"]["per_sample_min"] >= 25 * 4  # ≥ 2 + 2 a step
    np.testing.assert_allclose([lens["mean"][k] for k in LensParams._fields], table.mean(0), atol=1e-6)
    assert "lens: theta_e" in r.stdout
    # A bad lens prior is one line and exit 2, before --out is touched.
    bad = subprocess.run([sys.executable, os.path.join(repo, "bin", "sample"), "--fit_lens", f"--out={tmp_path / 'bad'}",
                          "--config.fit_lens.theta_e_std=-0.1"], env=dict(os.environ, XLA_FLAGS=""),
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "theta_e_std=-0.1" in bad.stderr and not (tmp_path / "bad").exists()
