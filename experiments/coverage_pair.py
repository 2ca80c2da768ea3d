"""Paired comparison of two coverage.py runs, lens by lens: which setting moved the spread, the skill, or both?

  python -m experiments.coverage_pair A_WORKDIR B_WORKDIR [--mode tweedie] [--seed 0] [--bootstrap 2000]
      [--blowup 10]

Both work directories hold `MODE.npz` from `experiments.coverage` (and `truths_prior.npz` when that
run used `--truths prior`). On the lenses both runs finished, it prints for A and B the spread/skill
ratio, the mean spread E‖x_i − x_j‖² and skill E‖x_i − x*‖², and B − A of each with a bootstrap std
over lenses (the same resampled lenses for both runs, so that what the two share cancels). Runs
with the same truths, lenses and keys (e.g. two solve caps) are paired; runs with different truths
are not, and their difference is then only as good as the two runs' own errors. A lens where either
run has a non-finite sample, or one more than --blowup times the truth's norm from the origin (a chain
that diverged, whose squared distances would swamp every other lens), is left out of both and named.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from configs import procedural_64
from jaxlens.cli import common
from jaxlens.diagnostics import spread_and_skill
from jaxlens.simulation import held_out_problems


def load_run(workdir: str, mode: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(samples [n, S, H, W, C], truths [n, H, W, C]) of one coverage.py run."""
    samples = np.load(os.path.join(workdir, f"{mode}.npz"))["samples"]
    path = os.path.join(workdir, "truths_prior.npz")  # written by a `--truths prior` run
    if os.path.exists(path):
        truths = np.load(path)["sources"][: len(samples)]
    else:
        config = procedural_64.get_config()
        problems = held_out_problems(len(samples), seed, common.geometry(config), float(config.lens.sigma_n))
        truths = np.stack([p.truth for p in problems])
    return samples, truths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--mode", default="tweedie")
    ap.add_argument("--seed", type=int, default=0, help="coverage.py's --seed (procedural truths only)")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--blowup", type=float, default=10.0,
                    help="leave out lenses with a sample this many times the truth's norm (inf: keep all)")
    args = ap.parse_args()

    (xa, ta), (xb, tb) = (load_run(d, args.mode, args.seed) for d in (args.a, args.b))
    n = min(len(xa), len(xb))
    if n < 2:
        raise SystemExit(f"need >= 2 lenses finished in both runs, got {n}")

    def sound(x, t):
        """Lenses whose samples are all finite and within --blowup times the truth's norm."""
        norms = np.linalg.norm(x.reshape(x.shape[:2] + (-1,)), axis=-1)
        bound = args.blowup * np.linalg.norm(t.reshape(len(t), -1), axis=1)[:, None]
        with np.errstate(invalid="ignore"):
            return np.isfinite(norms).all(1) & (norms <= bound).all(1)

    keep = sound(xa[:n], ta[:n]) & sound(xb[:n], tb[:n])
    paired = bool(np.array_equal(ta[:n], tb[:n]))
    if keep.sum() < 2:
        raise SystemExit(f"fewer than 2 of the {n} lenses have sound samples in both runs")
    sa, ka = spread_and_skill(xa[:n][keep], ta[:n][keep])
    sb, kb = spread_and_skill(xb[:n][keep], tb[:n][keep])
    idx = np.random.default_rng(args.seed).integers(0, len(sa), (args.bootstrap, len(sa)))

    def stat(spread, skill):
        return {"spread/skill": (spread.mean() / skill.mean(), spread[idx].mean(1) / skill[idx].mean(1)),
                "spread": (spread.mean(), spread[idx].mean(1)), "skill": (skill.mean(), skill[idx].mean(1))}

    a, b = stat(sa, ka), stat(sb, kb)
    left_out = np.flatnonzero(~keep)
    print(f"{int(keep.sum())} lenses finished in both with sound samples (of {n}; left out: "
          f"{', '.join(map(str, left_out)) or 'none'}); {'same truths: paired' if paired else 'different truths: NOT paired'}")
    print(f"{'':14s} {'A':>16s} {'B':>16s} {'B − A':>16s}")
    for k in a:
        (va, ba), (vb, bb) = a[k], b[k]
        print(f"{k:14s} {va:9.4f} ± {ba.std():.4f} {vb:9.4f} ± {bb.std():.4f} {vb - va:+9.4f} ± {(bb - ba).std():.4f}")
    print(f"A = {args.a}\nB = {args.b}")


if __name__ == "__main__":
    main()
