"""Mixed precision (bfloat16 compute, float32 state and accumulation) must not change the science.

These tests run on the CPU, where XLA emulates bfloat16: they check the numerics of the bf16
path, not its speed (benchmarks/sampler_throughput.py measures that on a GPU).

1. Analytic Gaussian prior: the prior score is computed the way the bf16 network computes,
   with bfloat16 operands and float32 accumulation, while the sampler state stays float32.
   With the paper's eq. 19 likelihood the samples still follow the exact law of the
   Euler–Maruyama chain within Monte-Carlo error, as the float32 test in test_sample.py
   asserts, and so do they with 'tweedie', which differentiates the score (see its test). 'dps'
   is not checked (it diverges in float32 too), so bin/sample refuses it in bfloat16.
2. The shipped 64² prior loaded with bfloat16 compute, with 'tweedie' (its forward pass, JVP and VJP
   all run in bfloat16): the same chains (same keys) as in float32 must reach the same χ²_ν and
   nearly the same sources.
"""

from __future__ import annotations

import os

import numpy as np

import jax
import jax.numpy as jnp

from jaxlens.data import HELD_OUT_SEED_START, procedural_galaxy
from jaxlens.diagnostics import metrics
from jaxlens.lensing import lens_operator
from jaxlens.prior import load_prior
from jaxlens.reconstruct import simulated_problem
from jaxlens.reference import gaussian_em_moments, smooth_gaussian_prior
from jaxlens.sample import Tweedie, sample_posterior
from test_sample import MC_MAX, MC_RMS, SDE, SHAPE, _observe, _zscores, lens  # noqa: F401 (lens: a fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINT = os.path.join(REPO, "checkpoints", "procedural_64")


def _bf16_gaussian_score(prior):
    """∇ log N(x; μ, Σ + σ²I) = −V diag(1/(λ+σ²)) Vᵀ (x − μ), with bf16 operands, f32 accumulation."""
    v = jnp.asarray(prior.eigvecs, jnp.bfloat16)
    lam, mean = jnp.asarray(prior.eigvals, jnp.float32), jnp.asarray(prior.mean, jnp.float32)

    def score(x, t):
        d = (x - mean).reshape(-1).astype(jnp.bfloat16)
        coef = jnp.matmul(v.T, d, preferred_element_type=jnp.float32) / (lam + SDE.sigma(t) ** 2)
        out = jnp.matmul(v, coef.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
        return -out.reshape(x.shape)

    return score


def _gaussian_run(lens, mode, sigma_n, n_steps, score_of_prior, lanczos_cap=60):
    # A well-conditioned Σ (condition number ~500 rather than the default ~25000): bf16 operands carry
    # 3 significant digits, so an ill-conditioned dense Σ⁻¹ is not a model of the network's rounding.
    prior = smooth_gaussian_prior(SHAPE, jitter=0.05)
    _, _, M, Ad, ATd = lens
    y = _observe(prior, M, sigma_n)
    law_mu, law_cov = gaussian_em_moments(prior, M, y, sigma_n, SDE, n_steps, likelihood=mode)
    samples = sample_posterior(jax.random.key(1), score_of_prior(prior), y, Ad, ATd, sigma_n, SDE, 128,
                               n_steps, likelihood=Tweedie(lanczos_cap=lanczos_cap, drift_tol=0) if mode == "tweedie" else mode,
                               progress=False)
    assert samples.dtype == np.float32
    z, r = _zscores(samples, law_mu, np.sqrt(np.diag(law_cov)).reshape(SHAPE))
    rms_z, rms_r = np.sqrt(np.mean(z**2)), np.sqrt(np.mean(r**2))
    print(f"bf16 {mode}: rms z {rms_z:.2f}, std rms {rms_r:.2f}")
    return rms_z, rms_r, np.abs(z).max(), np.abs(r).max()


def test_bf16_score_keeps_the_eq19_gaussian_posterior(lens):
    rms_z, rms_r, max_z, max_r = _gaussian_run(lens, "eq19", 0.5, 200, _bf16_gaussian_score)
    assert rms_z < MC_RMS and max_z < MC_MAX and rms_r < MC_RMS and max_r < MC_MAX


def test_bf16_score_keeps_the_tweedie_gaussian_posterior(lens):
    """m = x + σ² s(x) cancels x at large σ, so bf16 rounding of s, times σ², perturbs ∂m/∂x and
    makes A C Aᵀ indefinite and asymmetric. With plain CG that run blew up, and with the Lanczos
    solve's Ritz values raised to σ_n² it stayed finite but off the law (rms z 1.63). The gain
    form, which drops the negative-curvature directions, keeps the float32 run's agreement."""
    rms_z, rms_r, max_z, max_r = _gaussian_run(lens, "tweedie", 0.05, 64, _bf16_gaussian_score, lanczos_cap=30)
    assert rms_z < MC_RMS and max_z < MC_MAX and rms_r < MC_RMS and max_r < MC_MAX


def test_bf16_shipped_prior_keeps_chi2():
    from configs import procedural_64
    from jaxlens.cli import common

    config = procedural_64.get_config()
    geo, lens_p, sigma_n = common.geometry(config), common.lens_params(config), float(config.lens.sigma_n)
    problem = simulated_problem(jax.random.key(3), procedural_galaxy(HELD_OUT_SEED_START + 7, geo.src_npix),
                                lens_p, geo, sigma_n)
    A, AT = lens_operator(lens_p, geo)
    out = {}
    for dtype in (jnp.float32, jnp.bfloat16):
        prior = load_prior(CHECKPOINT, dtype=dtype)
        xs = sample_posterior(jax.random.key(0), prior.score_fn(), problem.y, A, AT, sigma_n, prior.sde, 2, 50,
                              likelihood=Tweedie(lanczos_cap=3, drift_tol=0),
                              progress=False)
        chi2 = metrics.reduced_chi2(problem.y[None] - np.asarray(jax.vmap(A)(jnp.asarray(xs))), sigma_n)
        out[dtype] = xs, float(np.median(chi2))
    (x32, c32), (x16, c16) = out[jnp.float32], out[jnp.bfloat16]
    diff = np.linalg.norm(x16 - x32) / np.linalg.norm(x32)
    spread = np.linalg.norm(x32[0] - x32[1]) / np.linalg.norm(x32)  # two chains of the same posterior
    print(f"tweedie: χ²_ν float32 {c32:.4f}, bfloat16 {c16:.4f}; ‖Δx‖/‖x‖ = {diff:.4f} (chain spread {spread:.4f})")
    assert c32 < 1.3 and abs(c16 - c32) < 0.03 * c32
    assert diff < 0.25 * spread
