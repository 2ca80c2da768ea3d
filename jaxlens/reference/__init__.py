"""Closed-form priors and posteriors that the samplers are checked against (tests and studies).

A Gaussian prior (exact diffused score, exact linear-Gaussian posterior) and a Gaussian-mixture
prior (exact diffused score, exact posterior as a mixture). They are analytic `score_fn`s: any
sampler of `jaxlens.sample` takes them in place of a trained network.
"""

from jaxlens.reference.gaussian import (
    GaussianPrior,
    dense_operator,
    gaussian_em_moments,
    gaussian_prior_sample,
    gaussian_prior_score,
    isotropic_gaussian_prior,
    linear_gaussian_posterior,
    smooth_gaussian_prior,
)
from jaxlens.reference.mixture import (
    MixturePrior,
    mixture_log_density,
    mixture_moments,
    mixture_posterior,
    mixture_prior,
    mixture_prior_sample,
    mixture_prior_score,
)

__all__ = [
    "GaussianPrior",
    "MixturePrior",
    "dense_operator",
    "gaussian_em_moments",
    "gaussian_prior_sample",
    "gaussian_prior_score",
    "isotropic_gaussian_prior",
    "linear_gaussian_posterior",
    "mixture_log_density",
    "mixture_moments",
    "mixture_posterior",
    "mixture_prior",
    "mixture_prior_sample",
    "mixture_prior_score",
    "smooth_gaussian_prior",
]
