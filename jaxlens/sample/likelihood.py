"""Likelihood terms ∇_x log p_t(y | x_t) for posterior sampling with a diffused prior.

The observation is y = A x + η with η ~ N(0, diag(σ_n²)). A *likelihood term*
is a small pytree holding y, the noise and the operator, called as
``term(score_fn, x, t, sde)``: it sees the prior score, because the better
approximations of p_t(y | x_t) are built from it. Modes:

- ``'eq19'`` (the paper, Adam et al. 2022 eq. 19): the convolved likelihood
  Aᵀ (y − A x) / (σ_n² + σ(t)²). Cheap; treats AAᵀ as the identity.
- ``'eq12'`` (eq. 12): Aᵀ C⁻¹ (y − A x), C = diag(σ_n²) + σ(t)² AAᵀ, solved
  matrix-free by conjugate gradients. Exact only for a flat prior.
- ``'tweedie'`` (TMPD, Boys et al. 2023): p_t(y | x_t) ≈ N(y; A m, diag(σ_n²) + A C Aᵀ)
  with the Tweedie moments m = x + σ² s(x, t), C = σ² ∂m/∂x. Its gradient,
  (∂m/∂x)ᵀ Aᵀ (σ_n² + A C Aᵀ)⁻¹ (y − A m), is taken as the gain
  ∂m/∂x Aᵀ (σ_n² + A C Aᵀ)⁻¹ (y − A m) (equal for a true score, whose ∂m/∂x is
  symmetric): one linearisation of the prior score and a Lanczos solve
  (jaxlens.sample.krylov) that reuses its Jacobian products, with the
  directions where the learned C has negative curvature (it does, at large σ)
  dropped. Exact when the prior is Gaussian.
- ``'dps'`` (Chung et al. 2023): ∇_x log N(y; A m(x), diag(σ_n²)), one VJP
  through the prior score (no guidance-scale heuristic).

Pixels that are masked or have infinite σ_n carry no information: they are
removed from every sum and from the linear systems (which act as the identity
on them).
"""

from __future__ import annotations

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.sparse.linalg import cg

from jaxlens.sample.krylov import clipped_lanczos_solve
from jaxlens.sde import VESDE

__all__ = [
    "LIKELIHOOD_MODES",
    "LikelihoodTerm",
    "make_likelihood",
    "posterior_score",
    "convolved_likelihood_score",
    "exact_likelihood_score",
]

LIKELIHOOD_MODES = ("eq19", "eq12", "tweedie", "dps")

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
Operator = Callable[[jax.Array], jax.Array]


def _is_concrete(*xs) -> bool:
    return not any(isinstance(x, jax.core.Tracer) for x in xs)


@flax.struct.dataclass
class LikelihoodTerm:
    """∇_x log p_t(y | x_t) for one observation; build it with `make_likelihood`.

    Attributes:
      y: [h, w, C] observation, zero on pixels that carry no information.
      noise_var: [h, w, C] σ_n², one on pixels that carry no information.
      valid: [h, w, C] 1.0 on pixels that are used, 0.0 elsewhere.
      A, AT: the forward operator [H, W, C] → [h, w, C] and its adjoint.
      mode: one of LIKELIHOOD_MODES.
      cg_tol, cg_maxiter: relative tolerance and iteration cap of the matrix-free
        solves ('eq12': conjugate gradients; 'tweedie': clipped Lanczos).
    """

    y: jax.Array
    noise_var: jax.Array
    valid: jax.Array
    A: Operator = flax.struct.field(pytree_node=False)
    AT: Operator = flax.struct.field(pytree_node=False)
    mode: str = flax.struct.field(pytree_node=False, default="eq19")
    cg_tol: float = flax.struct.field(pytree_node=False, default=1e-4)
    cg_maxiter: int = flax.struct.field(pytree_node=False, default=200)

    @property
    def source_shape(self) -> tuple[int, ...]:
        return tuple(jax.eval_shape(self.AT, jax.ShapeDtypeStruct(self.y.shape, self.y.dtype)).shape)

    def __call__(self, score_fn: ScoreFn | None, x: jax.Array, t: jax.Array, sde: VESDE) -> jax.Array:
        """The likelihood score at one state x [H, W, C] and time t (scalar)."""
        self._check_state(x)
        return _MODES[self.mode](self, score_fn, x, t, sde)[0]

    def posterior_score(self, score_fn: ScoreFn, x: jax.Array, t: jax.Array, sde: VESDE) -> jax.Array:
        """Prior score plus likelihood score, evaluating the prior only once."""
        self._check_state(x)
        lik, prior = _MODES[self.mode](self, score_fn, x, t, sde)
        if prior is None:
            prior = score_fn(x, t)
        return prior + lik

    def _check_state(self, x: jax.Array) -> None:
        if tuple(x.shape) != self.source_shape:
            raise ValueError(f"state of shape {tuple(x.shape)} does not match Aᵀ(y)'s shape {self.source_shape}")

    def residual(self, x: jax.Array) -> jax.Array:
        """Masked residual valid · (y − A x), [h, w, C]."""
        return self.valid * (self.y - self.A(x))


def make_likelihood(
    mode: str,
    y: jax.typing.ArrayLike,
    A: Operator,
    AT: Operator,
    sigma_n: jax.typing.ArrayLike,
    *,
    mask: jax.typing.ArrayLike | None = None,
    cg_tol: float = 1e-4,
    cg_maxiter: int = 200,
) -> LikelihoodTerm:
    """Validates an observation and builds its likelihood term.

    Args:
      mode: 'eq19', 'eq12', 'tweedie' or 'dps' (see the module docstring).
      y: observation [h, w] or [h, w, C]; a 2-D y is given a channel axis.
      A: forward operator, source [H, W, C] → image [h, w, C].
      AT: its adjoint, [h, w, C] → [H, W, C].
      sigma_n: noise standard deviation in the units of y: a scalar or a map
        broadcastable to y. Must be > 0; +inf marks pixels without information.
      mask: optional boolean array broadcastable to y; True marks pixels to ignore
        (numpy.ma convention).
      cg_tol: relative residual tolerance of the CG solves.
      cg_maxiter: iteration cap of the CG solves.

    Returns:
      A LikelihoodTerm.

    Raises:
      ValueError: unknown mode; σ_n ≤ 0 or NaN; NaN/Inf in used pixels of y; a y
        whose shape is not A's output shape; bad CG settings.
    """
    if mode not in LIKELIHOOD_MODES:
        raise ValueError(f"unknown likelihood mode {mode!r}; choose one of {LIKELIHOOD_MODES}")
    if not (cg_tol > 0 and int(cg_maxiter) >= 1):
        raise ValueError(f"need cg_tol > 0 and cg_maxiter >= 1, got {cg_tol}, {cg_maxiter}")
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.floating):
        y = y.astype(jnp.float32)
    if y.ndim == 2:
        y = y[..., None]
    if y.ndim != 3:
        raise ValueError(f"y must be [h, w] or [h, w, C], got shape {y.shape}")
    sigma_n = jnp.asarray(sigma_n, y.dtype)
    if sigma_n.ndim == 2 and y.shape[-1] == 1 and sigma_n.shape == y.shape[:2]:
        sigma_n = sigma_n[..., None]
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.ndim == 2 and mask.shape == y.shape[:2]:
            mask = mask[..., None]
    for name, arr in (("sigma_n", sigma_n), ("mask", mask)):
        if arr is None:
            continue
        try:
            ok = jnp.broadcast_shapes(arr.shape, y.shape) == y.shape
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{name} of shape {arr.shape} does not broadcast to y's shape {y.shape}")
    sigma_n = jnp.broadcast_to(sigma_n, y.shape)
    valid = jnp.isfinite(sigma_n)
    if mask is not None:
        valid &= ~jnp.broadcast_to(mask, y.shape)
    if _is_concrete(y, sigma_n, valid):
        s, v, yy = np.asarray(sigma_n), np.asarray(valid), np.asarray(y)
        if np.any(np.isnan(s)) or np.any(s <= 0):
            raise ValueError("sigma_n must be > 0 everywhere (use +inf or the mask for unused pixels)")
        if not np.all(np.isfinite(yy[v])):
            raise ValueError("y has NaN or Inf in pixels that are not masked; mask them or set sigma_n=inf")
        if not v.any():
            raise ValueError("every pixel of y is masked or has infinite noise")
    _check_operator_shapes(y, A, AT)
    return LikelihoodTerm(
        y=jnp.where(valid, y, 0.0),
        noise_var=jnp.where(valid, sigma_n, 1.0) ** 2,
        valid=valid.astype(y.dtype),
        A=A,
        AT=AT,
        mode=mode,
        cg_tol=float(cg_tol),
        cg_maxiter=int(cg_maxiter),
    )


def _check_operator_shapes(y: jax.Array, A: Operator, AT: Operator) -> None:
    img = jax.ShapeDtypeStruct(y.shape, y.dtype)
    try:
        src = jax.eval_shape(AT, img)
        out = jax.eval_shape(A, jax.ShapeDtypeStruct(src.shape, y.dtype))
    except (ValueError, TypeError) as err:
        raise ValueError(f"the lens operator does not accept y of shape {y.shape}: {err}") from err
    if out.shape != y.shape:
        raise ValueError(f"y has shape {y.shape} but A maps sources {src.shape} to images {out.shape}")


def posterior_score(prior_score: ScoreFn, likelihood_term: LikelihoodTerm, sde: VESDE) -> ScoreFn:
    """score_fn(x, t) = prior score + likelihood score, for one state x [H, W, C]."""

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        return likelihood_term.posterior_score(prior_score, x, t, sde)

    return score_fn


def _identity_off_valid(term: LikelihoodTerm, v: jax.Array, w: jax.Array) -> jax.Array:
    # The system's product w on the used pixels, the identity off them (b = 0 there gives 0).
    return term.valid * w + (1.0 - term.valid) * v


def _cg_solve(term: LikelihoodTerm, op: Operator, b: jax.Array, diag: jax.Array) -> jax.Array:
    def precond(v):
        return v / diag

    def full_op(v):
        return _identity_off_valid(term, v, op(term.valid * v))

    u, _ = cg(full_op, b, x0=b / diag, tol=term.cg_tol, maxiter=term.cg_maxiter,
              M=precond)
    return u


def _eq19(term, score_fn, x, t, sde):
    var_t = sde.sigma(t).astype(x.dtype) ** 2
    return term.AT(term.residual(x) / (term.noise_var + var_t)), None


def _eq12(term, score_fn, x, t, sde):
    var_t = sde.sigma(t).astype(x.dtype) ** 2

    def op(v):
        return term.noise_var * v + var_t * term.A(term.AT(v))

    u = _cg_solve(term, op, term.residual(x), term.noise_var + var_t)
    return term.AT(term.valid * u), None


def _tweedie_mean(score_fn, x, t, sde):
    var_t = sde.sigma(t).astype(x.dtype) ** 2

    def mean_and_score(z):
        s = score_fn(z, t)
        return z + var_t * s, s

    return var_t, mean_and_score


def _tweedie(term, score_fn, x, t, sde):
    if score_fn is None:
        raise ValueError("the 'tweedie' likelihood needs the prior score_fn")
    var_t, mean_and_score = _tweedie_mean(score_fn, x, t, sde)
    (m, s), lin = jax.linearize(mean_and_score, x)

    def op(v):
        # (σ_n² I + σ² A J Aᵀ) v, and J Aᵀ v for the gain.
        jv = lin(term.AT(term.valid * v))[0]
        return _identity_off_valid(term, v, term.noise_var * v + var_t * term.A(jv)), jv

    diag = term.noise_var + var_t
    # The gradient is Jᵀ Aᵀ u with u = (σ_n² I + A C Aᵀ)⁻¹ (y − A m); for a true score J is
    # symmetric, so it equals J Aᵀ u, which the solve assembles from the J Aᵀ v it has computed
    # (no VJP). A learned C = σ² J is 4-8 % asymmetric and, at large σ, not positive semi-definite
    # (benchmarks/jacobian_spectrum.py). Where the Krylov space finds vᵀ A C Aᵀ v ≤ 0, the
    # direction is dropped from the gradient (the gradient of a C clipped at zero there): raising
    # the system's spectrum to σ_n² instead left J's negative part multiplied by 1/σ_n², a step
    # stiff enough at σ ≈ σ_max to throw whole chains off the data manifold.
    _, lik, _ = clipped_lanczos_solve(op, term.residual(m), diag, jnp.min(term.noise_var / diag), tol=term.cg_tol,
                                      maxiter=term.cg_maxiter, has_aux=True)
    return lik, s


def _dps(term, score_fn, x, t, sde):
    if score_fn is None:
        raise ValueError("the 'dps' likelihood needs the prior score_fn")
    _, mean_and_score = _tweedie_mean(score_fn, x, t, sde)
    m, vjp_m, s = jax.vjp(mean_and_score, x, has_aux=True)
    (lik,) = vjp_m(term.AT(term.residual(m) / term.noise_var))
    return lik, s


_MODES = {"eq19": _eq19, "eq12": _eq12, "tweedie": _tweedie, "dps": _dps}


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
    cg_tol: float = 1e-4,
    cg_maxiter: int = 200,
) -> jax.Array:
    """Eq. 19: Aᵀ (y − A x) / (σ_n² + σ(t)²) at one state x [H, W, C].

    The CG options are accepted (and ignored) so that this and
    `exact_likelihood_score` are interchangeable.
    """
    term = make_likelihood("eq19", y, A, AT, sigma_n, mask=mask, cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    return term(None, jnp.asarray(x), jnp.asarray(t), sde)


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
    cg_tol: float = 1e-4,
    cg_maxiter: int = 200,
) -> jax.Array:
    """Eq. 12: Aᵀ C⁻¹ (y − A x), C = diag(σ_n²) + σ(t)² AAᵀ, by CG, at one state x [H, W, C]."""
    term = make_likelihood("eq12", y, A, AT, sigma_n, mask=mask, cg_tol=cg_tol, cg_maxiter=cg_maxiter)
    return term(None, jnp.asarray(x), jnp.asarray(t), sde)
