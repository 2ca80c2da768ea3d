"""Is the `tweedie` covariance positive definite with the learned prior? (issue "calibration")

  python -m experiments.jacobian_spectrum [--lenses 1] [--times 0.9,0.7,0.5,0.2]

At 64² the whole Jacobian J = ∂s/∂x of the shipped prior's score is affordable (4096 JVPs, about
100 s per state on 2 CPU cores), and so is the lens operator as a matrix. For held-out lenses of
experiments/coverage.py and states x_t = truth + σ(t) z it prints

- the asymmetry ‖J − Jᵀ‖ / ‖J‖ (a true score's Jacobian is a Hessian, hence symmetric);
- the spectrum of the Tweedie covariance C = σ² (I + σ² J), symmetrised: how many of its
  eigenvalues are negative, and the extremes;
- the spectrum of the CG system K = σ_n² I + A C Aᵀ that the likelihood term solves.

CG needs K symmetric positive definite; a negative eigenvalue of K means the capped solve (and the
score built on it) depends on the iteration count and on rounding, not only on the data.
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
from jaxlens.lensing import lens_operator
from jaxlens.prior import load_prior
from jaxlens.reference import dense_operator
from jaxlens.simulation import held_out_problems

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def spectrum(J: np.ndarray, A: np.ndarray, var_t: float, noise_var: float) -> dict:
    """Asymmetry of J and the eigenvalue summaries of sym(C) and sym(K)."""
    C = var_t * (np.eye(len(J)) + var_t * J)
    K = noise_var * np.eye(len(A)) + A @ C @ A.T
    ev_c = np.linalg.eigvalsh(0.5 * (C + C.T))
    ev_k = np.linalg.eigvalsh(0.5 * (K + K.T))
    return dict(asym=np.linalg.norm(J - J.T) / np.linalg.norm(J),
                c_neg=int((ev_c < 0).sum()), c_min=ev_c.min(), c_max=ev_c.max(),
                k_neg=int((ev_k < 0).sum()), k_min=ev_k.min(), k_max=ev_k.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=os.path.join(REPO, "checkpoints", "procedural_64"))
    ap.add_argument("--lenses", type=int, default=1)
    ap.add_argument("--times", default="0.9,0.7,0.5,0.2")
    args = ap.parse_args()
    times = [float(t) for t in args.times.split(",")]
    if args.lenses < 1 or not all(0 < t <= 1 for t in times):
        raise SystemExit("need --lenses >= 1 and times in (0, 1]")
    config = procedural_64.get_config()
    geo, sigma_n = common.geometry(config), float(config.lens.sigma_n)
    prior = load_prior(args.checkpoint)
    score, sde = prior.score_fn(), prior.sde
    print(f"σ_n² = {sigma_n ** 2:.3g}\n")
    print("| lens | t | σ(t) | ‖J − Jᵀ‖/‖J‖ | C: negative eigenvalues | C: min / max | K: negative eigenvalues "
          "| K: min / max | seconds |")
    print("|---" * 9 + "|")
    for k, p in enumerate(held_out_problems(args.lenses, 0, geo, sigma_n)):
        shape = p.truth.shape
        A, _ = lens_operator(p.lens, geo)
        A_mat = dense_operator(A, shape, chunk=256)
        for t in times:
            t0 = time.perf_counter()
            x = jnp.asarray(p.truth) + sde.sigma(t) * jax.random.normal(jax.random.key(k), shape)
            _, jvp = jax.linearize(lambda z: score(z, jnp.float32(t)), x)
            r = spectrum(dense_operator(jvp, shape, chunk=256), A_mat, float(sde.sigma(t)) ** 2, sigma_n ** 2)
            n = A_mat.shape[1]
            print(f"| {k} | {t:g} | {float(sde.sigma(t)):.3g} | {r['asym']:.3f} | {r['c_neg']} of {n} "
                  f"| {r['c_min']:.3g} / {r['c_max']:.3g} | {r['k_neg']} of {A_mat.shape[0]} "
                  f"| {r['k_min']:.3g} / {r['k_max']:.3g} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
