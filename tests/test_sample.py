"""Tests of jaxlens.sample against linear algebra on analytic Gaussian priors.

Oracles: the exact linear-Gaussian posterior (`linear_gaussian_posterior`) and
the exact law of the Euler–Maruyama chain for a Gaussian prior
(`gaussian_em_moments`, a float64 recursion). The second separates the
discretisation and approximation error of a likelihood mode (deterministic)
from Monte-Carlo error (which the sampler adds), so the sampler can be checked
within pure MC error for every mode, biased or not.

Monte-Carlo tolerances: with n chains, a pixel's sample mean error divided by
its true std is N(0, 1/n) and its std ratio minus one is ≈ N(0, 1/(2n)). Over
P = 256 pixels we assert the RMS of these z-scores (scaled by √n, √(2n)) is
below 1.5 (its expectation is ≈ 1; pixel correlations widen its spread) and
the maximum below 4.5 (a Bonferroni bound: 256 · P(|N(0,1)| > 4.5) ≈ 2e-3).
Keys are fixed, so the tests are deterministic; the margins make them robust.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from jaxlens.lensing import Geometry, LensParams, lens_operator, simulate
from jaxlens.reference import (
    dense_operator,
    gaussian_em_moments,
    gaussian_prior_sample,
    gaussian_prior_score,
    isotropic_gaussian_prior,
    linear_gaussian_posterior,
    smooth_gaussian_prior,
)
from jaxlens.sample import (
    DPS,
    Eq12,
    Eq19,
    EulerMaruyama,
    PredictorCorrector,
    ProbabilityFlow,
    Tweedie,
    convolved_likelihood_score,
    data_mesh,
    euler_maruyama,
    exact_likelihood_score,
    likelihood_from_name,
    observe,
    posterior_score,
    sample_posterior,
    sample_prior,
    solve,
)
from jaxlens.sde import VESDE

SHAPE = (16, 16, 1)
GEOM = Geometry(src_npix=16, src_fov=2.0, fine_npix=32, img_fov=3.0, pool=2)
LENS = LensParams(1.0, 0.1, -0.05, 0.02, -0.03, 0.02, 0.01)
SDE = VESDE(1e-3, 40.0)
MC_RMS, MC_MAX = 1.5, 4.5
# tweedie's Lanczos solve converges within 60 here (run to convergence: no drift stop); its small
# eigenproblem grows as cap³.
TERMS = {"eq19": Eq19(), "eq12": Eq12(cg_tol=1e-4, cg_maxiter=100), "tweedie": Tweedie(lanczos_cap=60, drift_tol=0)}


@pytest.fixture(scope="module")
def lens():
    """The real lens operator, its dense matrix, and dense jnp versions (fast for many chains)."""
    A, AT = lens_operator(LENS, GEOM)
    M = dense_operator(A, SHAPE)
    mj = jnp.asarray(M, jnp.float32)

    def Ad(x):
        return (mj @ x.reshape(-1)).reshape(GEOM.img_shape + (1,))

    def ATd(y):
        return (mj.T @ y.reshape(-1)).reshape(SHAPE)

    return A, AT, M, Ad, ATd


def _observe(prior, M, sigma_n, seed=5):
    x = np.asarray(gaussian_prior_sample(jax.random.key(seed), prior, 1)[0], np.float64)
    noise = np.random.default_rng(seed).standard_normal(GEOM.img_shape + (1,))
    return ((M @ x.ravel()).reshape(noise.shape) + sigma_n * noise).astype(np.float32)


def _zscores(samples, mean, std):
    n = samples.shape[0]
    z = (samples.mean(0) - mean) / std * np.sqrt(n)
    r = (samples.std(0, ddof=1) / std - 1.0) * np.sqrt(2 * n)
    return z, r


def _bias(mean, cov, ref_mean, ref_cov):
    sd = np.sqrt(np.diag(ref_cov)).reshape(ref_mean.shape)
    z = (mean - ref_mean) / sd
    ratio = np.sqrt(np.diag(cov)).reshape(ref_mean.shape) / sd
    return float(np.sqrt(np.mean(z**2))), float(np.median(ratio))


# --------------------------------------------------------------------------- likelihood terms


def _dense_scores(prior, M, x, y, sigma_n, mask, t):
    keep = (np.isfinite(sigma_n) & ~mask).ravel()
    m, yv, nv = M[keep], np.nan_to_num(y).ravel()[keep], sigma_n.ravel()[keep] ** 2
    xv, var_t = x.ravel().astype(np.float64), float(SDE.sigma(t)) ** 2
    prec = np.linalg.inv(prior.covariance() + var_t * np.eye(xv.size))
    dm = np.eye(xv.size) - var_t * prec  # ∂m/∂x of the Tweedie mean
    mean_t = xv + var_t * prec @ (np.asarray(prior.mean, np.float64).ravel() - xv)
    return {
        "eq19": m.T @ ((yv - m @ xv) / (nv + var_t)),
        "eq12": m.T @ np.linalg.solve(np.diag(nv) + var_t * m @ m.T, yv - m @ xv),
        "tweedie": dm @ m.T @ np.linalg.solve(np.diag(nv) + var_t * m @ dm @ m.T, yv - m @ mean_t),
        "dps": dm @ m.T @ ((yv - m @ mean_t) / nv),
    }


def test_likelihood_scores_match_dense_linear_algebra(lens):
    """Every mode, matrix-free with the real lens, against dense float64 formulas.

    A per-pixel noise map with infinite-noise pixels, a mask, and a NaN under
    the mask exercise the handling of pixels without information.
    """
    A, AT, M, _, _ = lens
    prior = smooth_gaussian_prior(SHAPE, jitter=0.05)
    prior_score = gaussian_prior_score(prior, SDE)
    rng = np.random.default_rng(0)
    y = rng.standard_normal(GEOM.img_shape).astype(np.float32)
    sigma_n = rng.uniform(0.05, 0.2, GEOM.img_shape).astype(np.float32)
    sigma_n[0, :3] = np.inf
    mask = np.zeros(GEOM.img_shape, bool)
    mask[5, 5:9] = True
    y[5, 6] = np.nan  # masked, so allowed
    x = rng.standard_normal(SHAPE).astype(np.float32)
    times = (0.25, 0.6)  # σ(t) = 0.013 and 0.58
    want = [_dense_scores(prior, M, x, y, sigma_n, mask, t) for t in times]
    obs = observe(y, sigma_n, A=A, AT=AT, mask=mask)
    terms = {"eq19": Eq19(), "eq12": Eq12(cg_tol=1e-6, cg_maxiter=500), "tweedie": Tweedie(lanczos_cap=500,
             lanczos_tol=1e-6, drift_tol=0), "dps": DPS()}
    assert set(terms) == set(want[0])

    @jax.jit
    @functools.partial(jax.vmap, in_axes=(None, 0))
    def scores(x, t):  # one compilation for every mode and time
        return {mode: (term.score(prior_score, obs, x, t, SDE), posterior_score(prior_score, term, obs, SDE)(x, t))
                for mode, term in terms.items()}

    out = scores(x, jnp.asarray(times, jnp.float32))
    for i, (t, expected) in enumerate(zip(times, want)):
        for mode, (lik, post) in out.items():
            got = np.asarray(lik[i], np.float64).ravel()
            err = np.linalg.norm(got - expected[mode]) / np.linalg.norm(expected[mode])
            assert err < 2e-3, (mode, t, err)
            np.testing.assert_allclose(post[i], prior_score(x, t) + lik[i], rtol=1e-4, atol=1e-4)
    t = times[1]
    got = convolved_likelihood_score(x, t, y, A, AT, sigma_n, SDE, mask=mask)
    assert np.linalg.norm(got.ravel() - want[1]["eq19"]) < 1e-4 * np.linalg.norm(want[1]["eq19"])
    got = exact_likelihood_score(x, t, y, A, AT, sigma_n, SDE, mask=mask, cg_tol=1e-6, cg_maxiter=500)
    assert np.linalg.norm(got.ravel() - want[1]["eq12"]) < 2e-3 * np.linalg.norm(want[1]["eq12"])


def test_bad_inputs_raise(lens):
    A, AT, _, _, _ = lens
    y = np.zeros(GEOM.img_shape, np.float32)
    for bad_sigma in (0.0, -0.1, np.where(np.eye(8, 8, dtype=bool), -1.0, 0.1).repeat(2, 0).repeat(2, 1),
                      np.nan):
        with pytest.raises(ValueError, match="sigma_n"):
            observe(y, bad_sigma, A=A, AT=AT)
    for bad in (np.nan, np.inf):
        y_bad = y.copy()
        y_bad[3, 4] = bad
        with pytest.raises(ValueError, match="NaN or Inf"):
            observe(y_bad, 0.1, A=A, AT=AT)
        mask = np.zeros_like(y_bad, bool)
        mask[3, 4] = True
        observe(y_bad, 0.1, A=A, AT=AT, mask=mask)  # masked: fine
        sig = np.full(y.shape, 0.1)
        sig[3, 4] = np.inf
        observe(y_bad, sig, A=A, AT=AT)  # no information there: fine
    with pytest.raises(ValueError):
        observe(np.zeros((15, 15), np.float32), 0.1, A=A, AT=AT)
    with pytest.raises(ValueError, match="broadcast"):
        observe(y, np.ones((3, 3)), A=A, AT=AT)
    with pytest.raises(ValueError, match="unknown likelihood"):
        likelihood_from_name("eq20")
    with pytest.raises(ValueError, match="no option"):
        likelihood_from_name("eq19", cg_maxiter=5)  # options do not leak across terms
    with pytest.raises(ValueError, match="lanczos_cap"):
        Tweedie(lanczos_cap=0)
    for window in ((1.0, 0.5), (-1.0, 1.0), 0.3, ("a", 1)):
        with pytest.raises(ValueError, match="covariance_gradient_sigmas"):
            Tweedie(covariance_gradient_sigmas=window)
    assert Tweedie(covariance_gradient_sigmas=[0.3, 3]).covariance_gradient_sigmas == (0.3, 3.0)
    with pytest.raises(ValueError, match="cg_tol"):
        Eq12(cg_tol=-1.0)
    with pytest.raises(ValueError, match="unknown likelihood"):
        sample_posterior(jax.random.key(0), None, y, A, AT, 0.1, SDE, 2, 4, likelihood="eq20", progress=False)
    with pytest.raises(ValueError, match="state of shape"):
        Eq19().score(None, observe(y, 0.1, A=A, AT=AT), jnp.zeros((16, 16)), 0.5, SDE)
    score = gaussian_prior_score(isotropic_gaussian_prior(SHAPE), SDE)
    with pytest.raises(ValueError, match="sigma_n"):
        sample_posterior(jax.random.key(0), score, y, A, AT, 0.0, SDE, 2, 4, progress=False)
    with pytest.raises(ValueError, match="y has shape|does not accept"):
        sample_posterior(jax.random.key(0), score, np.zeros((8, 8)), A, AT, 0.1, SDE, 2, 4, progress=False)
    with pytest.raises(ValueError, match="n_chains"):
        sample_prior(jax.random.key(0), score, SDE, SHAPE, 0, 4, progress=False)
    with pytest.raises(ValueError, match="typed PRNG key"):
        sample_prior(jax.random.PRNGKey(0), score, SDE, SHAPE, 2, 4, progress=False)


# --------------------------------------------------------------------------- solvers


def test_euler_maruyama_variance_converges_to_prior():
    """No likelihood, isotropic N(0, 1) prior: the sample variance tends to 1.

    The measured variance must equal the exact EM-law variance within MC error
    at every N, and that law's error must fall at least like 1/N (here the
    variance error of EM is in fact ≈ 1/N² for this linear problem).
    """
    sde = VESDE(1e-2, 50.0)
    shape, n = (32, 32, 1), 1024
    prior = isotropic_gaussian_prior(shape)
    score = gaussian_prior_score(prior, sde)
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(n))
    x0 = sde.sigma_max * jax.random.normal(jax.random.key(4), (n,) + shape)
    mc = np.sqrt(2.0 / (n * np.prod(shape)))  # relative std of a variance estimate
    errors, law_errors = [], []
    for n_steps in (20, 40, 80):
        x = jax.jit(jax.vmap(lambda k, x: euler_maruyama(k, score, sde, x, n_steps)))(keys, x0)
        var = float(np.var(np.asarray(x, np.float64)))
        law = float(np.mean(np.diag(gaussian_em_moments(prior, None, None, None, sde, n_steps,
                                                        likelihood="none")[1])))
        assert abs(var - law) < 4 * mc * law, (n_steps, var, law)
        errors.append(var - 1.0)
        law_errors.append(law - 1.0 - sde.sigma_min**2)
    print(f"\nEM variance error at N=20, 40, 80: measured {np.round(errors, 4)}, exact law {np.round(law_errors, 5)}")
    assert law_errors[0] / law_errors[1] > 1.9 and law_errors[1] / law_errors[2] > 1.9
    assert errors[0] > 8 * mc and abs(errors[2]) < errors[0] / 4


def test_solver_variants_and_trajectory():
    sde = VESDE(1e-2, 50.0)
    shape, n = (16, 16, 1), 512
    score = gaussian_prior_score(isotropic_gaussian_prior(shape), sde)
    keys = jax.random.split(jax.random.key(0), n)
    x0 = sde.sigma_max * jax.random.normal(jax.random.key(1), (n,) + shape)

    def var_of(solver, n_steps):
        f = jax.jit(jax.vmap(lambda k, x: solve(k, score, sde, x, n_steps, solver=solver)))
        return float(np.var(np.asarray(f(keys, x0))))

    mc = np.sqrt(2.0 / (n * np.prod(shape)))
    heun, euler_ode = var_of(ProbabilityFlow("heun"), 100), var_of(ProbabilityFlow("euler"), 100)
    pc = var_of(PredictorCorrector(snr=0.16), 100)
    print(f"\nvariance at N=100 (target 1): PF-Heun {heun:.4f}, PF-Euler {euler_ode:.4f}, PC {pc:.4f}")
    assert abs(heun - 1) < 0.02 and abs(heun - 1) < abs(euler_ode - 1) / 5
    # The Langevin corrector at snr 0.16 has a known O(snr²) bias (≈ +2.6 % in variance).
    assert 1.0 < pc < 1.06 and pc > 1 + 4 * mc

    final, traj = jax.jit(lambda k, x: euler_maruyama(k, score, sde, x, 40, keep_every=10))(keys[0], x0[0])
    assert traj.shape == (4,) + shape
    np.testing.assert_array_equal(traj[-1], final)
    np.testing.assert_array_equal(final, euler_maruyama(keys[0], score, sde, x0[0], 40))
    den = euler_maruyama(keys[0], score, sde, x0[0], 40, denoise=True)
    np.testing.assert_allclose(den, final * (1 - sde.sigma_min**2 / (1 + sde.sigma_min**2)), rtol=1e-6)
    with pytest.raises(ValueError, match="keep_every"):
        euler_maruyama(keys[0], score, sde, x0[0], 40, keep_every=7)


# --------------------------------------------------------------------------- closed forms


def test_closed_form_posterior(lens):
    """Isotropic N(0, I) prior, the real 16² lens operator (as a dense matrix for speed).

    Asserted: (1) each sampler run draws from the exact EM law of its mode within
    MC error; (2) 'tweedie' is exact for a Gaussian prior, so its samples match
    the closed-form posterior within MC error; (3) 'eq12' is not exact (it
    replaces p(x_0 | x_t) by N(x_t, σ²), ignoring the prior), but with this broad
    prior its bias is small: RMS mean error < 0.25 posterior std and median std
    ratio within 5 %. The bias of eq19/eq12/tweedie at three noise levels is printed.
    """
    _, _, M, Ad, ATd = lens
    prior = isotropic_gaussian_prior(SHAPE)
    score = gaussian_prior_score(prior, SDE)

    print("\nbias vs the exact posterior (EM law, N=200): sigma_n, mode, rms mean error/std, median std ratio")
    for sigma_n in (0.005, 0.05, 0.5):
        y = _observe(prior, M, sigma_n)
        post = linear_gaussian_posterior(prior, M, y, sigma_n)
        for mode in ("eq19", "eq12", "tweedie"):
            rms, ratio = _bias(*gaussian_em_moments(prior, M, y, sigma_n, SDE, 200, likelihood=mode), *post)
            print(f"  {sigma_n:6.3f} {mode:8s} {rms:7.3f} {ratio:6.3f}")

    n = 128
    cases = [("eq12", 0.05, 64), ("tweedie", 0.05, 64), ("tweedie", 0.5, 64), ("eq19", 0.5, 200)]
    for mode, sigma_n, n_steps in cases:
        y = _observe(prior, M, sigma_n)
        mu, cov = linear_gaussian_posterior(prior, M, y, sigma_n)
        law_mu, law_cov = gaussian_em_moments(prior, M, y, sigma_n, SDE, n_steps, likelihood=mode)
        samples = sample_posterior(jax.random.key(1), score, y, Ad, ATd, sigma_n, SDE, n, n_steps, likelihood=TERMS[mode],
                                   progress=False)
        assert samples.shape == (n,) + SHAPE and np.all(np.isfinite(samples))
        z, r = _zscores(samples, law_mu, np.sqrt(np.diag(law_cov)).reshape(SHAPE))
        msg = f"{mode} σ_n={sigma_n}: vs EM law rms z {np.sqrt(np.mean(z**2)):.2f} max {np.abs(z).max():.2f}"
        msg += f", std rms {np.sqrt(np.mean(r**2)):.2f} max {np.abs(r).max():.2f}"
        print(msg)
        assert np.sqrt(np.mean(z**2)) < MC_RMS and np.abs(z).max() < MC_MAX, msg
        assert np.sqrt(np.mean(r**2)) < MC_RMS and np.abs(r).max() < MC_MAX, msg
        rms, ratio = _bias(law_mu, law_cov, mu, cov)
        if mode == "tweedie":
            assert rms < 0.02 and abs(ratio - 1) < 0.01, (rms, ratio)  # discretisation only
            z, r = _zscores(samples, mu, np.sqrt(np.diag(cov)).reshape(SHAPE))
            assert np.sqrt(np.mean(z**2)) < MC_RMS and np.abs(z).max() < MC_MAX
            assert np.sqrt(np.mean(r**2)) < MC_RMS and np.abs(r).max() < MC_MAX
        elif mode == "eq12":
            assert rms < 0.25 and abs(ratio - 1) < 0.05, (rms, ratio)


# --------------------------------------------------------------------------- layout, resumption, stability


def test_layout_independence(lens):
    """1 device and 8 devices (10 chains, padded to 16) give the same samples."""
    _, _, M, A, AT = lens
    prior = smooth_gaussian_prior(SHAPE)
    score = gaussian_prior_score(prior, SDE)
    y = _observe(prior, M, 0.05)
    one, eight = data_mesh(jax.devices()[:1]), data_mesh(jax.devices())
    assert eight.devices.size == 8
    run = dict(n_chains=10, n_steps=120, progress=False, likelihood=Eq19())
    a = sample_posterior(jax.random.key(7), score, y, A, AT, 0.05, SDE, mesh=one, **run)
    b = sample_posterior(jax.random.key(7), score, y, A, AT, 0.05, SDE, mesh=eight, **run)
    # Same randomness; only the float32 rounding of batched reductions may differ.
    scale = np.abs(a).max()
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-5 * scale)
    assert np.abs(a[0] - a[1]).max() > 0.1 * scale  # chains differ
    # An elementwise prior score and no lens: identical to the bit.
    iso = gaussian_prior_score(isotropic_gaussian_prior(SHAPE), SDE)
    p1 = sample_prior(jax.random.key(7), iso, SDE, SHAPE, 10, 20, mesh=one, progress=False)
    p8 = sample_prior(jax.random.key(7), iso, SDE, SHAPE, 10, 20, mesh=eight, progress=False)
    np.testing.assert_array_equal(p1, p8)


def test_resume_after_interruption(lens, tmp_path):
    _, _, M, A, AT = lens
    prior = isotropic_gaussian_prior(SHAPE)
    score = gaussian_prior_score(prior, SDE)
    y = _observe(prior, M, 0.1)
    run = dict(n_chains=10, n_steps=150, chunk_size=4, progress=False, likelihood=Eq19())
    # Uninterrupted reference, with the scan split into segments for the progress bar.
    full = sample_posterior(jax.random.key(2), score, y, A, AT, 0.1, SDE, **dict(run, progress=True))

    class Killed(Exception):
        pass

    def die_after_first(chunk, n_chunks):
        assert n_chunks == 3
        if chunk == 0:
            raise Killed

    with pytest.raises(Killed):
        sample_posterior(jax.random.key(2), score, y, A, AT, 0.1, SDE, out_dir=tmp_path,
                         on_chunk=die_after_first, **run)
    assert sorted(p.name for p in (tmp_path / "chunks").glob("chunk_*.npz")) == ["chunk_00000.npz"]
    computed = []
    resumed = sample_posterior(jax.random.key(2), score, y, A, AT, 0.1, SDE, out_dir=tmp_path,
                               on_chunk=lambda c, n: computed.append(c), **run)
    assert computed == [1, 2]
    np.testing.assert_array_equal(resumed, full)
    with np.load(tmp_path / "chunks" / "chunk_00002.npz") as f:
        np.testing.assert_array_equal(f["indices"], [8, 9])
    (tmp_path / "chunks" / "chunk_00001.npz").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="cannot reuse chunk 1"):
        sample_posterior(jax.random.key(2), score, y, A, AT, 0.1, SDE, out_dir=tmp_path, **run)
    with pytest.raises(ValueError, match="other settings"):
        sample_posterior(jax.random.key(3), score, y, A, AT, 0.1, SDE, out_dir=tmp_path, **run)
    with pytest.raises(ValueError, match="other settings"):
        sample_posterior(jax.random.key(2), score, y, A, AT, 0.2, SDE, out_dir=tmp_path, **run)


def test_no_nan_over_8000_float32_steps():
    """Paper schedule (σ_min = 1e-4, σ_max = 263.4, N = 8000) at 64², eq19 and the real lens."""
    sde = VESDE(1e-4, 263.4)
    geom = Geometry(src_npix=64, src_fov=3.0, fine_npix=64, img_fov=4.0, pool=1)
    A, AT = lens_operator(LENS, geom)
    prior = isotropic_gaussian_prior((64, 64, 1))
    x = gaussian_prior_sample(jax.random.key(0), prior, 1)[0]
    y = simulate(jax.random.key(1), x, LENS, geom, 0.05)
    samples = sample_posterior(jax.random.key(2), gaussian_prior_score(prior, sde), y, A, AT, 0.05,
                               sde, 2, 8000, likelihood=Eq19(), progress=False, mesh=data_mesh(jax.devices()[:1]))
    assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
    resid = (np.asarray(jax.vmap(A)(samples)) - np.asarray(y)[None]) / 0.05
    assert np.sqrt(np.mean(resid**2)) < 3.0  # fits the data to the noise level
