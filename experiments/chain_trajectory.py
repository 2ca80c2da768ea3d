"""Where along the reverse SDE does a chain go astray? (issue "calibration")

  python -m experiments.chain_trajectory [--lenses 13] [--mode tweedie] [--n-steps 100] [--chains 3]
      [--solve-cap 5] [--every 5] [--truths-from WORKDIR]

Runs the chains of experiments/coverage.py's held-out lenses with the same keys (the library's
`solve`, keeping every state) and prints per chain the state's norm ‖x‖ and the norms of the two
drift terms of each step, g²|Δt| ‖likelihood score‖ and g²|Δt| ‖prior score‖. A sample that blew up in the
coverage run shows here at the step where the likelihood's drift outgrows the state.
With --truths-from, the sources are the prior draws a `coverage.py --truths prior` run saved in
its work directory (the self-consistent test), not the procedural galaxies.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import procedural_64
from jaxlens.cli import common
from jaxlens.prior import load_prior
from jaxlens.sample import LIKELIHOODS, chain_keys, init_chains, likelihood_from_name, observe, posterior_score, solve
from jaxlens.simulation import held_out_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--lenses", default="13", help="comma list of coverage.py lens indices")
    ap.add_argument("--mode", default="tweedie", choices=tuple(LIKELIHOODS))
    ap.add_argument("--n-steps", type=int, default=100)
    ap.add_argument("--chains", type=int, default=3, help="coverage.py draws --samples + 1 chains per lens")
    ap.add_argument("--solve-cap", type=int, default=5, help="eq12's CG cap, tweedie's Lanczos cap")
    ap.add_argument("--every", type=int, default=5, help="print every k-th step (and the first and last)")
    ap.add_argument("--seed", type=int, default=0, help="coverage.py's --seed")
    ap.add_argument("--truths-from", default=None,
                    help="a coverage.py --truths prior work directory: use its saved prior draws as the sources")
    args = ap.parse_args()
    lenses = [int(v) for v in args.lenses.split(",")]
    if min(lenses) < 0 or args.n_steps < 2 or args.chains < 1:
        raise SystemExit("need lens indices >= 0, --n-steps >= 2 and --chains >= 1")

    config = procedural_64.get_config()
    geo, sigma_n = common.geometry(config), float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    sde, score = prior.sde, prior.score_fn()
    shape = tuple(int(v) for v in prior.meta["image_shape"])
    sources = None
    if args.truths_from:
        sources = np.load(os.path.join(args.truths_from, "truths_prior.npz"))["sources"]
        if max(lenses) >= len(sources):
            raise SystemExit(f"{args.truths_from} holds {len(sources)} prior draws; lens {max(lenses)} asked")
        sources = sources[: max(lenses) + 1]
    problems = held_out_problems(max(lenses) + 1, args.seed, geo, sigma_n, sources)
    options = {"eq12": {"cg_maxiter": args.solve_cap}, "tweedie": {"lanczos_cap": args.solve_cap}}
    term = likelihood_from_name(args.mode, **options.get(args.mode, {}))
    n = args.n_steps

    for i in lenses:
        p = problems[i]
        obs = observe(p.y, p.sigma_n, lens=p.lens, geometry=geo).bind()
        # coverage.py's key of lens i (sample_observations: fold_in(key, i)), then the core's chain keys.
        key = jax.random.fold_in(jax.random.key(args.seed + 7), i)
        index = jnp.arange(args.chains)
        paths = jax.vmap(lambda g: chain_keys(key, g)[1])(index)
        x0 = init_chains(key, index, sde, shape)
        post = posterior_score(score, term, obs, sde)
        print(f"lens {i} ({args.mode}, N = {n}, cap {args.solve_cap}); truth ‖x‖ = {np.linalg.norm(p.truth):.2f}")
        t0 = time.perf_counter()
        # The library's own chains (the same keys as the coverage run), every state kept ...
        x, traj = jax.jit(jax.vmap(lambda k, xi: solve(k, post, sde, xi, n, keep_every=1)))(paths, x0)
        before = jnp.concatenate([x0[:, None], traj[:, :-1]], axis=1)  # the state each step starts from

        # ... then the two drift terms of each step, g²|Δt| times the norms of the scores at that state.
        @jax.jit
        def drifts(xk, k):
            t = 1.0 - k.astype(jnp.float32) / n
            scale = sde.g2(t) / n

            def one(xi):
                return jnp.stack([jnp.linalg.norm(xi), scale * jnp.linalg.norm(term.score(score, obs, xi, t, sde)),
                                  scale * jnp.linalg.norm(score(xi, t))])

            return jax.vmap(one)(xk)

        for k in range(n):
            if k % args.every == 0 or k == n - 1:
                stats = np.asarray(drifts(before[:, k], jnp.int32(k)))
                print(f"  step {k:4d} t = {1 - k / n:.2f} σ = {float(sde.sigma(1 - k / n)):8.4f}  ‖x‖ {stats[:, 0].round(2)}"
                      f"  g²|Δt|‖lik‖ {stats[:, 1].round(2)}  g²|Δt|‖prior‖ {stats[:, 2].round(2)}", flush=True)
        final = np.linalg.norm(np.asarray(x).reshape(args.chains, -1), axis=1)
        print(f"  final ‖x‖ {final.round(2)}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
