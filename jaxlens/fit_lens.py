"""One joint reconstruction of the source and the lens, end to end: what `bin/sample --fit_lens` runs.

  summary = reconstruct_joint(problem, prior, SamplingOptions(...), FitLensOptions(...), out_dir,
                              truth_lens=None)

`problem.lens` is the first guess: the lens prior is centred on it. The outputs are those of the
known-lens run (samples, mean, std, residuals, figures; each sample lensed by its own chain's lens),
plus `lens_samples.csv` (one row per sample, the 7 parameters), `corner.png`, and a `lens` entry in
summary.json: posterior mean and std, the first guess, the truth when simulated, R-hat and ESS (arviz)
over the last quarter of each chain's lens trace, and the HMC acceptance rate.
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxlens.lensing import LensParams, check_lens, lens_operator, render
from jaxlens.prior import LoadedPrior
from jaxlens.reconstruct import SamplingOptions, check_compatible, finish_summary, n_steps_for, write_outputs
from jaxlens.sample import observe
from jaxlens.sample.joint import JointStep, LensPrior, check_moves, check_widths, lens_table
from jaxlens.simulation import Problem

__all__ = ["FitLensOptions", "reconstruct_joint"]

FIELDS = LensParams._fields


@dataclasses.dataclass(frozen=True)
class FitLensOptions:
    """The lens prior's widths around the first guess, and the lens moves.

    Attributes:
      theta_e_std: θ_E width, arcsec.
      e_std: width of e1 and e2.
      center_std: width of the centre, arcsec.
      gamma_std: width of the shear components.
      leapfrog_steps, step_size: the HMC move made at every diffusion step.
      refresh_cycles: Gibbs sweeps after the first pass: each re-noises the sources to `refresh_t`
        and runs the joint steps from there to t = 0 again (docs/validation.md measures what they buy).
      refresh_t: the time the sweeps restart from.
      n_steps: the joint run's diffusion steps, one lens move each (0: the source sampler's N). The
        lens needs more moves than the source needs steps, so it has its own.
    """

    theta_e_std: float = 0.1
    e_std: float = 0.05
    center_std: float = 0.05
    gamma_std: float = 0.02
    leapfrog_steps: int = 3
    step_size: float = 0.5
    refresh_cycles: int = 0
    refresh_t: float = 0.5
    n_steps: int = 200

    def __post_init__(self):
        # Checked here, before bin/sample touches --out, with the checks the sampler applies.
        check_widths({k: getattr(self, k) for k in ("theta_e_std", "e_std", "center_std", "gamma_std")})
        check_moves(self.leapfrog_steps, self.step_size)
        if self.n_steps < 0 or self.refresh_cycles < 0 or not 0.0 < self.refresh_t <= 1.0:
            raise ValueError(f"need n_steps >= 0, refresh_cycles >= 0 and 0 < refresh_t <= 1, got {self.n_steps}, "
                             f"{self.refresh_cycles}, {self.refresh_t}")

    def lens_prior(self, guess: LensParams) -> LensPrior:
        return LensPrior.around(guess, theta_e=self.theta_e_std, e=self.e_std, center=self.center_std,
                                gamma=self.gamma_std)


def run_joint(step: JointStep, key: jax.Array, n_chains: int, n_steps: int, fit: FitLensOptions, *,
              segment: int = 10, progress: bool = True):
    """The joint chains with a progress bar: (x [n, H, W, C], u [n, n_free], trace [n, K, n_free], acceptance,
    network evaluations [n])."""
    index = jnp.arange(n_chains, dtype=jnp.int32)
    advance = jax.jit(step.advance, static_argnums=5)
    x, u = jax.jit(step.init)(key, index)
    start = int(round((1.0 - fit.refresh_t) * n_steps))
    passes = [(key, 0)] + [(jax.random.fold_in(key, 1 + c), start) for c in range(fit.refresh_cycles)]
    traces, accepts, cost = [], [], np.zeros(n_chains, np.int64)
    with tqdm(total=sum(n_steps - s for _, s in passes), desc="joint", disable=not progress,
              dynamic_ncols=True) as bar:
        for k, first in passes:
            if first > 0:  # a Gibbs sweep: re-noise the sources to refresh_t, then the same steps from there
                t = 1.0 - first / n_steps
                x = x + step.sde.sigma(t) * jax.random.normal(jax.random.fold_in(k, -1 % 2**31), x.shape, x.dtype)
            for s in range(first, n_steps, segment):
                x, u, tr, acc, c = advance(k, index, x, u, jnp.arange(s, min(s + segment, n_steps)), n_steps)
                cost += np.asarray(c)
                traces.append(tr)
                accepts.append(acc)
                bar.update(min(segment, n_steps - s))
    return x, u, np.concatenate(traces, axis=1), np.concatenate(accepts, axis=1), cost


def reconstruct_joint(
    problem: Problem,
    prior: LoadedPrior,
    options: SamplingOptions,
    fit: FitLensOptions,
    out_dir: str,
    *,
    truth_lens: LensParams | None = None,
    settings: dict | None = None,
) -> dict:
    """Samples p(x, κ | y) and writes every output; returns the summary (also summary.json)."""
    t0 = time.perf_counter()
    check_lens(problem.lens)
    shape = check_compatible(problem, prior)
    y = problem.y if problem.y.ndim == 3 else problem.y[..., None]
    lens_prior = fit.lens_prior(problem.lens)
    obs = observe(y, problem.sigma_n, lens=problem.lens, geometry=problem.geometry)
    n_steps = n_steps_for(dataclasses.replace(options, n_steps=fit.n_steps) if fit.n_steps else options, prior, shape)
    step = JointStep.make(prior.score_fn(), obs, prior.sde, lens_prior, likelihood=options.likelihood,
                          solver=options.make_solver(), leapfrog_steps=fit.leapfrog_steps, step_size=fit.step_size)
    setup_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    x, u, trace, accept, evaluations = run_joint(step, jax.random.key(options.seed), options.n_chains, n_steps,
                                                 fit, progress=options.progress)
    lenses = step.lenses(u)
    samples = np.asarray(x)
    sampling_s = time.perf_counter() - t1

    t2 = time.perf_counter()
    lensed = np.asarray(jax.jit(jax.vmap(lambda s, k: render(s, k, problem.geometry)))(x, lenses))
    table = lens_table(lenses)
    mean_lens = LensParams(*(float(v) for v in table.mean(axis=0)))
    A_mean, _ = lens_operator(mean_lens, problem.geometry)
    A_truth = lens_operator(truth_lens, problem.geometry)[0] if truth_lens is not None else None
    summary = write_outputs(problem, y, samples, A_mean, out_dir, lensed=lensed, A_truth=A_truth)
    summary["lens"] = _lens_summary(table, np.asarray(trace), np.asarray(accept), lens_prior, truth_lens)
    if jax.process_index() == 0:
        _write_lens_outputs(out_dir, table, lens_prior, truth_lens)
    timings = {"setup_s": setup_s, "sampling_s": sampling_s, "outputs_s": time.perf_counter() - t2,
               "total_s": time.perf_counter() - t0}
    return finish_summary(summary, out_dir, n_steps=n_steps, timings=timings, evaluations=evaluations,
                          settings={**(settings or {}), **options.describe(), **dataclasses.asdict(fit),
                                    "n_steps": n_steps})


def _lens_summary(table, trace, accept, lens_prior: LensPrior, truth: LensParams | None) -> dict:
    import arviz as az

    free = [FIELDS[i] for i in lens_prior.free]
    tail = trace[:, -max(trace.shape[1] // 4, 4):, :]  # chains × draws × parameters, near t = 0
    posterior = az.convert_to_dataset({name: tail[..., j] for j, name in enumerate(free)})
    rhat, ess = az.rhat(posterior), az.ess(posterior)
    out = {
        "mean": dict(zip(FIELDS, table.mean(axis=0).round(6).tolist())),
        "std": dict(zip(FIELDS, table.std(axis=0, ddof=1).round(6).tolist())),
        "first_guess": dict(zip(FIELDS, (round(float(v), 6) for v in lens_prior.mean))),
        "prior_std": dict(zip(FIELDS, lens_prior.std)),
        "free": free,
        "rhat": {k: round(float(rhat[k]), 4) for k in free},
        "ess": {k: round(float(ess[k]), 1) for k in free},
        "acceptance": round(float(np.mean(accept)), 4),
    }
    if truth is not None:
        t = np.asarray([float(v) for v in truth])
        out["truth"] = dict(zip(FIELDS, t.round(6).tolist()))
        std = table.std(axis=0, ddof=1)
        z = np.where(std > 0, (t - table.mean(axis=0)) / np.where(std > 0, std, 1.0), 0.0)
        out["truth_z"] = {k: round(float(v), 3) for k, v in zip(FIELDS, z) if k in free}
    return out


def _write_lens_outputs(out_dir: str, table: np.ndarray, lens_prior: LensPrior, truth: LensParams | None) -> None:
    import corner
    import matplotlib

    matplotlib.use("Agg")
    np.savetxt(os.path.join(out_dir, "lens_samples.csv"), table, delimiter=",", header=",".join(FIELDS),
               comments="", fmt="%.8g")
    free = list(lens_prior.free)
    if len(table) <= len(free):  # corner needs more samples than parameters
        warnings.warn(f"no corner.png: {len(table)} samples of {len(free)} free lens parameters", stacklevel=3)
        return
    fig = corner.corner(table[:, free], labels=[FIELDS[i] for i in free],
                        truths=[float(truth[i]) for i in free] if truth is not None else None,
                        show_titles=True, title_fmt=".4f", quantiles=[0.16, 0.5, 0.84],
                        plot_contours=len(table) >= 50, plot_density=len(table) >= 50)  # few chains: points
    fig.savefig(os.path.join(out_dir, "corner.png"), dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
