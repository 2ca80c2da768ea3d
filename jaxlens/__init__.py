"""jaxlens: posterior samples of strongly lensed source galaxies with score-based priors.

A JAX/Flax reimplementation of Adam et al. (2022). Subpackages:
  lensing      the lens forward model A and its adjoint
  sde          the variance-exploding SDE and step-count heuristics
  nn           the NCSN++ score network
  train        denoising score matching
  sample       likelihood scores and reverse-SDE samplers
  data         procedural galaxies and TFDS builders
  diagnostics  χ², residuals, coverage, figures
  mesh         the one-axis `data` device mesh shared by training and sampling
  prior        a trained network as a prior score; loading and exporting checkpoints
  reconstruct  one posterior reconstruction end to end (what bin/sample runs)
  io           validated FITS / JSON / NPZ input and output
"""

__version__ = "0.1.0"
