"""Simulation-based calibration of the joint lens and source sampler on the learned prior.

  python -m experiments.joint_sbc [--lenses 100] [--chains 4] [--steps 200] [--seed 0] [--json out/joint_sbc.json]
      [--figure out/joint_sbc.png] [--checkpoint checkpoints/procedural_64]

Each finished lens is saved next to --json (`<json>.partial.npz`), so an interrupted run started again with the
same arguments goes on from the next lens.

For each of --lenses simulated observations the true lens is drawn from the lens prior
(`FitLensOptions().lens_prior(config lens)`, the prior `bin/sample --fit_lens` uses around its first guess)
and the source is a held-out procedural galaxy; `joint_chains` then samples with that prior. If the sampler
is calibrated, the rank of each true parameter among its --chains posterior samples is uniform on
{0, ..., chains}: the script reports the χ² statistic of the rank counts per parameter with its p-value,
how often the truth sits at an extreme rank (pooled over parameters: too rare means too-wide posteriors),
the sources' TARP (`diagnostics.tarp_summary`, with its noise floor) and spread/skill over the same runs,
and draws the rank histograms.
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
from jaxlens.data import HELD_OUT_SEED_START, procedural_galaxy
from jaxlens.diagnostics import metrics, tarp
from jaxlens.diagnostics.figures import save_figure
from jaxlens.fit_lens import FitLensOptions
from jaxlens.lensing import LensParams, render
from jaxlens.prior import load_prior
from jaxlens.sample import Tweedie, observe
from jaxlens.sample.joint import joint_chains
from jaxlens.simulation import STUDY_SOURCE_OFFSET

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIELDS = LensParams._fields


def main() -> None:
    from scipy import stats

    from configs import procedural_64
    from jaxlens.cli import common

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lenses", type=int, default=100)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--json", default=os.path.join("out", "joint_sbc.json"))
    ap.add_argument("--figure", default=os.path.join("out", "joint_sbc.png"))
    args = ap.parse_args()
    if args.lenses < 10 or args.chains < 3:
        raise SystemExit("need --lenses >= 10 and --chains >= 3 (source TARP scores samples 1.. against sample 0)")

    config = procedural_64.get_config()
    geometry, sigma_n = common.geometry(config), float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    lens_prior = FitLensOptions().lens_prior(common.lens_params(config))
    score = prior.score_fn()

    @jax.jit
    def one(key, source):
        k_lens, k_noise, k_run = jax.random.split(key, 3)
        lens = lens_prior.lens(lens_prior.sample(k_lens))
        clean = render(source, lens, geometry)
        y = clean + sigma_n * jax.random.normal(k_noise, clean.shape, clean.dtype)
        obs = observe(y, sigma_n, lens=lens_prior.mean, geometry=geometry)
        run = joint_chains(k_run, score, obs, prior.sde, lens_prior, likelihood=Tweedie(), n_chains=args.chains,
                           n_steps=args.steps)
        return lens, run.lens, run.samples

    partial = args.json + ".partial.npz"
    settings = np.asarray([args.chains, args.steps, args.seed])
    ranks, sources, samples, seconds = _resume(partial, settings)
    t0 = time.perf_counter() - seconds
    for k in tqdm(range(len(ranks), args.lenses), desc="lenses", initial=len(ranks), total=args.lenses):
        source = procedural_galaxy(HELD_OUT_SEED_START + STUDY_SOURCE_OFFSET + 10_000 + k, geometry.src_npix)
        source = jnp.asarray(source, jnp.float32)[..., None]
        truth, post, x = one(jax.random.fold_in(jax.random.key(args.seed), k), source)
        ranks.append([int(np.sum(np.asarray(post[i]) < float(truth[i]))) for i in lens_prior.free])
        sources.append(np.asarray(source))
        samples.append(np.asarray(x))
        _save(partial, settings, ranks, sources, samples, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    ranks = np.asarray(ranks[: args.lenses])
    sources, samples = sources[: args.lenses], samples[: args.lenses]
    free = [FIELDS[i] for i in lens_prior.free]
    expected = args.lenses / (args.chains + 1)
    result = {}
    for j, name in enumerate(free):
        counts = np.bincount(ranks[:, j], minlength=args.chains + 1)
        chi2 = float(np.sum((counts - expected) ** 2 / expected))
        result[name] = {"counts": counts.tolist(), "chi2": chi2, "dof": args.chains,
                        "p_value": float(stats.chi2.sf(chi2, args.chains))}
        print(f"{name:9s} ranks {counts.tolist()}  chi2 {chi2:.2f} (dof {args.chains})  p {result[name]['p_value']:.3f}")
    smallest = min(r["p_value"] for r in result.values())
    # Dispersion, pooled over parameters: a posterior too wide puts the truth at the extreme ranks (0 and
    # --chains) less often than 2/(chains + 1); one too narrow, more often.
    extreme = float(np.mean((ranks == 0) | (ranks == args.chains)))
    print(f"truth at an extreme rank: {extreme:.3f} of {ranks.size} (calibrated: {2 / (args.chains + 1):.3f})")
    print(f"smallest p {smallest:.3f} over {len(free)} parameters (Bonferroni 5 %: {0.05 / len(free):.4f})")
    source_samples, truths = np.stack(samples), np.stack(sources)
    summary = tarp.tarp_summary(source_samples, truths, key=jax.random.key(args.seed + 1))
    ratio, ratio_std = metrics.spread_skill(source_samples, truths, seed=args.seed)
    coverage = {k: summary[k] for k in ("max_dev", "max_dev_std", "floor_dev", "signed_area")}
    coverage.update(spread_skill=ratio, spread_skill_std=ratio_std)
    print(f"source TARP: max |ECP - alpha| {coverage['max_dev']:.3f} ± {coverage['max_dev_std']:.3f} (noise floor "
          f"{coverage['floor_dev']:.3f}), signed area {coverage['signed_area']:+.3f}; spread/skill "
          f"{ratio:.3f} ± {ratio_std:.3f}")
    record = {"command": sys.argv, "seconds": seconds, "ranks": result, "smallest_p": smallest,
              "extreme_rank_fraction": extreme, "source_tarp": coverage, "lenses": args.lenses, "chains": args.chains, "steps": args.steps}
    print("wrote", io.write_results(args.json, record))
    _figure(args.figure, free, result, expected)


def _resume(path, settings):
    """The lenses a previous run with the same chains, steps and seed finished, and its seconds."""
    if not os.path.exists(path):
        return [], [], [], 0.0
    with np.load(path) as done:
        if not np.array_equal(done["settings"], settings):
            raise SystemExit(f"{path} holds a run with other --chains/--steps/--seed; move it away to start anew")
        return list(done["ranks"]), list(done["sources"]), list(done["samples"]), float(done["seconds"])


def _save(path, settings, ranks, sources, samples, seconds) -> None:
    io.save_arrays(path, settings=settings, ranks=np.asarray(ranks), sources=np.stack(sources),
                   samples=np.stack(samples), seconds=seconds)


def _figure(path, names, result, expected) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(2.2 * len(names), 2.2), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), names):
        counts = result[name]["counts"]
        ax.bar(range(len(counts)), counts, color="0.6")
        ax.axhline(expected, color="k", lw=1)
        ax.set_title(f"{name}\np = {result[name]['p_value']:.2f}", fontsize=8)
        ax.set_xlabel("rank")
    save_figure(fig, path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
