"""The paper's claims measured with the shipped 64² prior (issue "embedded default").

  python -m experiments.quality [--checkpoint checkpoints/procedural_64] [--lenses 20] [--n-chains 16]
      [--n-steps 0] [--prior-samples 500] [--prior-steps 0] [--prior-batch 16] [--lens-batch 1]
      [--noise-levels 0.01,0.03,0.1,0.3,1] [--sigma-n 0] [--likelihood eq19] [--seed 0]
      [--json out/quality/quality.json] [--markdown FILE] [--figdir out/quality] [--estimate-only]

1. Residuals at the noise level: χ²_ν of the posterior samples of held-out simulated lenses
   (goal: median in [0.9, 1.2]) and the source-plane error of the posterior mean.
2. Uncertainty where expected: posterior std inside vs outside the high-magnification region
   near the caustics (the paper finds it lower inside).
3. The prior resembles the data: KS distances of morphology statistics between prior samples
   and held-out (validation-seed) procedural galaxies, with an image grid and histograms.
4. Figure 2, out of distribution: a knotty "7" observed at increasing σ_n; the source-plane
   error should grow with the noise, from following the truth to looking like a prior galaxy.

Lenses run several at a time in one compiled call: lens parameters, y and σ_n are traced
arguments of a vmap over lenses of a vmap over chains, so every lens (and every noise level
of part 4) reuses one compilation. Costs are counted in network evaluations (one 64² image
through the score network); the script measures their rate and prints an estimate first.
Numbers go to --json and are printed as markdown (appended to --markdown only if given); figures
go to --figdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from configs import procedural_64
from jaxlens import io
from jaxlens.cli import common
from jaxlens.cli.throughput import seconds_per_state
from jaxlens.data import (HELD_OUT_SEED_START, VALIDATION_SEED_START, procedural_galaxies,
                          procedural_galaxy)
from jaxlens.data.ood import seven_source
from jaxlens.diagnostics import figures, metrics, morphology, morphology_ks
from jaxlens.lensing import lens_operator
from jaxlens.prior import load_prior
from jaxlens.reconstruct import n_steps_for
from jaxlens.sample import likelihood_from_name, observe, sample_observations, sample_prior
from jaxlens.sde import step_confidence
from jaxlens.simulation import random_lenses, simulated_problem

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "## Quality at 64² (shipped prior)"
KS_STATS = (("flux", "total flux"), ("r50", "half-light radius (px)"),
            ("concentration", "concentration C"), ("e", "ellipticity |e|"))


def eval_rate(prior, shape, batch: int) -> float:
    """Measured network evaluations per second at the sampler's batch size."""
    score = jax.jit(jax.vmap(prior.score_fn(), in_axes=(0, None)))
    return 1.0 / seconds_per_state(score, jnp.ones((batch,) + shape), jnp.float32(0.5))


def _new_fig(w, h):
    fig = Figure(figsize=(w, h), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def std_figure(path, truths, means, stds, masks, fov):
    """Truth, posterior mean and std per lens, with the high-magnification region outlined."""
    n = len(truths)
    fig = _new_fig(6.3, 2.1 * n)
    ax = fig.subplots(n, 3, squeeze=False)
    ext = (-fov / 2, fov / 2, -fov / 2, fov / 2)
    with matplotlib.rc_context({"font.size": 7}):
        for r in range(n):
            for c, (img, name, cmap) in enumerate(((truths[r], "truth", "magma"), (means[r], "mean", "magma"),
                                                   (stds[r], "std", "viridis"))):
                im = ax[r, c].imshow(img[..., 0], origin="lower", extent=ext, cmap=cmap)
                ax[r, c].contour(masks[r], levels=[0.5], colors="w", linewidths=0.7, extent=ext, origin="lower")
                ax[r, c].set_title(f"lens {r}: {name}", fontsize=7)
                ax[r, c].tick_params(labelsize=6)
                fig.colorbar(im, ax=ax[r, c], fraction=0.046)
        figures.save_figure(fig, path)


def morphology_figure(path, prior_m, data_m):
    fig = _new_fig(10, 2.4)
    for a, (name, label) in zip(fig.subplots(1, 4), KS_STATS):
        p, d = getattr(prior_m, name), getattr(data_m, name)
        p, d = p[np.isfinite(p)], d[np.isfinite(d)]
        if not (p.size and d.size):
            continue
        bins = np.linspace(*np.percentile(np.concatenate([p, d]), [1, 99]), 25)
        a.hist(d, bins, histtype="step", density=True, label="data")
        a.hist(p, bins, histtype="step", density=True, label="prior")
        a.set_xlabel(label, fontsize=8)
        a.tick_params(labelsize=7)
    a.legend(fontsize=7)
    figures.save_figure(fig, path)


def _q(v, q):
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.percentile(v, q)) if v.size else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--lenses", type=int, default=20, help="held-out simulated lenses (parts 1-2)")
    ap.add_argument("--n-chains", type=int, default=16, help="posterior samples per observation (>= 2)")
    ap.add_argument("--n-steps", type=int, default=0, help="0: Technique 2 at the config's confidence")
    ap.add_argument("--prior-samples", type=int, default=500, help="prior samples and data images (part 3)")
    ap.add_argument("--prior-steps", type=int, default=0, help="steps of the prior samples (0: N)")
    ap.add_argument("--prior-batch", type=int, default=16, help="prior chains per compiled call")
    ap.add_argument("--lens-batch", type=int, default=1,
                    help="observations per compiled call (raise on an accelerator; on CPU small batches run "
                         "fastest per image)")
    ap.add_argument("--noise-levels", default="0.01,0.03,0.1,0.3,1.0", help="σ_n of part 4 (comma list)")
    ap.add_argument("--sigma-n", type=float, default=0.0, help="σ_n of parts 1-2 (0: the config's)")
    ap.add_argument("--mu-threshold", type=float, default=5.0, help="magnification of the caustic region")
    ap.add_argument("--likelihood", default="eq19", choices=("eq19", "eq12"))
    ap.add_argument("--source-offset", type=int, default=0, help="sources are HELD_OUT_SEED_START + offset + k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join("out", "quality", "quality.json"))
    ap.add_argument("--markdown", default="", help="also append the table to this file")
    ap.add_argument("--figdir", default=os.path.join("out", "quality"))
    ap.add_argument("--rate", type=float, default=0.0, help="network evaluations/s for the estimate (0: measure)")
    ap.add_argument("--estimate-only", action="store_true", help="print the time estimate and exit")
    args = ap.parse_args()
    levels = [float(v) for v in args.noise_levels.split(",") if v.strip()]
    if args.n_chains < 2 or args.lenses < 1 or args.prior_samples < 2 or args.lens_batch < 1 or not levels:
        raise SystemExit("need --n-chains >= 2, --lenses >= 1, --prior-samples >= 2, --lens-batch >= 1, "
                         "and at least one noise level")

    config = procedural_64.get_config()
    geo, base_lens = common.geometry(config), common.lens_params(config)
    sigma_n = args.sigma_n or float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    shape = tuple(int(v) for v in prior.meta["image_shape"])
    if shape[:2] != geo.src_shape:
        raise SystemExit(f"the prior is {shape[0]}x{shape[1]} but the config's source is {geo.src_shape}")
    n_steps = n_steps_for(dataclasses.replace(common.sampling_options(config), n_steps=args.n_steps), prior, shape)
    p_n = step_confidence(n_steps, int(np.prod(shape)), prior.sde.sigma_min, prior.sde.sigma_max)

    lb = args.lens_batch
    padded = lambda k: math.ceil(k / lb) * lb  # noqa: E731
    evals = {"lenses": padded(args.lenses) * args.n_chains * n_steps,
             "noise sweep": padded(len(levels)) * args.n_chains * n_steps,
             "prior": args.prior_samples * (args.prior_steps or n_steps)}
    rate = args.rate or eval_rate(prior, shape, lb * args.n_chains)
    total = sum(evals.values())
    print(f"N = {n_steps} steps (p(N) = {p_n:.3f}); network evaluations: "
          + ", ".join(f"{k} {v:,}" for k, v in evals.items())
          + f"; total {total:,} at {rate:.1f}/s ≈ {total / rate / 60:.1f} min, plus ~1 min per compilation (3)")
    if p_n < 0.5:
        # EM on the eq. 19 term is stable only for N ≳ ln(σ_max/σ_min) λ_max(AᵀA) (~110 steps here).
        print(f"warning: p(N) = {p_n:.2f}; with this few steps Euler–Maruyama may diverge")
    if args.estimate_only:
        return
    os.makedirs(args.figdir, exist_ok=True)
    t_start = time.perf_counter()
    key = jax.random.key(args.seed)
    def run(run_key, ys, lenses, sigmas):
        obs = [observe(y, s, lens=lens, geometry=geo) for y, lens, s in zip(ys, lenses, sigmas)]
        return sample_observations(run_key, prior.score_fn(), obs, prior.sde,
                                   likelihood=likelihood_from_name(args.likelihood), n_chains=args.n_chains,
                                   n_steps=n_steps, batch=lb)

    # 1-2. Held-out lenses.
    lenses = random_lenses(args.lenses, args.seed)
    problems = [simulated_problem(jax.random.fold_in(key, 100 + k),
                                  procedural_galaxy(HELD_OUT_SEED_START + args.source_offset + k, geo.src_npix),
                                  lens, geo, sigma_n) for k, lens in enumerate(lenses)]
    samples = run(jax.random.fold_in(key, 1), [p.y for p in problems], lenses, [sigma_n] * len(lenses))
    chi2_med, errors, ratios, bright_ratios, shown = [], [], [], [], ([], [], [], [])
    for k, (p, xs) in enumerate(zip(problems, samples)):
        A, _ = lens_operator(p.lens, geo)
        lensed = np.asarray(jax.vmap(A)(jnp.asarray(xs)))
        chi2 = metrics.reduced_chi2(p.y[None] - lensed, sigma_n)
        mean, std = metrics.posterior_moments(xs)
        mu, mask = metrics.magnification_region(p.lens, geo, threshold=args.mu_threshold)
        stats = metrics.region_std(std, mask, outside=(mu > 0) & ~mask)
        # The same comparison on the source's bright pixels only, so that the region's brightness
        # (the posterior std grows with the flux) does not stand in for its magnification.
        bright = p.truth[..., 0] > 0.1 * p.truth.max()
        bright_stats = metrics.region_std(std, mask & bright, outside=(mu > 0) & ~mask & bright)
        chi2_med.append(float(np.median(chi2)))
        errors.append(float(np.linalg.norm(mean - p.truth) / np.linalg.norm(p.truth)))
        ratios.append(stats.ratio)
        bright_ratios.append(bright_stats.ratio)
        if k < 4:
            for lst, v in zip(shown, (p.truth, mean, std, mask)):
                lst.append(v)
        if k == 0:
            figures.figure1(os.path.join(args.figdir, "lens0.png"), truth_source=p.truth, observation=p.y,
                            samples=xs, lens_images_of_samples=lensed, sigma_n=sigma_n,
                            truth_lensed=np.asarray(A(jnp.asarray(p.truth))), src_fov=geo.src_fov,
                            img_fov=geo.img_fov)
    std_figure(os.path.join(args.figdir, "std_vs_magnification.png"), *shown, geo.src_fov)

    # 3. Prior vs data.
    prior_x = sample_prior(jax.random.fold_in(key, 2), prior.score_fn(), prior.sde, shape, args.prior_samples,
                           args.prior_steps or n_steps, chunk_size=args.prior_batch, progress=True)[..., 0]
    finite = np.isfinite(prior_x).all(axis=(1, 2))
    if not finite.all():
        print(f"warning: {int((~finite).sum())} prior samples are not finite and are left out")
    prior_x = prior_x[finite]
    data_x = procedural_galaxies((VALIDATION_SEED_START, args.prior_samples), geo.src_npix)
    ks = morphology_ks(prior_x, data_x)
    prior_m, data_m = morphology(prior_x), morphology(data_x)
    n_show = min(8, len(prior_x))
    if n_show:
        figures.image_grid(os.path.join(args.figdir, "prior_vs_data.png"),
                           # One colour scale; prior samples are clipped to the data's range so that a
                           # bad sample cannot wash the galaxies out.
                           np.concatenate([np.clip(prior_x[:n_show], data_x.min(), data_x.max()), data_x[:n_show]]),
                           ncols=n_show,
                           titles=[f"prior {i}" for i in range(n_show)] + [f"data {i}" for i in range(n_show)],
                           fov=geo.src_fov, shared_scale=True)
    morphology_figure(os.path.join(args.figdir, "morphology.png"), prior_m, data_m)

    # 4. Out of distribution: the "7" at increasing noise, observed through the config's lens.
    seven = seven_source(geo.src_npix)[..., None]
    sweep = [simulated_problem(jax.random.fold_in(key, 200 + k), seven, base_lens, geo, s)
             for k, s in enumerate(levels)]
    sweep_x = run(jax.random.fold_in(key, 3), [p.y for p in sweep], [base_lens] * len(levels), levels)
    A7, _ = lens_operator(base_lens, geo)
    sweep_rows = []
    for s, p, xs in zip(levels, sweep, sweep_x):
        mean = xs.mean(axis=0)
        per = np.linalg.norm((xs - seven).reshape(len(xs), -1), axis=1) / np.linalg.norm(seven)
        chi2 = metrics.reduced_chi2(p.y[None] - np.asarray(jax.vmap(A7)(jnp.asarray(xs))), s)
        sweep_rows.append((s, float(np.linalg.norm(mean - seven) / np.linalg.norm(seven)), float(np.median(per)),
                           float(np.median(chi2))))
    figures.noise_sweep_figure(os.path.join(args.figdir, "figure2_noise_sweep.png"), truth_source=seven,
                               observations=np.stack([p.y for p in sweep]), samples=sweep_x[:, 0],
                               noise_levels=levels, truth_lensed=np.asarray(A7(jnp.asarray(seven))),
                               src_fov=geo.src_fov, img_fov=geo.img_fov)
    wall = time.perf_counter() - t_start

    # Report.
    errs_sweep = [r[1] for r in sweep_rows]
    grows = all(b >= a for a, b in zip(errs_sweep, errs_sweep[1:]))
    below = sum(r < 1 for r in ratios if np.isfinite(r))
    cmd = "python -m experiments.quality " + " ".join(sys.argv[1:])
    env = io.environment()
    lines = [
        HEADING, "",
        f"{datetime.date.today().isoformat()} — {env['cpu']}, {env['cores']} cores, JAX {env['jax']}. Prior `{os.path.relpath(args.checkpoint, REPO)}` "
        f"(training step {prior.meta.get('step', '?')}, σ_max = {prior.sde.sigma_max:.4g}); "
        f"N = {n_steps} Euler–Maruyama steps (p(N) = {p_n:.3f}), {args.n_chains} chains per observation, "
        f"likelihood {args.likelihood}. Wall time {wall / 60:.1f} min (measured {rate:.1f} network evaluations/s).",
        "", f"Command: `{cmd.strip()}`", "",
        f"**1–2. {args.lenses} held-out lenses** at σ_n = {sigma_n:g} (sources: seeds ≥ {HELD_OUT_SEED_START}; "
        f"θ_E ∈ [1, 1.5]″, |e| ≤ 0.2, |γ| ≤ 0.05):", "",
        "| quantity, over lenses | median | 16–84 % | min – max | goal |", "|---|---|---|---|---|",
        _row("χ²_ν per sample (median per lens)", chi2_med, "0.9 – 1.2"),
        _row("‖mean − truth‖ / ‖truth‖ (source plane)", errors, "small"),
        _row(f"std inside / outside μ ≥ {args.mu_threshold:g}", ratios, "< 1 (paper)"),
        _row("the same, pixels brighter than 10 % of the source's peak", bright_ratios, "< 1 (paper)"),
        "", f"Lenses whose posterior std is lower in the high-magnification region: {below} of "
        f"{sum(np.isfinite(ratios))} with a non-empty region.", "",
        f"**3. Prior vs data**: {len(prior_x)} prior samples ({args.prior_steps or n_steps} steps) vs {args.prior_samples} validation-seed "
        "procedural galaxies.", "",
        "| statistic | KS distance | median, prior | median, data |", "|---|---|---|---|",
        *(f"| {label.replace('|', '∣')} | {ks[name]:.3f} | {_q(getattr(prior_m, name), 50):.3g} | "
          f"{_q(getattr(data_m, name), 50):.3g} |" for name, label in KS_STATS),
        "", f"**4. Out of distribution (figure 2)**: a \"7\" through the default lens, {args.n_chains} samples "
        f"per level. Error of the mean grows monotonically with σ_n: {'yes' if grows else 'no'}.", "",
        "| σ_n | ‖mean − truth‖ / ‖truth‖ | per sample (median) | χ²_ν (median) |", "|---|---|---|---|",
        *(f"| {s:g} | {e:.3g} | {e1:.3g} | {c:.3g} |" for s, e, e1, c in sweep_rows),
        "", "Figures: " + ", ".join(os.path.join(args.figdir, f"{n}.png") for n in
                                    ("lens0", "std_vs_magnification", "prior_vs_data", "morphology",
                                     "figure2_noise_sweep")), "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    record = {"command": sys.argv, "prior_step": prior.meta.get("step"), "n_steps": n_steps, "sigma_n": sigma_n,
              "chi2_median_per_lens": chi2_med, "mean_error_per_lens": errors, "std_ratio_per_lens": ratios,
              "bright_std_ratio_per_lens": bright_ratios, "morphology_ks": ks,
              "noise_sweep": [dict(zip(("sigma_n", "mean_error", "sample_error", "chi2"), r)) for r in sweep_rows],
              "wall_s": wall}
    print("wrote", io.write_results(args.json, record), "; figures in", args.figdir)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + text)
        print(f"appended to {args.markdown}")


def _row(name, values, goal) -> str:
    return (f"| {name} | {_q(values, 50):.3g} | {_q(values, 16):.3g} – {_q(values, 84):.3g} | "
            f"{_q(values, 0):.3g} – {_q(values, 100):.3g} | {goal} |")


if __name__ == "__main__":
    main()
