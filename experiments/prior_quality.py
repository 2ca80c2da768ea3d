"""How much a prior's samples look like held-out galaxies (the prior-quality goals of the prior issue).

  python -m experiments.prior_quality [--checkpoint checkpoints/procedural_64] [--step N] [--samples 500]
      [--steps 150] [--data 500] [--batch 50] [--seed 0] [--json out/prior_quality.json]
      [--grid out/prior_quality.png] [--val-images 32]

Draws --samples unconditional samples of the prior (Euler–Maruyama, --steps steps) and scores them with
`jaxlens.diagnostics.prior_quality` against --data procedural galaxies from the validation seeds, which
no training set uses: KS distances of the flux, half-light radius, concentration and |e| distributions,
and prior-alone TARP, each beside its noise floor. --checkpoint takes an exported prior or a `bin/train`
work directory (its newest checkpoint, or --step), so a run can be scored while it trains.

It also reports `jaxlens.train.validation_loss` (score_sde's DSM objective, the same measure for any
training recipe) on the first --val-images validation galaxies with the noise key `bin/train` logs it
with, so checkpoints of runs that predate that log compare with those that have it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

from jaxlens import io
from jaxlens.data import VALIDATION_SEED_START, procedural_galaxies
from jaxlens.diagnostics import figures, prior_quality
from jaxlens.prior import load_prior
from jaxlens.sample import sample_prior
from jaxlens.train import validation_key, validation_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--step", type=int, default=None, help="checkpoint step of a training workdir")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--data", type=int, default=500, help="validation-seed galaxies")
    ap.add_argument("--batch", type=int, default=50, help="prior chains per compiled call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join("out", "prior_quality.json"))
    ap.add_argument("--val-images", type=int, default=32, help="validation-loss images (0: skip)")
    ap.add_argument("--grid", default="", help="also draw the first 16 samples beside 16 data images here")
    args = ap.parse_args()
    if args.samples not in (0, 1, 2) and (args.data < 2 or args.steps < 2) or args.samples in (1, 2):
        raise SystemExit("need --samples >= 3 (or 0: validation loss only), --data >= 2 and --steps >= 2")

    prior = load_prior(args.checkpoint, step=args.step)
    shape = tuple(int(v) for v in prior.meta["image_shape"])
    data = procedural_galaxies((VALIDATION_SEED_START, max(args.data, args.val_images)), shape[0])
    val = {}
    if args.val_images > 0:
        images = np.asarray(data[:args.val_images]).reshape((-1,) + shape)
        val = validation_loss(prior.score_fn(), jax.numpy.asarray(images), prior.sde,
                              validation_key(args.seed))
        print("  ".join(f"{k} {v:.2f}" for k, v in val.items()))
    data = data[:args.data]
    if args.samples == 0:
        print("wrote", io.write_results(args.json, {"command": sys.argv, "checkpoint": args.checkpoint,
                                                    "prior_step": prior.meta.get("step"), "validation": val}))
        return
    t0 = time.perf_counter()
    samples = sample_prior(jax.random.key(args.seed), prior.score_fn(), prior.sde, shape, args.samples, args.steps,
                           chunk_size=args.batch)
    seconds = time.perf_counter() - t0
    quality = prior_quality(samples, data, key=jax.random.key(args.seed + 1))
    for k, v in quality.items():
        print(f"{k:18s} {v:.4g}" if isinstance(v, float) else f"{k:18s} {v}")
    record = {"command": sys.argv, "checkpoint": args.checkpoint, "prior_step": prior.meta.get("step"),
              "samples": args.samples, "steps": args.steps, "sampling_s": seconds, "quality": quality, "validation": val}
    print("wrote", io.write_results(args.json, record))
    if args.grid:
        n = min(16, len(samples))
        finite = np.nan_to_num(np.asarray(samples)[:n, ..., 0])
        figures.image_grid(args.grid, np.concatenate([np.clip(finite, data.min(), data.max()), data[:n]]), ncols=n,
                           titles=[f"prior {i}" for i in range(n)] + [f"data {i}" for i in range(n)],
                           shared_scale=True)


if __name__ == "__main__":
    main()
