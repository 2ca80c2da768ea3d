"""The embedded default with the calibrated likelihood: tweedie at N = 200, Lanczos cap 5, tol 1e-4.

These are the settings of the TARP coverage study (README, "Calibration on the learned prior"):
on the held-out lenses they came within 0.05 of the diagonal, where eq19 at N = 200 is 0.21
off (on the prior's own draws, drawn at N = 3000, these settings are 0.04 off and ~5 %
over-confident by spread/skill), for about 1.3× the time of the default run (eq19 at
Technique 2's N = 882).
Technique 2 gives N = 200 a confidence of ~0.02 for this prior, so bin/sample warns; the
measured coverage, not that heuristic, is what chose it.
"""

from configs import procedural_64


def get_config():
    c = procedural_64.get_config()
    c.sampling.likelihood = "tweedie"
    c.sampling.n_steps = 200
    # Cap 20 costs 2.2x and was more over-confident on the learned prior (spread/skill 0.927 vs
    # 0.950), although with an exact (analytic) score at this noise it is cap 5 that is 5-7 % too
    # narrow (benchmarks/RESULTS.md, the mixture-prior section).
    c.sampling.cg_maxiter = 5
    c.sampling.cg_tol = 1e-4  # the likelihood's own default, which the study used
    return c
