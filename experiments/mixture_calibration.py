"""The likelihood terms against an exact posterior on a non-Gaussian (Gaussian-mixture) prior.

  python -m experiments.mixture_calibration [--sims 50] [--chains 32] [--n-steps 200]
      [--priors locations,scales] [--sigma-n 0.05,0.2] [--modes exact,tweedie,eq19] [--lanczos-cap 5] [--drift-tol 0]
      [--jacobian-error 0.1] [--json out/mixture.json]

Tweedie takes p(x₀ | x_t) to be Gaussian. On a Gaussian prior that is exact, so the analytic
Gaussian tests cannot see what the approximation costs. Here the prior is a two-component Gaussian
mixture (`jaxlens.reference.mixture_prior`) on 16² sources through a real SIE + shear operator, so
p(x₀ | x_t) is not Gaussian but the score, its Jacobian (hence tweedie's covariance) and the
posterior are all exact: what tweedie gets wrong is the Gaussian approximation and its solve's
truncation (--lanczos-cap). It was written to test whether the approximation explains tweedie's ~5 %
over-confidence on the learned 64² prior; at that noise level it does not (docs/validation.md).

Priors: 'locations' mixes two galaxy-like means (a round and an offset elongated blob: p(x₀ | x_t)
is bimodal at intermediate σ); 'scales' mixes one mean with fluctuations of std 0.05 and 0.3 (a
heavy-tailed, unimodal non-Gaussian prior, closer to the spread of real galaxy sizes and fluxes);
'gaussian' is the round component alone, the control on which tweedie is exact but for its solve
cap and step count.

Modes: 'exact' integrates the reverse SDE with the exact diffused posterior score (the sampler's own
error at this N), 'tweedie' and 'eq19' the likelihood terms with the exact prior score, and 'draws'
samples the posterior mixture directly (no SDE: the Monte-Carlo reference). 'gaussian_full' is
tweedie's own Gaussian N(y; A m(x_t), σ_n² I + A C(x_t) Aᵀ), differentiated through its covariance as
well as its mean (dense, an oracle only small problems afford): the library's term, like TMPD, follows
the mean's gradient alone, and the difference between the two is what that drops. 'gaussian_probe' is
the same with the log-determinant's gradient estimated from one random probe per step, as a scalable
version would. --jacobian-error δ
gives tweedie a score whose value is exact but whose Jacobian is J (I + δ E), a model of a learned
score's (see `with_jacobian_error`). For each it prints,
pooled over the simulations (truth drawn from the prior, y = A x + σ_n ε):
  var ratio   Σ tr Cov(samples) / Σ tr Cov(exact posterior): < 1 is too narrow;
  mean err    Σ ‖mean(samples) − exact mean‖² / Σ tr Cov(exact), × n chains (≈ 1 for exact draws);
  weight err  mean total-variation distance of the samples' component fractions from the exact weights;
  spread/skill  against the truths, as in coverage.py (1 when calibrated), with a bootstrap error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxlens import io
from jaxlens.diagnostics import metrics
from jaxlens.lensing import Geometry, LensParams, lens_operator
from jaxlens.reference import (dense_operator, mixture_moments, mixture_posterior, mixture_prior,
                               mixture_prior_sample, mixture_prior_score, smooth_gaussian_prior)
from jaxlens.sample import (EulerMaruyama, Tweedie, likelihood_from_name, observe, posterior_chains, prior_chains,
                            state_probe)
from jaxlens.sde import VESDE

SHAPE = (16, 16, 1)
GEOM = Geometry(src_npix=16, src_fov=2.0, fine_npix=32, img_fov=3.0, pool=2)
LENS = LensParams(1.0, 0.1, -0.05, 0.02, -0.03, 0.02, 0.01)
SDE = VESDE(1e-3, 40.0)
DENSE_MODES = ("gaussian_full", "gaussian_probe")
MODES = ("draws", "exact", "tweedie", "eq19") + DENSE_MODES


def _blob(x0, y0, r, q=1.0, amp=1.0):
    u = np.arange(SHAPE[0]) - (SHAPE[0] - 1) / 2
    yy, xx = np.meshgrid(u, u, indexing="ij")
    return (amp * np.exp(-0.5 * (((xx - x0) / r) ** 2 + ((yy - y0) * q / r) ** 2)))[..., None]


def _component(mean, length_scale, std):
    prior = smooth_gaussian_prior(SHAPE, length_scale=length_scale, std=std, jitter=0.02)
    return prior._replace(mean=jnp.asarray(mean, jnp.float32))


def make_prior(name: str):
    round_galaxy = _component(_blob(0, 0, 2.5), 2.0, 0.1)
    if name == "gaussian":  # tweedie is exact here but for its solve and N
        return mixture_prior([round_galaxy], [1.0])
    if name == "locations":
        elongated = _component(_blob(2.5, -1.5, 3.0, q=2.0, amp=0.8), 1.5, 0.1)
        return mixture_prior([round_galaxy, elongated], [0.5, 0.5])
    if name == "scales":
        return mixture_prior([_component(_blob(0, 0, 2.5), 2.0, s) for s in (0.05, 0.3)], [0.5, 0.5])
    raise ValueError(f"unknown prior {name!r}; use 'locations', 'scales' or 'gaussian'")


def with_jacobian_error(score_fn, delta: float, dim: int, seed: int = 0):
    """The same score, but differentiated as J (I + δ E) with E a fixed random matrix of spectral norm 1.

    A model of a learned score, whose Jacobian is a few per cent off and asymmetric: tweedie's
    C = σ² I + σ⁴ J multiplies that error by σ⁴ where C itself is only the prior's covariance,
    so at large σ the C it sees is indefinite, as the learned prior's is. Only 'tweedie' reads J.
    """
    e = np.random.default_rng(seed).standard_normal((dim, dim))
    e = jnp.asarray(e / np.linalg.norm(e, 2), jnp.float32)

    @jax.custom_jvp
    def score(x, t):
        return score_fn(x, t)

    @score.defjvp
    def score_jvp(primals, tangents):
        x, t = primals
        dx = tangents[0] + delta * (e @ tangents[0].reshape(-1)).reshape(x.shape)
        return jax.jvp(lambda z: score_fn(z, t), (x,), (dx,))

    return score


def _exact_chains(n_chains: int, n_steps: int):
    """The core's chains under the exact diffused posterior score (a mixture, sampled as a prior with no
    likelihood term); the posterior is an argument, so one compilation serves every simulation."""

    @jax.jit
    def run(key, post):
        return prior_chains(key, mixture_prior_score(post, SDE), SDE, SHAPE, n_chains=n_chains, n_steps=n_steps,
                            with_cost=True)

    return run


def gaussian_log_likelihood(prior_score, M, sigma_n, x, t, y, *, through_cov=True, probe=None):
    """log N(y; A m(x), σ_n² I + A C(x) Aᵀ) up to a constant, tweedie's Gaussian p_t(y | x_t), dense.

    m(x) = x + σ² s(x) and C(x) = σ² ∂m/∂x are tweedie's moments of p(x₀ | x_t) (one JVP per pixel).
    Its gradient in x is the likelihood score; with `through_cov=False` C is held fixed, which is the
    library's term (the mean's gradient alone, as in TMPD). With a Rademacher `probe` w, the
    log-determinant is replaced by Hutchinson's ½ wᵀ Σ⁻¹ A C(x) Aᵀ w with Σ⁻¹ held fixed: the same
    gradient in expectation, the form a network-scale term could afford.
    """
    var_t = SDE.sigma(t) ** 2
    mean = lambda z: z + var_t * prior_score(z.reshape(SHAPE), t).reshape(-1)  # noqa: E731
    m, jac = mean(x.reshape(-1)), jax.jacfwd(mean)(x.reshape(-1))
    if not through_cov:
        jac = jax.lax.stop_gradient(jac)
    cov = M @ (var_t * 0.5 * (jac + jac.T)) @ M.T + sigma_n**2 * jnp.eye(M.shape[0])
    chol = jnp.linalg.cholesky(cov)
    white = jax.scipy.linalg.solve_triangular(chol, y.reshape(-1) - M @ m, lower=True)
    if probe is None:
        return -0.5 * white @ white - jnp.sum(jnp.log(jnp.diag(chol)))
    sol = jax.scipy.linalg.cho_solve((jax.lax.stop_gradient(chol), True), probe)
    return -0.5 * white @ white - 0.5 * sol @ (cov @ probe)


def _full_gaussian_chains(prior_score, sigma_n, mj, n_chains: int, n_steps: int, probe: bool = False):
    """Chains under the prior score plus the whole gradient of `gaussian_log_likelihood` (mj: the dense
    operator in float32). Each step costs D + 1 score evaluations and their second derivatives (counted
    as D + 1)."""

    @jax.jit
    def run(key, y):
        def score(x, t):
            # The library's probe (Tweedie's covariance gradient draws the same): one per chain and step.
            w = state_probe(x, t, (mj.shape[0],)) if probe else None
            lik = jax.grad(gaussian_log_likelihood, argnums=3)(prior_score, mj, sigma_n, x, t, y, probe=w)
            return prior_score(x, t) + lik, 1 + x.size

        return prior_chains(key, score, SDE, SHAPE, n_chains=n_chains, n_steps=n_steps, with_cost=True)

    return run


def _posterior_chains(score, term, sigma_n, Ad, ATd, n_chains: int, n_steps: int, solver):
    """The core's chains with a likelihood term; y is an argument, so one compilation serves every simulation."""

    @jax.jit
    def run(key, y):
        return posterior_chains(key, score, observe(y, sigma_n, A=Ad, AT=ATd), SDE, likelihood=term,
                                n_chains=n_chains, n_steps=n_steps, solver=solver, with_cost=True)

    return run


def _weight_error(post, xs):
    """Total-variation distance between the samples' component fractions and the posterior weights.

    Each sample is put in its most probable component under the exact posterior.
    """
    k = len(post.weights)
    lam = np.maximum(post.eigvals, 1e-12)
    d = xs.reshape(len(xs), 1, -1) - post.means.reshape(1, k, -1)
    z = np.einsum("kij,nki->nkj", post.eigvecs, d)
    log_p = np.log(post.weights) - 0.5 * np.sum(z**2 / lam, -1) - 0.5 * np.sum(np.log(lam), -1)
    frac = np.bincount(np.argmax(log_p, axis=1), minlength=k) / len(xs)
    return 0.5 * np.abs(frac - post.weights).sum()


def run_setting(prior_name, sigma_n, modes, sims, chains, n_steps, lanczos_cap, seed=0, jacobian_error=0.0,
                drift_tol=0.0, solver=EulerMaruyama(), covariance_gradient_sigmas=None):
    """One (prior, σ_n) cell: each mode's pooled accuracy, divergences, seconds and network evaluations."""
    prior = make_prior(prior_name)
    A, _ = lens_operator(LENS, GEOM)
    M = dense_operator(A, SHAPE)
    mj = jnp.asarray(M, jnp.float32)
    Ad = lambda x: (mj @ x.reshape(-1)).reshape(GEOM.img_shape + (1,))  # noqa: E731
    ATd = lambda r: (mj.T @ r.reshape(-1)).reshape(SHAPE)  # noqa: E731
    score = mixture_prior_score(prior, SDE)
    if jacobian_error:
        score = with_jacobian_error(score, jacobian_error, int(np.prod(SHAPE)))
    exact = _exact_chains(chains, n_steps)
    tweedie = Tweedie(lanczos_cap=lanczos_cap, drift_tol=drift_tol,
                      covariance_gradient_sigmas=covariance_gradient_sigmas)
    terms = {m: tweedie if m == "tweedie" else likelihood_from_name(m)
             for m in modes if m not in ("draws", "exact") + DENSE_MODES}
    posterior = {m: _posterior_chains(score, term, sigma_n, Ad, ATd, chains, n_steps, solver)
                 for m, term in terms.items()}
    for m in DENSE_MODES:
        if m in modes:
            posterior[m] = _full_gaussian_chains(score, sigma_n, mj, chains, n_steps, probe=m == "gaussian_probe")
    truths = np.asarray(mixture_prior_sample(jax.random.key(seed), prior, sims), np.float64)
    rng = np.random.default_rng(seed)
    acc = {m: {"samples": [], "mean_sq": [], "w_err": [], "evaluations": []} for m in modes}
    exact_trace = np.zeros(sims)  # tr Cov of each simulation's exact posterior, shared by every mode
    seconds = {m: 0.0 for m in modes}
    for i in tqdm(range(sims), desc=f"{prior_name} σ_n={sigma_n}", leave=False):
        y = (M @ truths[i].ravel() + sigma_n * rng.standard_normal(M.shape[0])).reshape(GEOM.img_shape + (1,))
        post = mixture_posterior(prior, M, y, sigma_n)
        mean, cov = mixture_moments(post)
        exact_trace[i] = np.trace(cov)
        key = jax.random.fold_in(jax.random.key(seed + 1), i)
        for m in modes:
            t0 = time.perf_counter()
            if m == "draws":
                xs, cost = mixture_prior_sample(key, post, chains), 0
            elif m == "exact":
                xs, cost = exact(key, jax.tree.map(jnp.asarray, post))
            else:
                xs, cost = posterior[m](key, jnp.asarray(y, jnp.float32))
            acc[m]["evaluations"].append(np.mean(cost))
            xs = np.asarray(xs, np.float64)
            seconds[m] += time.perf_counter() - t0
            flat = xs.reshape(chains, -1)
            a = acc[m]
            a["samples"].append(xs)
            a["mean_sq"].append(np.sum((flat.mean(0) - mean) ** 2))
            a["w_err"].append(_weight_error(post, flat))
    rows = {}
    for m in modes:
        a = acc[m]
        xs = np.stack(a["samples"])
        finite = np.isfinite(xs.reshape(sims, -1)).all(1)
        if not finite.any():  # every simulation diverged: nothing to score
            rows[m] = {k: float("nan") for k in ("var_ratio", "mean_err", "weight_err", "spread_skill",
                                                 "spread_skill_err")}
            rows[m].update(diverged=sims, seconds_per_sim=seconds[m] / sims,
                           evaluations_per_sample=float(np.mean(a["evaluations"])))
            continue
        spread, _ = metrics.spread_and_skill(xs[finite], truths[finite])
        ratio, err = metrics.spread_skill(xs[finite], truths[finite])
        tr = exact_trace[finite]
        rows[m] = {
            "var_ratio": float(spread.sum() / (2 * tr.sum())),
            "mean_err": float(np.sum(np.asarray(a["mean_sq"])[finite]) / tr.sum() * chains),
            "weight_err": float(np.mean(np.asarray(a["w_err"])[finite])),
            "spread_skill": ratio, "spread_skill_err": err,
            "diverged": int((~finite).sum()), "seconds_per_sim": seconds[m] / sims,
            "evaluations_per_sample": float(np.mean(a["evaluations"])),
        }
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=50)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--n-steps", type=int, default=200)
    ap.add_argument("--priors", default="locations,scales")
    ap.add_argument("--sigma-n", default="0.05,0.2")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--lanczos-cap", type=int, default=5)
    ap.add_argument("--drift-tol", type=float, default=0.0, help="tweedie's drift tolerance (0: off)")
    ap.add_argument("--jacobian-error", type=float, default=0.0,
                    help="relative error δ of the prior score's Jacobian as tweedie sees it (see with_jacobian_error)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join("out", "mixture_calibration.json"), help="the rows go here")
    args = ap.parse_args()
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        raise SystemExit(f"unknown modes {sorted(unknown)}; choose from {MODES}")
    env = io.environment()
    print(f"# mixture calibration, {env['date']}, {env['cpu']}, {env['cores']} cores, JAX {env['jax']}")
    print(f"# {args.sims} simulations x {args.chains} chains, N = {args.n_steps}, tweedie cap {args.lanczos_cap}"
          + (f", Jacobian error δ = {args.jacobian_error}" if args.jacobian_error else ""))
    print("| prior | σ_n | mode | var ratio | mean err | weight err | spread/skill | diverged | evals / sample "
          "| s / sim |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    out = []
    for p in args.priors.split(","):
        for s in (float(v) for v in args.sigma_n.split(",")):
            rows = run_setting(p, s, modes, args.sims, args.chains, args.n_steps, args.lanczos_cap, args.seed,
                               args.jacobian_error, drift_tol=args.drift_tol)
            for m, r in rows.items():
                print(f"| {p} | {s} | {m} | {r['var_ratio']:.3f} | {r['mean_err']:.2f} | {r['weight_err']:.3f} | "
                      f"{r['spread_skill']:.3f} ± {r['spread_skill_err']:.3f} | {r['diverged']} | "
                      f"{r['evaluations_per_sample']:.0f} | {r['seconds_per_sim']:.2f} |", flush=True)
                out.append({"prior": p, "sigma_n": s, "mode": m, **r})
    print("wrote", io.write_results(args.json, {"command": sys.argv, "args": vars(args), "rows": out}))


if __name__ == "__main__":
    main()
