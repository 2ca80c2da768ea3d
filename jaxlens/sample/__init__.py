"""Posterior sampling: observations, likelihood terms, reverse-SDE solvers, a pure core and its runner.

The core (`posterior_chains`, `prior_chains`) is a pure function of the key, the observation
and the lens: jit, vmap and grad compose with it. The runner (`sample_posterior`,
`sample_prior`) runs the same chains in resumable chunks over every device and host.
"""

from jaxlens.sample.chunks import ChunkStore
from jaxlens.sample.core import (
    advance_chains,
    chain_keys,
    denoise_chains,
    init_chains,
    posterior_chains,
    prior_chains,
)
from jaxlens.sample.likelihood import (
    DPS,
    LIKELIHOODS,
    Eq12,
    Eq19,
    Likelihood,
    Tweedie,
    convolved_likelihood_score,
    exact_likelihood_score,
    likelihood_from_name,
    posterior_score,
    state_probe,
)
from jaxlens.sample.observation import Observation, observe
from jaxlens.sample.runner import data_mesh, sample_observations, sample_posterior, sample_prior
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
    "DPS",
    "Eq12",
    "Eq19",
    "EulerMaruyama",
    "LIKELIHOODS",
    "Likelihood",
    "Observation",
    "PredictorCorrector",
    "ProbabilityFlow",
    "Solver",
    "SolverState",
    "Tweedie",
    "advance_chains",
    "chain_keys",
    "convolved_likelihood_score",
    "data_mesh",
    "denoise_chains",
    "euler_maruyama",
    "exact_likelihood_score",
    "init_chains",
    "integrate",
    "likelihood_from_name",
    "observe",
    "posterior_chains",
    "posterior_score",
    "predictor_corrector",
    "prior_chains",
    "probability_flow",
    "sample_observations",
    "sample_posterior",
    "sample_prior",
    "solve",
    "state_probe",
    "tweedie_denoise",
]
