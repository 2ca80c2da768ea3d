"""One posterior reconstruction, end to end: problem, sampling, outputs and figures.

This is what `bin/sample` runs. It takes plain objects (no config):

  problem  = simulated_problem(...)  or  Problem(y, sigma_n, lens, geometry)
  summary  = reconstruct(problem, prior, SamplingOptions(...), out_dir)

Outputs in `out_dir`: samples.fits / samples.npz, mean.fits, std.fits,
observation.fits, residual_lens.fits (y − A·mean, in units of σ_n), truth.fits and
residual_source.fits (mean − truth) when the truth is known, summary.json,
figure1.png and figure3.png. Chunks of chains go to out_dir/chunks while running.
Chains that diverged (`diagnostics.diverged_chains`) are named in summary.json and left out
of the other outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens import io
from jaxlens.diagnostics import figures, metrics
from jaxlens.lensing import check_lens, lens_operator, normal_operator_norm
from jaxlens.prior import LoadedPrior
from jaxlens.sample import (Eq19, EulerMaruyama, Likelihood, PredictorCorrector, ProbabilityFlow, Tweedie,
                            sample_posterior)
from jaxlens.sde import stable_steps, step_confidence, steps_for_confidence
from jaxlens.simulation import Problem, simulated_problem

__all__ = ["DivergedError", "Problem", "SamplingOptions", "check_compatible", "n_steps_for", "reconstruct",
           "simulated_problem", "finish_summary", "write_outputs"]

SOLVERS = ("em", "pc", "ode")


@dataclasses.dataclass(frozen=True)
class SamplingOptions:
    """How to sample. `n_steps=0` chooses N by Technique 2 at `confidence`.

    `likelihood` is a term of `jaxlens.sample`: Tweedie(...) (calibrated, the default), Eq19()
    (the paper's), Eq12(...) or DPS().
    """

    n_chains: int = 16
    n_steps: int = 0
    confidence: float = 0.97
    likelihood: Likelihood = Tweedie()
    solver: str = "em"
    snr: float = 0.16
    denoise: bool = False
    chunk_size: int = 16
    seed: int = 1
    progress: bool = True

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.n_chains < 1 or self.n_steps < 0 or self.chunk_size < 1:
            raise ValueError(f"need n_chains >= 1, n_steps >= 0 and chunk_size >= 1, got {self}")

    def make_solver(self):
        """The reverse-SDE integrator object of `solver`."""
        if self.solver == "pc":
            return PredictorCorrector(snr=self.snr)
        if self.solver == "ode":
            return ProbabilityFlow()
        return EulerMaruyama()

    def describe(self) -> dict:
        """The options as JSON: the likelihood by name, with its own options beside it."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["likelihood"] = self.likelihood.name
        out.update(self.likelihood.options())
        return out


def n_steps_for(options: SamplingOptions, prior: LoadedPrior, shape: tuple[int, ...],
                curvature: float | None = None) -> int:
    """The configured N, or the smallest N with step_confidence(N) >= options.confidence.

    With the eq. 19 likelihood and `curvature` = λ_max(AᵀA) of the lens, the chosen N is also
    at least `stable_steps` (explicit Euler–Maruyama diverges below it on strongly magnified
    lenses), and a configured N below it draws a warning, as does one whose step confidence is
    below 0.5. Technique 2 is the paper's rule for its eq. 19 sampler; the Tweedie likelihood's
    default N = 57 was chosen by measured calibration per network evaluation, and no chain diverged
    on 200 held-out lenses at N = 50 or more, so only a Tweedie N below those 50 steps draws a warning.
    """
    args = (int(np.prod(shape)), prior.sde.sigma_min, prior.sde.sigma_max)
    stable = 2
    if isinstance(options.likelihood, Eq19) and curvature is not None:
        stable = stable_steps(curvature, prior.sde.sigma_min, prior.sde.sigma_max)
    if options.n_steps == 0:
        return max(steps_for_confidence(options.confidence, *args), stable)
    p = step_confidence(options.n_steps, *args) if options.n_steps >= 2 else 0.0
    if isinstance(options.likelihood, Tweedie) and options.n_steps < TWEEDIE_MIN_STEPS:
        warnings.warn(f"n_steps={options.n_steps} is below the {TWEEDIE_MIN_STEPS} steps at which the tweedie "
                      "likelihood was measured stable on held-out lenses", stacklevel=2)
    elif not isinstance(options.likelihood, Tweedie) and p < 0.5:
        warnings.warn(f"n_steps={options.n_steps} gives step_confidence {p:.2f} < 0.5; the reverse SDE "
                      f"may diverge (about {steps_for_confidence(0.97, *args)} steps reach 0.97)",
                      stacklevel=2)
    if options.n_steps < stable:
        warnings.warn(f"n_steps={options.n_steps} is below the {stable} steps that keep Euler–Maruyama stable "
                      f"with the eq19 likelihood on this lens (λ_max(AᵀA) = {curvature:.3g}); samples may blow up",
                      stacklevel=2)
    return options.n_steps


# The fewest steps at which the Tweedie likelihood (its default solve) ran without a diverged chain on 200
# held-out lenses (docs/validation.md).
TWEEDIE_MIN_STEPS = 50


class DivergedError(RuntimeError):
    """Fewer than two chains ended as posterior samples (see `metrics.diverged_chains`)."""


def check_compatible(problem: Problem, prior: LoadedPrior) -> tuple[int, int, int]:
    """The source shape [H, W, C]; raises if the prior was trained on another size."""
    h, w, c = (int(v) for v in prior.meta["image_shape"])
    g = problem.geometry
    if (h, w) != (g.src_npix, g.src_npix):
        raise ValueError(f"the prior was trained on {h}x{w} images but the geometry's source is "
                         f"{g.src_npix}x{g.src_npix}")
    y_c = problem.y.shape[-1] if problem.y.ndim == 3 else 1
    if y_c != c:
        raise ValueError(f"the prior has {c} channel(s) but the observation has {y_c}")
    return h, w, c


def reconstruct(
    problem: Problem,
    prior: LoadedPrior,
    options: SamplingOptions,
    out_dir: str,
    *,
    tag: str = "",
    settings: dict | None = None,
) -> dict:
    """Samples p(x | y) and writes every output; returns the summary (also summary.json).

    `out_dir` must already be prepared (see `jaxlens.io.prepare_out_dir`); chunks of
    chains found in out_dir/chunks from an interrupted run with the same settings are
    reused.
    """
    timings = {}
    t0 = time.perf_counter()
    check_lens(problem.lens)
    shape = check_compatible(problem, prior)
    y = problem.y if problem.y.ndim == 3 else problem.y[..., None]
    A, AT = lens_operator(problem.lens, problem.geometry)
    curvature = normal_operator_norm(A, AT, shape) if isinstance(options.likelihood, Eq19) else None
    n_steps = n_steps_for(options, prior, shape, curvature)
    timings["setup_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    samples, evaluations = sample_posterior(
        jax.random.key(options.seed), prior.score_fn(), y, A, AT, problem.sigma_n, prior.sde,
        options.n_chains, n_steps, likelihood=options.likelihood, solver=options.make_solver(), denoise=options.denoise,
        chunk_size=options.chunk_size, out_dir=out_dir,  # the chunks go to out_dir/chunks
        progress=options.progress, tag=tag, return_cost=True)
    timings["sampling_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    summary = write_outputs(problem, y, samples, A, out_dir)
    timings["outputs_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return finish_summary(summary, out_dir, settings={**(settings or {}), **options.describe(), "n_steps": n_steps},
                          n_steps=n_steps, timings=timings, evaluations=evaluations)


def finish_summary(summary: dict, out_dir: str, *, settings: dict, n_steps: int, timings: dict,
                   evaluations: np.ndarray) -> dict:
    """Adds the settings, timings, network evaluations per sample (as the run counted them) and machine to a
    run's summary and writes summary.json (process 0)."""
    e = np.asarray(evaluations, np.float64)
    summary.update(
        settings=settings,
        n_steps=n_steps,
        network_evaluations={"per_sample_mean": round(float(e.mean()), 1), "per_sample_min": int(e.min()),
                             "per_sample_max": int(e.max()), "total": int(e.sum())},
        wall_time_s=round(timings["total_s"], 2),
        timings_s={k: round(v, 2) for k, v in timings.items()},
        devices={"count": jax.device_count(), "processes": jax.process_count(),
                 "kind": jax.devices()[0].device_kind, "platform": jax.default_backend()},
        host=platform.machine(),
        jax_version=jax.__version__,
    )
    if jax.process_index() == 0:
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def _posterior_chains(chi2: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the chains that ended as posterior samples, bool mask of the diverged ones).

    A chain thrown off the data manifold is a solver failure, not a posterior sample: it is left
    out of samples.fits and every summary, which it would otherwise swamp (chunks/ keeps it).
    """
    failed = metrics.diverged_chains(chi2, samples)
    kept = np.flatnonzero(~failed)
    if kept.size < 2:
        raise DivergedError(f"{int(failed.sum())} of {len(failed)} chains diverged (χ²_ν from "
                            f"{np.nanmin(chi2):.3g} to {np.nanmax(chi2):.3g}); raise sampling.n_steps "
                            "before trusting this configuration")
    if jax.process_index() == 0:
        if failed.any():
            warnings.warn(f"{int(failed.sum())} of {len(failed)} chains diverged (chains "
                          f"{np.flatnonzero(failed).tolist()}, χ²_ν {np.round(chi2[failed], 1).tolist()}); "
                          "samples.fits, the mean, std, χ²_ν median and figures leave them out "
                          "(chunks/ keeps every chain)", stacklevel=4)
        if np.median(chi2[kept]) > 2.0:
            warnings.warn(f"the samples do not fit the data: median χ²_ν {np.median(chi2[kept]):.3g} "
                          "(a wrong lens, PSF or noise level, or chains that all diverged)", stacklevel=4)
    return kept, failed


def write_outputs(problem: Problem, y: np.ndarray, samples: np.ndarray, A, out_dir: str, *,
                   lensed: np.ndarray | None = None, A_truth=None) -> dict:
    """Writes the outputs of a run. `A` models the posterior mean; `lensed` (default: A of each sample)
    is each sample seen through its own lens, and `A_truth` (default: A) lenses the true source."""
    g = problem.geometry
    if lensed is None:
        lensed = np.asarray(jax.jit(jax.vmap(A))(jnp.asarray(samples)))
    sigma = problem.sigma_n
    sigma_b = np.broadcast_to(sigma if np.ndim(sigma) != 2 else np.asarray(sigma)[..., None], y.shape)
    finite = np.isfinite(lensed.reshape(len(lensed), -1)).all(axis=1)
    chi2 = np.full(len(lensed), np.nan)
    if finite.any():
        chi2[finite] = metrics.reduced_chi2(y[None] - lensed[finite], sigma_b)
    kept, failed = _posterior_chains(chi2, samples)
    mean, std = metrics.posterior_moments(samples[kept])
    model = np.asarray(A(jnp.asarray(mean)))
    snr = metrics.residual_snr(y, model, sigma_b)
    summary = {
        "n_chains": int(samples.shape[0]),
        "chi2_nu": [round(float(v), 4) if np.isfinite(v) else None for v in chi2],
        "chi2_nu_median": float(np.median(chi2[kept])),
        "diverged_chains": np.flatnonzero(failed).tolist(),
        "mean_residual_snr_rms": float(np.sqrt(np.mean(snr[np.isfinite(sigma_b)] ** 2))),
    }
    if jax.process_index() != 0:
        return summary
    samples, lensed, chi2 = samples[kept], lensed[kept], chi2[kept]
    meta = {"chains": int(kept.size), "diverged": int(failed.sum())}
    io.write_samples(out_dir, samples, header=meta, fov=g.src_fov)
    io.write_map(os.path.join(out_dir, "mean.fits"), mean, meta, fov=g.src_fov)
    io.write_map(os.path.join(out_dir, "std.fits"), std, meta, fov=g.src_fov)
    io.write_map(os.path.join(out_dir, "observation.fits"), y, fov=g.img_fov)
    io.write_map(os.path.join(out_dir, "residual_lens.fits"), snr, {"comment": "(y - A mean) / sigma_n"},
                 fov=g.img_fov)
    truth_lensed = None
    if problem.truth is not None:
        truth = problem.truth
        io.write_map(os.path.join(out_dir, "truth.fits"), truth, fov=g.src_fov)
        io.write_map(os.path.join(out_dir, "residual_source.fits"), mean - truth,
                     {"comment": "posterior mean - truth"}, fov=g.src_fov)
        truth_lensed = np.asarray((A if A_truth is None else A_truth)(jnp.asarray(truth)))
        err = float(np.linalg.norm(mean - truth) / np.linalg.norm(truth))
        summary["source_relative_error"] = err
        summary["source_residual_over_std_rms"] = float(
            np.sqrt(np.mean(((mean - truth) / np.maximum(std, 1e-12)) ** 2)))
    figures.figure1(os.path.join(out_dir, "figure1.png"), truth_source=problem.truth, observation=y,
                    samples=samples, lens_images_of_samples=lensed, sigma_n=sigma_b,
                    truth_lensed=truth_lensed, src_fov=g.src_fov, img_fov=g.img_fov)
    figures.figure3(os.path.join(out_dir, "figure3.png"), samples[:16], chi2[:16], fov=g.src_fov)
    return summary
