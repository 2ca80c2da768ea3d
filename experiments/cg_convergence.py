"""How far the `tweedie` likelihood score is from converged at a given solve cap (issue "calibration").

  python -m experiments.cg_convergence [--lenses 4] [--caps 5,50] [--times 0.9,0.5,0.2,0.05]

For held-out lenses of experiments/coverage.py (same seeds, shipped 64² prior) and states
x_t = truth + σ(t) z, it prints ‖score(cap) − score(reference cap)‖ / ‖score(reference cap)‖,
the reference being the largest cap given. A large value means the capped Krylov solve of
(σ_n² I + A C Aᵀ) u = y − A m changes the likelihood term, not just its last digits.
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from configs import procedural_64
from jaxlens.cli import common
from jaxlens.prior import load_prior
from jaxlens.sample import Tweedie, observe
from jaxlens.simulation import held_out_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--lenses", type=int, default=4)
    ap.add_argument("--caps", default="5,50", help="iteration caps of the solve; the largest is the reference")
    ap.add_argument("--times", default="0.9,0.5,0.2,0.05")
    args = ap.parse_args()
    caps = sorted(int(c) for c in args.caps.split(","))
    times = [float(t) for t in args.times.split(",")]
    if len(caps) < 2 or caps[0] < 1 or args.lenses < 1 or not all(0 < t <= 1 for t in times):
        raise SystemExit("need two or more caps >= 1, --lenses >= 1 and times in (0, 1]")
    config = procedural_64.get_config()
    geo, sigma_n = common.geometry(config), float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    score, sde = prior.score_fn(), prior.sde
    print("| lens | t | σ(t) | " + " | ".join(f"rel. change, cap {c}" for c in caps[:-1]) + " |")
    print("|---" * (3 + len(caps) - 1) + "|")

    def likelihood_score(cap):
        # y and the lens are traced (Aᵀ by linear transposition), so each cap compiles once for every lens.
        def fn(x, t, y, lens):
            return Tweedie(lanczos_cap=cap, drift_tol=0).score(score, observe(y, sigma_n, lens=lens, geometry=geo), x, t, sde)
        return jax.jit(fn)

    fns = {c: likelihood_score(c) for c in caps}
    for k, p in enumerate(held_out_problems(args.lenses, 0, geo, sigma_n)):
        for t in times:
            x = jnp.asarray(p.truth) + sde.sigma(t) * jax.random.normal(jax.random.key(k), p.truth.shape)
            out = {c: np.asarray(fn(x, jnp.float32(t), jnp.asarray(p.y), p.lens)) for c, fn in fns.items()}
            ref = np.linalg.norm(out[caps[-1]])
            rel = [np.linalg.norm(out[c] - out[caps[-1]]) / ref for c in caps[:-1]]
            print(f"| {k} | {t:g} | {float(sde.sigma(t)):.3g} | " + " | ".join(f"{r:.3g}" for r in rel) + " |",
                  flush=True)


if __name__ == "__main__":
    main()
