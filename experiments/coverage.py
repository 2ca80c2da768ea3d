"""TARP coverage of each likelihood mode with the shipped 64² prior (issue "calibration").

  python -m experiments.coverage [--checkpoint checkpoints/procedural_64] [--lenses 100] [--samples 2]
      [--n-steps 200] [--modes eq19,tweedie,dps]  (each mode[:lenses[:steps]]; also 'prior')
      [--references 64] [--lens-batch 16] [--solve-cap 20] [--drift-tol 0.05] [--truths procedural|prior]
      [--truth-steps 3000]
      [--seed 0] [--workdir out/coverage] [--figdir out/coverage] [--markdown FILE]

Results go to --workdir/coverage.json; the table is printed, and appended to --markdown only if given.

Held-out simulated lenses (sources from held-out seeds, random SIE + shear, σ_n from the config)
are sampled with every mode; samples are saved per mode under --workdir, so a rerun with the same
settings reuses them and runs only the lenses not yet done. For each mode it reports the TARP curve (Lemos et al.
2023) in the source plane, its largest distance from the diagonal with a bootstrap error, the
signed area (< 0 over-confident), the spread/skill ratio (1 when the truth is
exchangeable with the samples), the median χ²_ν, the per-sample source error, the number of
non-finite samples, the network evaluations per sample (counted as the chains ran) and the wall
time per sample.

Mode `prior` draws unconditional samples (the same sampler with no likelihood term) and
scores them against the same sources: how far the prior alone is from the data, the reference
against which a posterior's calibration is read.

With `--truths prior` the sources are unconditional draws of the prior itself (N = --truth-steps),
not procedural galaxies: the self-consistent test, where an exact posterior is calibrated by
construction, so that the prior's mismatch to the data drops out of the curve. The truths must
be converged draws: at N = 300 they made tweedie look 0.08 off the diagonal, at N = 3000 0.02
(docs/validation.md), hence the default.

The noise floor: with n lenses even an exact sampler's curve strays from the diagonal by about
1/√n. The script measures that floor on the same lenses by replacing the truth with one more
posterior sample of the mode (exchangeable with the others, hence calibrated by construction).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import procedural_64
from jaxlens import io
from jaxlens.cli import common
from jaxlens.diagnostics import coverage_plot, metrics, tarp_summary
from jaxlens.lensing import lens_operator
from jaxlens.prior import load_prior
from jaxlens.sample import (Eq12, Tweedie, likelihood_from_name, observe, sample_observations,
                            sample_prior)
from jaxlens.sde import step_confidence
from jaxlens.simulation import held_out_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADING = "## Coverage (TARP) at 64² (shipped prior)"
SOLVES = {"eq12": "cg", "tweedie": "lanczos gain, negative curvature dropped"}
MODES = ("eq19", "eq12", "tweedie", "dps", "prior")


def term_of(mode: str, solve_cap: int, drift_tol: float):
    """The likelihood term of a mode (None for 'prior'); --solve-cap sets eq12's CG and tweedie's Lanczos cap,
    --drift-tol tweedie's."""
    if mode == "prior":
        return None
    if mode == "eq12":
        return Eq12(cg_maxiter=solve_cap)
    if mode == "tweedie":
        return Tweedie(lanczos_cap=solve_cap, drift_tol=drift_tol)
    return likelihood_from_name(mode)


def prior_sources(prior, shape, n: int, n_steps: int, args) -> np.ndarray:
    """[n, H, W, C] unconditional draws of the prior, cached in --workdir/truths_prior.npz.

    With these as the truths the test is self-consistent (simulation-based calibration): an exact
    posterior under the prior is then calibrated by construction, so what the curve shows is the
    likelihood term's and the sampler's error alone, without the prior's mismatch to the data.
    """
    path = os.path.join(args.workdir, "truths_prior.npz")
    settings = json.dumps(dict(seed=args.seed, n_steps=n_steps, prior_step=prior.meta.get("step")))
    if os.path.exists(path):
        cached = np.load(path)
        if str(cached["settings"]) == settings and len(cached["sources"]) >= n:
            print(f"truths: {n} prior draws loaded from {path}")
            return cached["sources"][:n]
    sources = sample_prior(jax.random.key(args.seed + 13), prior.score_fn(), prior.sde, shape, n, n_steps,
                           chunk_size=args.lens_batch)
    io.save_arrays(path, sources=sources, settings=settings)
    return sources


def sampling_key(seed: int) -> jax.Array:
    return jax.random.key(seed + 7)


def sample_mode(mode, prior, geo, shape, problems, n_steps, args, settings) -> tuple[np.ndarray, np.ndarray, float]:
    """[n_lenses, samples + 1, H, W, C] posterior samples, their network evaluations [n_lenses, samples + 1]
    and the wall time, cached in --workdir.

    Lens k's samples depend only on k (see `sample_observations`), so a cache made with fewer
    lenses is extended rather than redone, and the cache is saved after every lens batch: a long
    run that is stopped resumes where it was.
    """
    path = os.path.join(args.workdir, f"{mode}.npz")
    samples, wall = np.zeros((0, args.samples + 1) + shape, np.float32), 0.0
    evaluations = np.zeros((0, args.samples + 1), np.int64)
    if os.path.exists(path):
        cached = np.load(path)
        kept = json.loads(str(cached["settings"]))
        # The solve cap does not change the modes without a solve (older caches recorded it for all).
        ignored = {"lenses"} | (set() if mode in SOLVES else {"solve_cap", "drift_tol"})
        if {k: v for k, v in kept.items() if k not in ignored} == settings and "evaluations" in cached:
            samples, wall = cached["samples"][: len(problems)], float(cached["wall"])
            evaluations = cached["evaluations"][: len(problems)]
            wall *= len(samples) / len(cached["samples"])
            print(f"{mode}: {len(samples)} of {len(problems)} lenses' samples loaded from {path}")
    if len(samples) == len(problems):
        return samples, evaluations, wall
    todo = problems[len(samples):]
    for b in range(0, len(todo), args.lens_batch):
        part = [observe(p.y, p.sigma_n, lens=p.lens, geometry=geo) for p in todo[b : b + args.lens_batch]]
        t0 = time.perf_counter()
        new, cost = sample_observations(sampling_key(args.seed), prior.score_fn(), part, prior.sde,
                                        likelihood=term_of(mode, args.solve_cap, args.drift_tol),
                                        n_chains=args.samples + 1, n_steps=n_steps, batch=args.lens_batch,
                                        first=len(samples), return_cost=True)
        samples, wall = np.concatenate([samples, new]), wall + time.perf_counter() - t0
        evaluations = np.concatenate([evaluations, cost])
        io.save_arrays(path, samples=samples, evaluations=evaluations, wall=wall,
                       settings=json.dumps(dict(settings, lenses=len(samples))))
    return samples, evaluations, wall


def evaluate(samples, problems, geo, args) -> dict:
    truths = np.stack([p.truth for p in problems])
    finite = np.isfinite(samples).all(axis=tuple(range(1, samples.ndim)))
    out = {"non_finite_lenses": int((~finite).sum())}
    if finite.sum() < 2:
        return out
    s, t = samples[finite], truths[finite]
    # The posterior proper is samples 1..S; sample 0 stands in for the truth in the noise-floor test.
    coverage = tarp_summary(s, t, key=jax.random.key(args.seed + 11), n_references=args.references)
    chi2, err = [], []
    for p, xs in zip([p for p, ok in zip(problems, finite) if ok], s[:, 1:]):
        A, _ = lens_operator(p.lens, geo)
        chi2.append(np.median(metrics.reduced_chi2(p.y[None] - np.asarray(jax.vmap(A)(jnp.asarray(xs))), p.sigma_n)))
        err.append(np.median(np.linalg.norm((xs - p.truth).reshape(len(xs), -1), axis=1)
                             / np.linalg.norm(p.truth)))
    ratio, ratio_std = metrics.spread_skill(s, t, seed=args.seed)
    out.update(spread_skill=ratio, spread_skill_std=ratio_std)
    out.update(curve=coverage["curve"], floor=coverage["floor"], max_dev=coverage["max_dev"],
               max_dev_std=coverage["max_dev_std"], floor_dev=coverage["floor_dev"], bias=coverage["signed_area"],
               chi2=float(np.median(chi2)), err=float(np.median(err)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--lenses", type=int, default=100)
    ap.add_argument("--samples", type=int, default=2, help="posterior samples per lens for TARP (one more is "
                                                           "drawn for the noise-floor test)")
    ap.add_argument("--n-steps", type=int, default=200, help="Euler–Maruyama steps (≳110 for stability)")
    ap.add_argument("--modes", default="eq19,tweedie,dps",
                    help="comma list of mode[:n[:steps]] (modes: the likelihoods and 'prior'): n = how many of the "
                         "lenses that mode runs, steps = its own step count (both for cost)")
    ap.add_argument("--references", type=int, default=64, help="TARP reference draws per lens, averaged")
    ap.add_argument("--lens-batch", type=int, default=16, help="lenses per compiled call")
    ap.add_argument("--solve-cap", type=int, default=20, help="CG cap of 'eq12', Lanczos cap of 'tweedie'")
    ap.add_argument("--drift-tol", type=float, default=Tweedie.drift_tol, help="tweedie's drift_tol (0: off)")
    ap.add_argument("--truths", choices=("procedural", "prior"), default="procedural",
                    help="the lenses' sources: held-out procedural galaxies, or draws of the prior itself "
                         "(the self-consistent test; use its own --workdir)")
    ap.add_argument("--truth-steps", type=int, default=3000,
                    help="Euler–Maruyama steps of the prior's draws (fewer leave them unconverged)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=os.path.join(REPO, "out", "coverage"))
    ap.add_argument("--markdown", default="", help="also append the table to this file")
    ap.add_argument("--figdir", default="", help="where tarp.png goes (default: --workdir)")
    args = ap.parse_args()
    args.figdir = args.figdir or args.workdir
    modes = {}
    for entry in filter(None, (m.strip() for m in args.modes.split(","))):
        mode, n, steps = (entry.split(":") + ["", ""])[:3]
        modes[mode] = (min(int(n or args.lenses), args.lenses), int(steps or args.n_steps))
    bad = [m for m, (n, steps) in modes.items() if m not in MODES or n < 2 or steps < 2]
    if bad or not modes or args.lenses < 2 or args.samples < 1 or args.n_steps < 2:
        raise SystemExit(f"need modes from {MODES} with >= 2 lenses each (bad: {bad or 'none'}), "
                         "--lenses >= 2, --samples >= 1 and --n-steps >= 2")

    config = procedural_64.get_config()
    geo, sigma_n = common.geometry(config), float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    shape = tuple(int(v) for v in prior.meta["image_shape"])
    settings = dict(samples=args.samples, seed=args.seed, prior_step=prior.meta.get("step"))
    sources = None
    if args.truths == "prior":
        sources = prior_sources(prior, shape, args.lenses, args.truth_steps, args)
        settings.update(truths="prior", truth_steps=args.truth_steps)
    problems = held_out_problems(args.lenses, args.seed, geo, sigma_n, sources)
    rows, curves = [], {}
    for mode, (n, n_steps) in modes.items():
        # A cache made by another linear solve (tweedie used plain CG before 2026-11-27) is not reused.
        solve = {"solve": SOLVES[mode], "solve_cap": args.solve_cap} if mode in SOLVES else {}
        if mode == "tweedie":
            solve["drift_tol"] = args.drift_tol
        samples, evaluations, wall = sample_mode(mode, prior, geo, shape, problems[:n], n_steps, args,
                                                 dict(settings, n_steps=n_steps, **solve))
        r = evaluate(samples, problems[:n], geo, args)
        r.update(mode=mode, lenses=n, n_steps=n_steps, evals=float(evaluations.mean()),
                 evals_max=int(evaluations.max()), per_sample=wall / (n * (args.samples + 1)))
        rows.append(r)
        if "curve" in r:
            curves[f"{mode} ({n} lenses, N = {n_steps})"] = r["curve"]
        print({k: v for k, v in r.items() if k not in ("curve", "floor")}, flush=True)
    floors = [r for r in rows if "floor" in r]
    if floors:
        curves["exchangeable check"] = floors[0]["floor"]
    os.makedirs(args.figdir, exist_ok=True)
    if curves:
        coverage_plot(os.path.join(args.figdir, "tarp.png"), curves,
                      title=f"TARP, {args.samples} samples per lens"
                      + (", sources drawn from the prior" if args.truths == "prior" else ""))

    env = io.environment()

    def fmt(r, key, spec):
        return format(r[key], spec) if key in r else "—"

    def p_of(n_steps):
        return step_confidence(n_steps, int(np.prod(shape)), prior.sde.sigma_min, prior.sde.sigma_max)

    truths_text = ("sources drawn from the prior itself (no likelihood term, "
                   f"N = {args.truth_steps}: the self-consistent test)" if args.truths == "prior"
                   else "sources from held-out procedural seeds")
    lines = [
        HEADING, "",
        f"{datetime.date.today().isoformat()} — {env['cpu']}, {env['cores']} cores, JAX {env['jax']}. Prior `{os.path.relpath(args.checkpoint, REPO)}` "
        f"(training step {prior.meta.get('step', '?')}); up to {args.lenses} held-out lenses at σ_n = {sigma_n:g}, "
        f"{truths_text}, "
        f"{args.samples} posterior samples each (+1 for the noise floor), N Euler–Maruyama steps (p(N): "
        f"Technique 2's confidence), solve cap {args.solve_cap}, drift tolerance {args.drift_tol:g}; TARP in the "
        "source plane, Euclidean distance in pixel "
        f"units, {args.references} reference points per lens, ±: bootstrap std over lenses.", "",
        f"Command: `python -m experiments.coverage {' '.join(sys.argv[1:])}`".replace("  ", " "), "",
        "| mode | lenses | N (p(N)) | max \\|ECP − α\\| | signed area | noise floor (exchangeable) | spread / skill | χ²_ν median | source error "
        "per sample | non-finite lenses | network evals / sample (mean, max) | s / sample |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['mode']} | {r['lenses']} | {r['n_steps']} ({p_of(r['n_steps']):.2f}) | {fmt(r, 'max_dev', '.3f')} ± {fmt(r, 'max_dev_std', '.3f')} | {fmt(r, 'bias', '+.3f')} "
          f"| {fmt(r, 'floor_dev', '.3f')} | {fmt(r, 'spread_skill', '.3f')} ± {fmt(r, 'spread_skill_std', '.3f')} | {fmt(r, 'chi2', '.3f')} | {fmt(r, 'err', '.3f')} | "
          f"{r['non_finite_lenses']} | {r['evals']:.0f}, {r['evals_max']} | {r['per_sample']:.1f} |"
          for r in rows),
        "", f"Figure: {os.path.join(args.figdir, 'tarp.png')}", "",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    record = {"command": sys.argv, "prior_step": prior.meta.get("step"), "sigma_n": sigma_n, "truths": args.truths,
              "rows": [{k: v for k, v in r.items() if k not in ("curve", "floor")} for r in rows]}
    print("wrote", io.write_results(os.path.join(args.workdir, "coverage.json"), record))
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write("\n" + text)
        print(f"appended to {args.markdown}")


if __name__ == "__main__":
    main()
