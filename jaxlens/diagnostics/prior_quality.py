"""How much a prior's samples look like held-out data: morphology KS distances and prior-alone TARP.

Each number comes with its noise floor, the value that two samples of the same distribution of
these sizes would reach, so that a quality read at cheap settings (a few dozen samples, as the
training loop does at its checkpoints) is not mistaken for a real gap:

- KS distance of the total flux, half-light radius, concentration and |e| of the prior samples
  against the data; the floor is the two-sample KS critical value at 95 % for these sizes,
  1.358 √((n + m)/(n m)).
- Prior-alone TARP: each data image is a "truth" scored against `samples_per_truth` prior samples
  (the test a posterior with no data would face). The floor is the same test with one more prior
  sample in the truth's place, exchangeable with the others and so calibrated by construction.
"""

from __future__ import annotations

import math

import jax
import numpy as np

from jaxlens.diagnostics.morphology import morphology_ks
from jaxlens.diagnostics.tarp import coverage_bias, max_calibration_error, tarp_coverage

__all__ = ["prior_quality"]

_KS_95 = 1.358  # two-sample Kolmogorov–Smirnov coefficient at the 5 % level


def prior_quality(prior_samples, data, *, key: jax.Array, samples_per_truth: int = 2,
                  n_references: int = 16) -> dict[str, float]:
    """Quality measures of prior samples against held-out data, each with its noise floor.

    Args:
      prior_samples: [N, H, W] or [N, H, W, C] draws of the prior (non-finite draws are dropped and counted).
      data: [M, H, W(, C)] held-out images of the training distribution.
      key: typed PRNG key for TARP's reference points.
      samples_per_truth: prior samples scored against each data image in TARP.
      n_references: TARP reference points per truth, averaged.

    Returns:
      A flat dict: `ks_<statistic>` for flux, r50, concentration and e, `ks_floor`, `tarp_max_dev`,
      `tarp_signed_area` (> 0: the prior is broader than the data), `tarp_floor`, `n_samples`,
      `n_data`, `non_finite`.

    Raises:
      ValueError: too few samples or data for the tests.
    """
    x, d = np.asarray(prior_samples, np.float64), np.asarray(data, np.float64)
    if x.ndim == 4:
        x = x[..., 0]
    if d.ndim == 4:
        d = d[..., 0]
    finite = np.isfinite(x).all(axis=(1, 2))
    x = x[finite]
    k = int(samples_per_truth)
    if k < 1 or len(x) < k + 1 or len(d) < 2:
        raise ValueError(f"need at least {k + 1} finite prior samples and 2 data images, got {len(x)} and {len(d)}")
    out = {f"ks_{name}": float(v) for name, v in morphology_ks(x, d).items()}
    out["ks_floor"] = _KS_95 * math.sqrt((len(x) + len(d)) / (len(x) * len(d)))

    m = min(len(d), len(x) // (k + 1))
    groups = x[: m * (k + 1)].reshape((m, k + 1) + x.shape[1:])
    k_tarp, k_floor = jax.random.split(key)
    alpha, ecp = tarp_coverage(groups[:, 1:], d[:m], key=k_tarp, norm=False, n_references=n_references)
    f_alpha, f_ecp = tarp_coverage(groups[:, 1:], groups[:, 0], key=k_floor, norm=False, n_references=n_references)
    out.update(tarp_max_dev=max_calibration_error(alpha, ecp), tarp_signed_area=coverage_bias(alpha, ecp),
               tarp_floor=max_calibration_error(f_alpha, f_ecp), n_samples=int(len(x)), n_data=int(len(d)),
               non_finite=int((~finite).sum()))
    return out
