"""Posterior sampling: likelihood terms, reverse-SDE solvers, and sharded, resumable chains."""

from jaxlens.sample.chunks import ChunkStore
from jaxlens.sample.gaussian import (
    GaussianPrior,
    dense_operator,
    gaussian_em_moments,
    gaussian_prior_sample,
    gaussian_prior_score,
    isotropic_gaussian_prior,
    linear_gaussian_posterior,
    smooth_gaussian_prior,
)
from jaxlens.sample.likelihood import (
    LIKELIHOOD_MODES,
    LikelihoodTerm,
    convolved_likelihood_score,
    exact_likelihood_score,
    make_likelihood,
    posterior_score,
)
from jaxlens.sample.posterior import data_mesh, sample_posterior, sample_prior
from jaxlens.sample.solvers import (
    EulerMaruyama,
    PredictorCorrector,
    ProbabilityFlow,
    Solver,
    SolverState,
    euler_maruyama,
    integrate,
    predictor_corrector,
    probability_flow,
    solve,
    tweedie_denoise,
)

__all__ = [
    "ChunkStore",
    "EulerMaruyama",
    "GaussianPrior",
    "LIKELIHOOD_MODES",
    "LikelihoodTerm",
    "PredictorCorrector",
    "ProbabilityFlow",
    "Solver",
    "SolverState",
    "convolved_likelihood_score",
    "data_mesh",
    "dense_operator",
    "euler_maruyama",
    "exact_likelihood_score",
    "gaussian_em_moments",
    "gaussian_prior_sample",
    "gaussian_prior_score",
    "integrate",
    "isotropic_gaussian_prior",
    "linear_gaussian_posterior",
    "make_likelihood",
    "posterior_score",
    "predictor_corrector",
    "probability_flow",
    "sample_posterior",
    "sample_prior",
    "smooth_gaussian_prior",
    "solve",
    "tweedie_denoise",
]
