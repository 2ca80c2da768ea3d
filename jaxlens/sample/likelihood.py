"""Likelihood terms ∇_x log p_t(y | x_t) for posterior sampling with a diffused prior.

Each term is a small frozen pytree holding only its own options, with one default
each, defined here. `term.score(prior_score, obs, x, t, sde)` gives the likelihood
score of one state; `term.posterior_score(...)` adds the prior score, evaluating the
network once. Terms see the prior score because the better approximations of
p_t(y | x_t) are built from it.

- `Eq19()` (the paper, Adam et al. 2022 eq. 19): the convolved likelihood
  Aᵀ (y − A x) / (σ_n² + σ(t)²). Cheap; treats AAᵀ as the identity.
- `Eq12(cg_tol, cg_maxiter)` (eq. 12): Aᵀ C⁻¹ (y − A x), C = diag(σ_n²) + σ(t)² AAᵀ,
  solved matrix-free by preconditioned conjugate gradients. Exact only for a flat prior.
- `Tweedie(lanczos_cap, lanczos_tol, drift_tol)` (TMPD, Boys et al. 2023):
  p_t(y | x_t) ≈ N(y; A m, diag(σ_n²) + A C Aᵀ) with the Tweedie moments
  m = x + σ² s(x, t), C = σ² ∂m/∂x. Its gradient, (∂m/∂x)ᵀ Aᵀ (σ_n² + A C Aᵀ)⁻¹ (y − A m),
  is taken as the gain ∂m/∂x Aᵀ (σ_n² + A C Aᵀ)⁻¹ (y − A m) (equal for a true score,
  whose ∂m/∂x is symmetric): one linearisation of the prior score and a clipped Lanczos
  solve (jaxlens.sample.krylov) of at most `lanczos_cap` operator applications, stopped
  once a step no longer moves the drift (`drift_tol`), with the directions where the
  learned C has negative curvature (it does, at large σ) dropped. Exact when the prior is
  Gaussian and the solve converges. `covariance_gradient_sigmas` adds the gradient through
  C(x_t), which the mean-only form drops, in a window of σ(t).
- `DPS()` (Chung et al. 2023): ∇_x log N(y; A m(x), diag(σ_n²)), one VJP through the
  prior score (no guidance-scale heuristic).

`likelihood_from_name('tweedie', lanczos_cap=5)` builds a term from a config's name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg

from jaxlens.sample.krylov import clipped_lanczos_solve
from jaxlens.sample.observation import Observation, observe
from jaxlens.sde import VESDE

__all__ = [
    "DPS",
    "Eq12",
    "Eq19",
    "LIKELIHOODS",
    "Likelihood",
    "Tweedie",
    "convolved_likelihood_score",
    "exact_likelihood_score",
    "likelihood_from_name",
    "posterior_score",
    "state_probe",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
Operator = Callable[[jax.Array], jax.Array]


class _Term:
    """The shared interface; subclasses define `_terms` → (likelihood score, prior score or None,
    network evaluations the term took, the prior's included when it returns it)."""

    name = ""

    def score(self, prior_score: ScoreFn | None, obs: Observation, x: jax.Array, t: jax.Array,
              sde: VESDE) -> jax.Array:
        """∇_x log p_t(y | x_t) at one state x [H, W, C] and time t (scalar)."""
        obs = obs.bind()  # trace the lens once per call, not once per operator application
        _check_state(obs, x)
        return self._terms(prior_score, obs, x, t, sde)[0]

    def posterior_score(self, prior_score: ScoreFn, obs: Observation, x: jax.Array, t: jax.Array,
                        sde: VESDE) -> jax.Array:
        """Prior score plus likelihood score at one state, evaluating the prior only once."""
        return self.posterior_score_and_cost(prior_score, obs, x, t, sde)[0]

    def posterior_score_and_cost(self, prior_score: ScoreFn, obs: Observation, x: jax.Array, t: jax.Array,
                                 sde: VESDE) -> tuple[jax.Array, jax.Array]:
        """(posterior score, network evaluations it took) at one state.

        A forward pass of the prior network, a Jacobian-vector product and a vector-Jacobian
        product each count as one evaluation (each costs about one forward pass).
        """
        obs = obs.bind()
        _check_state(obs, x)
        lik, prior, evaluations = self._terms(prior_score, obs, x, t, sde)
        if prior is None:
            prior, evaluations = prior_score(x, t), evaluations + 1
        return prior + lik, jnp.asarray(evaluations, jnp.int32)

    def options(self) -> dict:
        """This term's own options, by name (for summaries and manifests)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _check_state(obs: Observation, x: jax.Array) -> None:
    if tuple(x.shape) != obs.source_shape:
        raise ValueError(f"state of shape {tuple(x.shape)} does not match the source shape {obs.source_shape}")


def _positive_options(term, tol_name: str, cap_name: str) -> None:
    tol, cap = getattr(term, tol_name), getattr(term, cap_name)
    if not tol > 0 or isinstance(cap, bool) or int(cap) != cap or cap < 1:
        raise ValueError(f"{type(term).__name__} needs {tol_name} > 0 and an integer {cap_name} >= 1, "
                         f"got {tol!r}, {cap!r}")


@flax.struct.dataclass
class Eq19(_Term):
    """The paper's convolved likelihood, Aᵀ (y − A x) / (σ_n² + σ(t)²) (eq. 19)."""

    name = "eq19"

    def _terms(self, prior_score, obs, x, t, sde):
        var_t = sde.sigma(t).astype(x.dtype) ** 2
        _, AT = obs.operators()
        return AT(obs.residual(x) / (obs.noise_var + var_t)), None, 0


@flax.struct.dataclass
class Eq12(_Term):
    """Aᵀ C⁻¹ (y − A x), C = diag(σ_n²) + σ(t)² AAᵀ, by Jacobi-preconditioned CG (eq. 12).

    Attributes:
      cg_tol: relative residual tolerance of the CG solve.
      cg_maxiter: the most CG iterations.
    """

    name = "eq12"
    cg_tol: float = flax.struct.field(pytree_node=False, default=1e-5)
    cg_maxiter: int = flax.struct.field(pytree_node=False, default=50)

    def __post_init__(self):
        _positive_options(self, "cg_tol", "cg_maxiter")

    def _terms(self, prior_score, obs, x, t, sde):
        var_t = sde.sigma(t).astype(x.dtype) ** 2
        A, AT = obs.operators()
        diag = obs.noise_var + var_t

        def op(v):  # the system on the used pixels, the identity off them
            return _identity_off_valid(obs, v, obs.noise_var * v + var_t * A(AT(obs.valid * v)))

        u, _ = cg(op, obs.residual(x), x0=obs.residual(x) / diag, tol=self.cg_tol,
                  maxiter=self.cg_maxiter, M=lambda v: v / diag)
        return AT(obs.valid * u), None, 0


@flax.struct.dataclass
class Tweedie(_Term):
    """The Tweedie-moment likelihood (TMPD): calibrated at the noise of the data.

    Attributes:
      lanczos_cap: the most Lanczos steps, i.e. Jacobian-vector products of the prior
        score, per evaluation (on top of the one linearisation).
      lanczos_tol: stop earlier when the subspace solve's preconditioned residual is below
        lanczos_tol · ‖y − A m‖.
      drift_tol: also stop once a Lanczos step changes the likelihood score by at most
        drift_tol · ‖posterior score‖ (0: off), so that Jacobian products are spent only while
        they still move the sampler's drift: at large σ, where the system is worst conditioned,
        the likelihood is a small part of the drift and the solve stops after a step or two
        (docs/validation.md measures the accuracy and the products saved).
      differentiable: run every Lanczos step, without the early stop, so that `jax.grad` (reverse
        mode) can differentiate the term, e.g. with respect to the lens. The same value, at up to
        lanczos_cap Jacobian products per evaluation (about 3× the time of a default run); jvp and
        jacfwd work without it.
      covariance_gradient_sigmas: (lo, hi): where lo ≤ σ(t) ≤ hi, differentiate the Gaussian through
        its covariance C(x_t) as well as its mean (None, the default: never). It is the part that
        tells priors of different scale apart, which TMPD drops; it costs a second clipped solve (a
        Rademacher probe's, seeded by the state) and a reverse pass through two Jacobian products,
        and it needs the prior's second derivatives to be right. On the mixture benchmark it takes
        the variance ratio of `scales` at σ_n = 0.3 from 1.41 to 1.07 but breaks the strong-data
        cells (σ_n = 0.05); on the shipped learned prior it wrecks the samples (docs/validation.md).
        For research; off by default.
    """

    name = "tweedie"
    lanczos_cap: int = flax.struct.field(pytree_node=False, default=20)
    lanczos_tol: float = flax.struct.field(pytree_node=False, default=1e-4)
    drift_tol: float = flax.struct.field(pytree_node=False, default=0.05)
    differentiable: bool = flax.struct.field(pytree_node=False, default=False)
    covariance_gradient_sigmas: tuple[float, float] | None = flax.struct.field(pytree_node=False, default=None)

    def __post_init__(self):
        _positive_options(self, "lanczos_tol", "lanczos_cap")
        if isinstance(self.drift_tol, bool) or not (isinstance(self.drift_tol, (int, float)) and self.drift_tol >= 0):
            raise ValueError(f"Tweedie needs drift_tol >= 0 (0: off), got {self.drift_tol!r}")
        window = self.covariance_gradient_sigmas
        if window is not None:
            try:
                lo, hi = (float(v) for v in window)
            except (TypeError, ValueError):
                lo = hi = float("nan")
            if not 0 <= lo <= hi:
                raise ValueError(f"Tweedie needs covariance_gradient_sigmas = (lo, hi) with 0 <= lo <= hi, "
                                 f"or None (off), got {window!r}")
            object.__setattr__(self, "covariance_gradient_sigmas", (lo, hi))

    def _terms(self, prior_score, obs, x, t, sde):
        if prior_score is None:
            raise ValueError("the Tweedie likelihood needs the prior score")
        var_t, mean_and_score = _tweedie_mean(prior_score, t, sde, x.dtype)
        (m, s), lin = jax.linearize(mean_and_score, x)
        A, AT = obs.operators()

        def op(v):
            # (σ_n² I + σ² A J Aᵀ) v, and J Aᵀ v for the gain.
            jv = lin(AT(obs.valid * v))[0]
            return _identity_off_valid(obs, v, obs.noise_var * v + var_t * A(jv)), jv

        diag = obs.noise_var + var_t
        # The gradient is Jᵀ Aᵀ u with u = (σ_n² I + A C Aᵀ)⁻¹ (y − A m); for a true score J is
        # symmetric, so it equals J Aᵀ u, which the solve assembles from the J Aᵀ v it has
        # computed (no VJP). A learned C = σ² J is 4-8 % asymmetric and, at large σ, not positive
        # semi-definite. Where the Krylov space finds vᵀ A C Aᵀ v ≤ 0, the direction is dropped
        # from the gradient (the gradient of a C clipped at zero there): raising the system's
        # spectrum to σ_n² instead left J's negative part multiplied by 1/σ_n², a step stiff
        # enough at σ ≈ σ_max to throw whole chains off the data manifold.
        floor = jnp.min(obs.noise_var / diag)
        u, lik, info = clipped_lanczos_solve(op, obs.residual(m), diag, floor,
                                             tol=self.lanczos_tol, maxiter=self.lanczos_cap, has_aux=True,
                                             fixed_iterations=self.differentiable,
                                             aux_tol=self.drift_tol or None, aux_offset=s,
                                             drop_below_floor=self.covariance_gradient_sigmas is not None)
        # The linearisation's forward pass, then one Jacobian product per Lanczos step.
        evaluations = 1 + info.iterations
        if self.covariance_gradient_sigmas is None:
            return lik, s, evaluations

        def through_covariance(_):
            system = lambda v: op(v)[0]  # noqa: E731
            return self._covariance_gradient(prior_score, obs, x, t, var_t, u, system, diag, floor)

        def skipped(_):
            return jnp.zeros_like(x), jnp.int32(0)

        # t is one number per step, shared by the chains, so this stays a branch under vmap.
        lo, hi = self.covariance_gradient_sigmas
        sigma = sde.sigma(t)
        extra, n = jax.lax.cond((sigma >= lo) & (sigma <= hi), through_covariance, skipped, None)
        return lik + extra, s, evaluations + n

    def _covariance_gradient(self, prior_score, obs, x, t, var_t, u, op, diag, floor):
        """The gradient of log N(y; A m, Σ), Σ = diag(σ_n²) + A C Aᵀ, through C(x) = σ² ∂m/∂x.

        With ∂Σ = σ⁴ A ∂(∂s/∂x) Aᵀ it is ½ σ⁴ ∇ₓ[aᵀ (∂s/∂x) a − bᵀ (∂s/∂x) c]: a = Aᵀ u from the
        residual's solve u = Σ⁻¹ (y − A m) (the quadratic form), and Hutchinson's estimate of
        −½ tr(Σ⁻¹ ∂Σ) with a Rademacher probe z, b = Aᵀ Σ⁻¹ z, c = Aᵀ z (the log-determinant). The
        mean-only term misses exactly this part, which is how the data weigh priors of different
        scale (docs/validation.md, the mixture benchmark). Cost: the probe's solve, then a forward
        pass with two Jacobian products and its reverse, counted as 6 evaluations (XLA counts 6.2×
        the forward pass's flops for the shipped network).
        """
        _, AT = obs.operators()
        z = obs.valid * state_probe(x, t, obs.y.shape)
        pz, pinfo = clipped_lanczos_solve(op, z, diag, floor, tol=self.lanczos_tol, maxiter=self.lanczos_cap,
                                          fixed_iterations=self.differentiable, drop_below_floor=True)
        a, b, c = AT(obs.valid * u), AT(obs.valid * pz), AT(z)

        def bilinear(q):
            jvp = jax.vmap(lambda v: jax.jvp(lambda p: prior_score(p, t), (q,), (v,))[1])
            ja, jc = jvp(jnp.stack([a, c]))
            return jnp.vdot(a, ja) - jnp.vdot(b, jc)

        return 0.5 * var_t**2 * jax.grad(bilinear)(x), pinfo.iterations + 6


@flax.struct.dataclass
class DPS(_Term):
    """Diffusion posterior sampling: ∇_x log N(y; A m(x), diag(σ_n²)) through the Tweedie mean."""

    name = "dps"

    def _terms(self, prior_score, obs, x, t, sde):
        if prior_score is None:
            raise ValueError("the DPS likelihood needs the prior score")
        _, mean_and_score = _tweedie_mean(prior_score, t, sde, x.dtype)
        m, vjp_m, s = jax.vjp(mean_and_score, x, has_aux=True)
        _, AT = obs.operators()
        (lik,) = vjp_m(AT(obs.residual(m) / obs.noise_var))
        return lik, s, 2


Likelihood = Eq19 | Eq12 | Tweedie | DPS
LIKELIHOODS = {cls.name: cls for cls in (Eq19, Eq12, Tweedie, DPS)}


def likelihood_from_name(name: str, **options) -> Likelihood:
    """The term called `name` ('eq19', 'eq12', 'tweedie' or 'dps'), with its own options.

    Raises:
      ValueError: an unknown name, or an option the term does not have.
    """
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}; choose one of {tuple(LIKELIHOODS)}")
    cls = LIKELIHOODS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    if set(options) - known:
        raise ValueError(f"the {name} likelihood has no option(s) {sorted(set(options) - known)}; "
                         f"its options are {sorted(known) or 'none'}")
    return cls(**options)


def posterior_score(prior_score: ScoreFn, likelihood: Likelihood | None, obs: Observation | None,
                    sde: VESDE, *, counted: bool = False) -> ScoreFn:
    """score_fn(x, t) = prior score + likelihood score, for one state x [H, W, C].

    With `likelihood=None` it is the prior score itself (prior-only sampling). The
    observation's operator is built once here, not at every call. With `counted`, score_fn
    returns (score, network evaluations it took), which the solvers add up.
    """
    if likelihood is None:
        return prior_score
    obs = obs.bind()

    def score_fn(x: jax.Array, t: jax.Array):
        out = likelihood.posterior_score_and_cost(prior_score, obs, x, t, sde)
        return out if counted else out[0]

    return score_fn


def state_probe(x: jax.Array, t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """A Rademacher vector of `shape` seeded by the bits of the state x and time t.

    A likelihood term has no key of its own; seeding by the state gives each chain and each step
    its own probe, and the same one when a run is repeated. No gradient flows through the seed.
    """
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(x).astype(jnp.float32), jnp.int32)
    tbits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(jnp.asarray(t, jnp.float32)), jnp.int32)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), jnp.sum(bits)), tbits)
    return jax.random.rademacher(key, shape, x.dtype)


def _identity_off_valid(obs: Observation, v: jax.Array, w: jax.Array) -> jax.Array:
    # The system's product w on the used pixels, the identity off them (b = 0 there gives 0).
    return obs.valid * w + (1.0 - obs.valid) * v


def _tweedie_mean(prior_score, t, sde, dtype):
    var_t = sde.sigma(t).astype(dtype) ** 2

    def mean_and_score(z):
        s = prior_score(z, t)
        return z + var_t * s, s

    return var_t, mean_and_score


def convolved_likelihood_score(
    x: jax.Array,
    t: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    A: Operator,
    AT: Operator,
    sigma_n: jax.typing.ArrayLike,
    sde: VESDE,
    *,
    mask: jax.typing.ArrayLike | None = None,
) -> jax.Array:
    """Eq. 19, Aᵀ (y − A x) / (σ_n² + σ(t)²), at one state x [H, W, C]; see `Eq19`."""
    obs = observe(y, sigma_n, A=A, AT=AT, mask=mask)
    return Eq19().score(None, obs, jnp.asarray(x), jnp.asarray(t), sde)


def exact_likelihood_score(
    x: jax.Array,
    t: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    A: Operator,
    AT: Operator,
    sigma_n: jax.typing.ArrayLike,
    sde: VESDE,
    *,
    mask: jax.typing.ArrayLike | None = None,
    cg_tol: float = Eq12.cg_tol,
    cg_maxiter: int = Eq12.cg_maxiter,
) -> jax.Array:
    """Eq. 12, Aᵀ C⁻¹ (y − A x) with C = diag(σ_n²) + σ(t)² AAᵀ, at one state x [H, W, C]; see `Eq12`."""
    obs = observe(y, sigma_n, A=A, AT=AT, mask=mask)
    return Eq12(cg_tol=cg_tol, cg_maxiter=cg_maxiter).score(None, obs, jnp.asarray(x), jnp.asarray(t), sde)
