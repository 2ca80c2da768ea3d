"""The embedded default with the calibrated likelihood: tweedie at N = 200, Lanczos cap 5, tol 1e-4.

These are the settings of the TARP coverage study (docs/validation.md, "Coverage on the learned
prior"): on 200 held-out lenses they are 0.083 ± 0.030 from the diagonal (noise floor 0.049) and
~5 % over-confident by spread/skill, where eq19 at N = 200 is 0.21 off. About 1.3× the time of
the default run (eq19 at Technique 2's N = 882).
Technique 2 gives N = 200 a confidence of ~0.02 for this prior, so bin/sample warns; the
measured coverage, not that heuristic, is what chose it.
"""

from configs import procedural_64


def get_config():
    c = procedural_64.get_config()
    c.sampling.likelihood = "tweedie"
    c.sampling.n_steps = 200
    # Cap 20 costs 2.2x and was more over-confident on the learned prior (self-consistent test,
    # N = 100: spread/skill 0.915 vs 0.958 with the symmetrised solve), although with an exact
    # (analytic) score at this noise it is cap 5 that is 5-7 % too narrow (docs/validation.md).
    c.sampling.lanczos_cap = 5  # the library's default, which the study used (tol 1e-4)
    return c
