"""Joint posterior of the source and the lens, p(x, κ | y) ∝ p(y | x, κ) p(x) p(κ): Gibbs within the diffusion.

  prior = LensPrior.around(first_guess, theta_e=0.1, e=0.05, center=0.05, gamma=0.02)
  run = joint_chains(key, prior_score, observation, sde, prior, n_chains=8, n_steps=200)
  run.samples, run.lens, run.lens_trace, run.acceptance

Each chain carries a source state x_t and its own lens κ (the 7 SIE + shear parameters). At every
step of the reverse SDE, from t = 1 to 0 (the scheme of GibbsDDRM, in continuous time as Barco et al.
2025 use it for lenses):

1. κ moves by Hamiltonian Monte Carlo (blackjax) on log p(κ) + log p_t(y | x_t, κ), with
   p_t(y | x_t, κ) ≈ N(y; A_κ x̂_0, σ_n² + v_t): x̂_0 = x_t + σ_t² s(x_t) is Tweedie's mean and v_t the mean
   posterior variance of x_0 given x_t, σ_t²(1 + σ_t² tr ∇s / D), from one Hutchinson probe (floored at
   0.05 σ_t²). The mass matrix is the diagonal Fisher information of that likelihood at the lens prior's
   mean plus the prior precision, so the moves are scaled to the posterior whatever its width.
2. x takes one reverse-SDE step with the posterior score for the current κ, using the chosen
   likelihood term (Tweedie by default), exactly as the known-lens sampler does.

What it samples: every HMC move leaves its target invariant, and each source step is the known-lens step.
If p_t(y | x_t, κ) were exact, the pair would stay distributed as p_t(x_t, κ | y) all the way to t = 0
(κ's marginal is p(κ | y) at every t; the κ move leaves the joint invariant and the source step carries
p_t(x | y, κ) to p_{t−dt}(x | y, κ)). The approximation is the Gaussian with a diagonal covariance: it
drops the correlations of A_κ Cov[x_0 | x_t] A_κᵀ, which carry the lens information while x_t is noise, so
κ is pinned mainly as σ_t falls below the source's scale, after the sources have begun to form. Where source
and lens are degenerate κ's spread is then wider than the marginal's. Gibbs sweeps (re-noise x to an
intermediate t and run the joint steps to t = 0 again; `jaxlens.fit_lens`) are an MCMC whose kernels leave
the joint invariant (for exact scores), and shrink that error; `docs/validation.md` measures both against a
closed form.

A lens parameter whose prior width is 0 is held at its mean; with every width 0 the run is the
known-lens sampler's, sample for sample (same chain keys).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.lensing import LensParams
from jaxlens.sample.core import _check_counts, chain_keys, check_key, init_chains
from jaxlens.sample.likelihood import Likelihood, Tweedie, posterior_score
from jaxlens.sample.observation import Observation
from jaxlens.sample.solvers import EulerMaruyama, Solver
from jaxlens.sde import VESDE

__all__ = ["JointRun", "JointStep", "LensPrior", "check_moves", "check_widths", "joint_chains"]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
FIELDS = LensParams._fields
# Physics: an SIE needs θ_E > 0 and an axis ratio q = (1 − |e|)/(1 + |e|) > 0, i.e. |e| < 1.
MAX_ELLIPTICITY = 0.95
# Smallest Var[x_0 | x_t] / σ_t² the lens moves use (see JointStep.advance).
VARIANCE_FLOOR = 0.05


def check_widths(widths: dict[str, float]) -> None:
    """Raises unless every lens-prior width is finite and >= 0 (0 holds a parameter fixed)."""
    bad = [f"{k}={s}" for k, s in widths.items() if not (s >= 0 and math.isfinite(s))]
    if bad:
        raise ValueError(f"lens prior widths must be finite and >= 0 (0 holds a parameter), got {', '.join(bad)}")


def check_moves(leapfrog_steps, step_size) -> None:
    """Raises unless the HMC move has a positive Python int of leapfrog steps and a step size > 0."""
    if isinstance(leapfrog_steps, bool) or not isinstance(leapfrog_steps, int) or leapfrog_steps < 1:
        raise ValueError(f"leapfrog_steps must be a positive Python int, got {leapfrog_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")


@flax.struct.dataclass
class LensPrior:
    """Independent Gaussians around a first guess, with hard physical bounds (θ_E > 0, |e| < 0.95).

    Attributes:
      mean: the first guess (LensParams).
      std: the width of each parameter (LensParams of floats >= 0); 0 holds that parameter fixed.
    """

    mean: LensParams
    std: LensParams = flax.struct.field(pytree_node=False)

    @classmethod
    def around(cls, guess: LensParams, *, theta_e: float = 0.1, e: float = 0.05, center: float = 0.05,
               gamma: float = 0.02) -> "LensPrior":
        """Widths by kind: θ_E and the centre in arcsec, ellipticity and shear dimensionless."""
        return cls.make(guess, LensParams(theta_e, e, e, center, center, gamma, gamma))

    @classmethod
    def make(cls, mean: LensParams, std: LensParams) -> "LensPrior":
        """Validates the widths (concrete floats >= 0) and the mean (inside the bounds)."""
        std = LensParams(*(float(s) for s in std))
        check_widths(dict(zip(FIELDS, std)))
        mean = LensParams(*(jnp.asarray(m, jnp.result_type(float)) for m in mean))
        if not any(isinstance(m, jax.core.Tracer) for m in mean):
            m = LensParams(*(float(v) for v in mean))
            if not m.theta_e > 0 or math.hypot(m.e1, m.e2) >= MAX_ELLIPTICITY:
                raise ValueError(f"the lens prior's mean must have theta_e > 0 and |e| < {MAX_ELLIPTICITY}, "
                                 f"got theta_e={m.theta_e}, |e|={math.hypot(m.e1, m.e2):.3g}")
            if not all(math.isfinite(v) for v in m):
                raise ValueError(f"the lens prior's mean must be finite, got {m}")
        return cls(mean=mean, std=std)

    @property
    def free(self) -> tuple[int, ...]:
        """Indices (into LensParams) of the parameters that are sampled."""
        return tuple(i for i, s in enumerate(self.std) if s > 0)

    @property
    def free_std(self) -> jax.Array:
        """The widths of the free parameters, [n_free]."""
        return jnp.asarray([self.std[i] for i in self.free], jnp.result_type(float))

    def lens(self, u: jax.Array | None) -> LensParams:
        """The lens whose free parameters are the vector u [n_free] and the others the mean."""
        values = list(self.mean)
        for j, i in enumerate(self.free if u is not None else ()):
            values[i] = u[j]
        return LensParams(*values)

    def vector(self, lens: LensParams) -> jax.Array:
        """The free parameters of `lens` as a vector [n_free]."""
        if not self.free:
            return jnp.zeros((0,), jnp.result_type(float))
        return jnp.stack([jnp.asarray(lens[i], jnp.result_type(float)) for i in self.free])

    def log_prob(self, u: jax.Array) -> jax.Array:
        """log p(κ) of the free parameters u, up to a constant; −inf outside the bounds."""
        mean, std = self.vector(self.mean), self.free_std.astype(u.dtype)
        lens = self.lens(u)
        inside = (lens.theta_e > 0) & (jnp.hypot(lens.e1, lens.e2) < MAX_ELLIPTICITY)
        return jnp.where(inside, -0.5 * jnp.sum(jnp.square((u - mean) / std)), -jnp.inf)

    def sample(self, key: jax.Array) -> jax.Array:
        """One draw of the free parameters from the prior, inside the bounds (by resampling)."""
        if not self.free:
            return self.vector(self.mean)
        mean, std = self.vector(self.mean), self.free_std

        def draw(k):
            return mean + std * jax.random.normal(k, mean.shape, mean.dtype)

        def redraw(carry):
            k, _ = carry
            k, sub = jax.random.split(k)
            return k, draw(sub)

        key, sub = jax.random.split(key)
        _, u = jax.lax.while_loop(lambda c: ~jnp.isfinite(self.log_prob(c[1])), redraw, (key, draw(sub)))
        return u


class JointRun(NamedTuple):
    """Output of `joint_chains`.

    Attributes:
      samples: [n_chains, H, W, C] source samples.
      lens: LensParams of [n_chains] arrays, each chain's lens at t = 0.
      lens_trace: [n_chains, n_steps, n_free] the free lens parameters after each step's move.
      acceptance: [n_chains, n_steps] HMC acceptance probability of each move.
      evaluations: [n_chains] network evaluations of each chain (the lens moves' one Jacobian
        product and forward pass per step included).
    """

    samples: jax.Array
    lens: LensParams
    lens_trace: jax.Array
    acceptance: jax.Array
    evaluations: jax.Array


def joint_chains(
    key: jax.Array,
    prior_score: ScoreFn,
    observation: Observation,
    sde: VESDE,
    lens_prior: LensPrior,
    *,
    likelihood: Likelihood = Tweedie(),
    n_chains: int,
    n_steps: int,
    solver: Solver = EulerMaruyama(),
    leapfrog_steps: int = 3,
    step_size: float = 0.5,
) -> JointRun:
    """Joint samples of the source and the lens for one observation (see the module docstring).

    Args:
      key: typed PRNG key; chain g depends on (key, g) only, and its source noise is the known-lens
        sampler's chain g.
      prior_score: prior score of ONE state, prior_score(x [H, W, C], t) → [H, W, C].
      observation: `observe(y, sigma_n, lens=first_guess, geometry=...)`; its lens is replaced by
        each chain's κ.
      sde: the VE SDE of the prior.
      lens_prior: p(κ), e.g. `LensPrior.around(first_guess)`.
      likelihood: the source step's likelihood term (Tweedie() by default).
      n_chains, n_steps: Python ints.
      solver: the source step's integrator.
      leapfrog_steps: leapfrog steps per HMC move.
      step_size: HMC step size in units of the Fisher-scaled posterior width (≈ 1 is one width).

    Returns:
      JointRun.
    """
    _check_counts(n_chains, n_steps)
    check_key(key)
    step = JointStep.make(prior_score, observation, sde, lens_prior, likelihood=likelihood, solver=solver,
                          leapfrog_steps=leapfrog_steps, step_size=step_size)
    index = jnp.arange(n_chains, dtype=jnp.int32)
    x, u = step.init(key, index)
    x, u, trace, accept, cost = step.advance(key, index, x, u, jnp.arange(n_steps, dtype=jnp.int32), n_steps)
    return JointRun(samples=x, lens=step.lenses(u), lens_trace=trace, acceptance=accept, evaluations=cost)


@flax.struct.dataclass
class JointStep:
    """One step of the joint sampler for every chain, and the chains' initial states.

    `joint_chains` is `init` then `advance` over all steps; a runner calls `advance` on segments of the
    step range (for a progress bar) and gets the same chains.
    """

    prior_score: ScoreFn = flax.struct.field(pytree_node=False)
    observation: Observation
    sde: VESDE
    lens_prior: LensPrior
    likelihood: Likelihood
    solver: Solver
    leapfrog_steps: int = flax.struct.field(pytree_node=False, default=3)
    step_size: float = flax.struct.field(pytree_node=False, default=0.5)

    @classmethod
    def make(cls, prior_score, observation, sde, lens_prior, *, likelihood=Tweedie(), solver=EulerMaruyama(),
             leapfrog_steps=3, step_size=0.5) -> "JointStep":
        if observation.geometry is None:
            raise ValueError("joint sampling needs an observation made with lens= and geometry=, not A= and AT=")
        check_moves(leapfrog_steps, step_size)
        # The lens changes from step to step: never keep a bound operator.
        return cls(prior_score, observation.replace(operator=None), sde, lens_prior, likelihood, solver,
                   leapfrog_steps, float(step_size))

    @property
    def free(self) -> tuple[int, ...]:
        return self.lens_prior.free

    def lenses(self, u: jax.Array) -> LensParams:
        """LensParams of [n] arrays from the chains' free parameters u [n, n_free]."""
        return LensParams(*(u[:, self.free.index(i)] if i in self.free else jnp.broadcast_to(m, u.shape[:1])
                            for i, m in enumerate(self.lens_prior.mean)))

    def init(self, key: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(x [n, H, W, C] at t = 1, the known-lens sampler's; u [n, n_free] drawn from the lens prior)."""
        dtype = self.observation.y.dtype
        x = init_chains(key, index, self.sde, self.observation.source_shape, dtype)
        u = jax.vmap(lambda g: self.lens_prior.sample(jax.random.fold_in(_lens_key(key, g), -1 % 2**31)))(index)
        return x, u.astype(dtype)

    def with_lens(self, u: jax.Array | None) -> Observation:
        return self.observation.replace(lens=self.lens_prior.lens(u))

    def lens_log_likelihood(self, u: jax.Array, x0: jax.Array, var: jax.Array) -> jax.Array:
        """log N(y; A_κ x̂_0, σ_n² + v_t) on the used pixels, as a function of the free parameters u."""
        obs = self.with_lens(u)
        return -0.5 * jnp.sum(obs.valid * jnp.square(obs.residual(x0)) / (obs.noise_var + var))

    def move_lens(self, key: jax.Array, u: jax.Array, x0: jax.Array, var: jax.Array):
        """One blackjax HMC move of u targeting p(κ) p_t(y | x_t, κ); returns (u, acceptance)."""
        import blackjax

        mean = self.lens_prior.vector(self.lens_prior.mean)

        def logdensity(v):
            log_prior = self.lens_prior.log_prob(v)
            # Outside the bounds the lens is unphysical: the likelihood is evaluated at the mean instead,
            # so no NaN reaches the gradient, and the −inf prior rejects the point.
            return log_prior + self.lens_log_likelihood(jnp.where(jnp.isfinite(log_prior), v, mean), x0, var)

        def image(v):
            obs = self.with_lens(v)
            A, _ = obs.operators()
            return obs.valid * A(x0) / jnp.sqrt(obs.noise_var + var)

        # Mass matrix: the diagonal Fisher information at the prior mean (not at the chain's κ, so the
        # kernel is one fixed HMC kernel given x_t) plus the prior precision.
        jac = jax.jacfwd(image)(mean)
        fisher = jnp.sum(jnp.square(jac), axis=tuple(range(jac.ndim - 1)))
        precision = self.lens_prior.free_std.astype(fisher.dtype) ** -2.0
        inv_mass = jax.lax.stop_gradient(1.0 / (fisher + precision))
        hmc = blackjax.hmc(logdensity, self.step_size, inv_mass, self.leapfrog_steps)
        state, info = hmc.step(key, hmc.init(u))
        return state.position, info.acceptance_rate

    def advance(self, key: jax.Array, index: jax.Array, x: jax.Array, u: jax.Array, step_indices: jax.Array,
                n_steps: int):
        """Runs steps `step_indices` of the N-step grid on chains `index`: (x, u, trace [n, K, n_free],
        acceptance [n, K], network evaluations [n])."""
        dtype = x.dtype
        dt = jnp.asarray(-1.0 / n_steps, dtype)
        free = self.free
        # With every parameter held, the operator is built once, as the known-lens sampler builds it.
        fixed_score = None if free else posterior_score(self.prior_score, self.likelihood, self.with_lens(None),
                                                        self.sde, counted=True)

        def one_chain(g, x, u):
            k_path, k_lens = chain_keys(key, g)[1], _lens_key(key, g)

            def body(carry, i):
                x, u = carry
                t = 1.0 - i.astype(dtype) / n_steps
                k_i = jax.random.fold_in(k_lens, i)
                if free:
                    # Tweedie's mean x̂_0 and the mean posterior variance v_t = σ²(1 + σ² tr(∇s)/D) of
                    # x_0 given x_t, from one JVP of the prior score with a Rademacher probe (Hutchinson).
                    sigma2 = jnp.square(self.sde.sigma(t)).astype(dtype)
                    probe = jax.random.rademacher(jax.random.fold_in(k_i, 1), x.shape, dtype)
                    s, js = jax.jvp(lambda z: self.prior_score(z, t), (x,), (probe,))
                    # One probe is noisy: a ratio v_t/σ² near or below 0 would make the κ likelihood
                    # sharp at high t, where x̂_0 is still a blur, and throw a chain off. The floor only
                    # binds where σ_t is several times the data's scale, where κ should follow its prior.
                    ratio = jnp.clip(1.0 + sigma2 * jnp.mean(probe * js), VARIANCE_FLOOR, 1.0)
                    var = sigma2 * ratio
                    u, accept = self.move_lens(k_i, u, jax.lax.stop_gradient(x + sigma2 * s),
                                               jax.lax.stop_gradient(var))
                    score = posterior_score(self.prior_score, self.likelihood, self.with_lens(u), self.sde,
                                            counted=True)
                    lens_cost = 2  # the probe's forward pass and Jacobian product
                else:
                    accept, score, lens_cost = jnp.ones((), dtype), fixed_score, 0

                @jax.checkpoint
                def advance_x(z):
                    return self.solver.step(score, self.sde, z, t, dt, jax.random.fold_in(k_path, i))

                x, cost = advance_x(x)
                return (x, u), (u, accept, cost + lens_cost)

            (x, u), (trace, accept, cost) = jax.lax.scan(body, (x, u), jnp.asarray(step_indices, jnp.int32))
            return x, u, trace, accept, jnp.sum(cost)

        return jax.vmap(one_chain)(index, x, u)


def _lens_key(key: jax.Array, g) -> jax.Array:
    """The lens moves' key of chain g: beside the chain's (initial-state, path) keys, not among them."""
    return jax.random.fold_in(jax.random.fold_in(key, g), 2)


def lens_table(lens: LensParams) -> np.ndarray:
    """[n, 7] array of a LensParams of [n] arrays, columns in LensParams order."""
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), np.shape(lens.theta_e)) for v in lens], axis=-1)
