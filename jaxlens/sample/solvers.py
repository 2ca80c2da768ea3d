"""Reverse-time integrators for the VE SDE, as small frozen solver objects and one scan.

The reverse SDE is dx = −g(t)² ∇ log p_t(x) dt + g(t) dw̄, integrated from t = 1
to t = 0 on the uniform grid t_i = 1 − i/N, Δt = −1/N (Adam et al. 2022 eq. 20).
A solver is a frozen pytree with ``step(score_fn, sde, x, t, dt, key) -> (x, evaluations)``;
`integrate` runs any solver over a range of step indices in one `lax.scan`
whose carry is the state and its running count of network evaluations only, so
memory does not grow with the step count.

A score function returns the score, or (score, evaluations) when its cost varies
from state to state (`posterior_score(..., counted=True)`: the Tweedie likelihood's
Lanczos solve stops when it converges); a plain one counts as one evaluation.

Every function here works on ONE state x [H, W, C] with one key; vmap over
chains. The key of step i is ``fold_in(key, i)``, so a run split into segments
(for progress bars or restarts) draws exactly the same noise as one scan.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp

from jaxlens.sde import VESDE

__all__ = [
    "evaluate",
    "EulerMaruyama",
    "PredictorCorrector",
    "ProbabilityFlow",
    "SolverState",
    "Solver",
    "integrate",
    "solve",
    "tweedie_denoise",
    "euler_maruyama",
    "predictor_corrector",
    "probability_flow",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class SolverState(NamedTuple):
    """The scan carry: the current state of one chain, [H, W, C], and the network evaluations so far."""

    x: jax.Array
    evaluations: jax.Array


def evaluate(score_fn: ScoreFn, x: jax.Array, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(score, network evaluations it took) of a plain score function (one) or a counted one."""
    out = score_fn(x, t)
    if isinstance(out, tuple):
        s, n = out
        return s, jnp.asarray(n, jnp.int32)
    return out, jnp.int32(1)


@flax.struct.dataclass
class EulerMaruyama:
    """Euler–Maruyama on the reverse SDE (eq. 20): x ← x + g² s |Δt| + g √|Δt| z."""

    def step(self, score_fn: ScoreFn, sde: VESDE, x, t, dt, key):
        g2 = sde.g2(t).astype(x.dtype)
        z = jax.random.normal(key, x.shape, x.dtype)
        s, n = evaluate(score_fn, x, t)
        return x - g2 * s * dt + jnp.sqrt(-g2 * dt) * z, n


@flax.struct.dataclass
class PredictorCorrector:
    """Langevin corrector steps at t, then an Euler–Maruyama predictor (Song et al. 2021).

    The Langevin step size is 2 (snr ‖z‖ / ‖s‖)², as in score_sde's VE corrector,
    with the norms taken over the whole state of one chain.

    Attributes:
      snr: signal-to-noise ratio of the corrector.
      n_corrector: Langevin steps per time step.
    """

    snr: float = flax.struct.field(pytree_node=False, default=0.16)
    n_corrector: int = flax.struct.field(pytree_node=False, default=1)

    def step(self, score_fn: ScoreFn, sde: VESDE, x, t, dt, key):
        keys = jax.random.split(key, self.n_corrector + 1)
        total = jnp.int32(0)
        for k in keys[:-1]:
            s, n = evaluate(score_fn, x, t)
            z = jax.random.normal(k, x.shape, x.dtype)
            ratio = self.snr * jnp.linalg.norm(z) / jnp.maximum(jnp.linalg.norm(s), 1e-30)
            eps = 2.0 * ratio**2
            x = x + eps * s + jnp.sqrt(2.0 * eps) * z
            total = total + n
        x, n = EulerMaruyama().step(score_fn, sde, x, t, dt, keys[-1])
        return x, total + n


@flax.struct.dataclass
class ProbabilityFlow:
    """The probability-flow ODE dx/dt = −½ g² s(x, t), deterministic given x(1).

    Attributes:
      method: 'euler' (one score call per step) or 'heun' (two, second order).
    """

    method: str = flax.struct.field(pytree_node=False, default="euler")

    def __post_init__(self):
        if self.method not in ("euler", "heun"):
            raise ValueError(f"ProbabilityFlow.method must be 'euler' or 'heun', got {self.method!r}")

    def step(self, score_fn: ScoreFn, sde: VESDE, x, t, dt, key):
        del key

        def drift(z, tt):
            s, n = evaluate(score_fn, z, tt)
            return -0.5 * sde.g2(tt).astype(z.dtype) * s, n

        d1, n1 = drift(x, t)
        if self.method == "euler":
            return x + d1 * dt, n1
        x1 = x + d1 * dt
        d2, n2 = drift(x1, t + dt)
        return x + 0.5 * (d1 + d2) * dt, n1 + n2


Solver = EulerMaruyama | PredictorCorrector | ProbabilityFlow


def _check(x: jax.Array, n_steps: int) -> None:
    if int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"the state must be floating point, got {x.dtype}")


def integrate(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    x: jax.Array,
    step_indices: jax.Array,
    n_steps: int,
    *,
    solver: Solver = EulerMaruyama(),
    with_cost: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Runs the given steps of an n_steps grid from state x, in one `lax.scan`.

    Step i goes from t_i = 1 − i/N to t_i − 1/N with key fold_in(key, i).
    Indices ≥ n_steps are no-ops, so a last, shorter segment can be padded to
    the length of the others and reuse their compiled scan.

    Args:
      key: typed PRNG key of this chain.
      score_fn: score of p_t at one state, score_fn(x [H, W, C], t) → [H, W, C].
      sde: the VE SDE.
      x: [H, W, C] state at t = 1 − step_indices[0]/N.
      step_indices: [K] int32 consecutive step numbers.
      n_steps: N, the number of steps from t = 1 to t = 0.
      solver: EulerMaruyama(), PredictorCorrector(...) or ProbabilityFlow(...).
      with_cost: also return the network evaluations these steps took (int32 scalar).

    Returns:
      The state after the last given step, [H, W, C], or (state, evaluations) with `with_cost`.
    """
    x = jnp.asarray(x)
    _check(x, n_steps)
    dt = jnp.asarray(-1.0 / n_steps, x.dtype)

    def body(state: SolverState, i):
        t = 1.0 - i.astype(x.dtype) / n_steps

        # Rematerialised under reverse-mode differentiation: a gradient through a whole run then keeps
        # one state per step, not every network activation of every step (no effect without grad).
        @jax.checkpoint
        def advance(z):
            return solver.step(score_fn, sde, z, t, dt, jax.random.fold_in(key, i))

        # The step index is never batched over chains, so this stays a real branch.
        x_new, n = jax.lax.cond(i < n_steps, advance, lambda z: (z, jnp.int32(0)), state.x)
        return SolverState(x_new, state.evaluations + n), None

    state, _ = jax.lax.scan(body, SolverState(x, jnp.int32(0)), jnp.asarray(step_indices, jnp.int32))
    return (state.x, state.evaluations) if with_cost else state.x


def tweedie_denoise(score_fn: ScoreFn, sde: VESDE, x: jax.Array) -> jax.Array:
    """E[x_0 | x] at t = 0 by Tweedie's formula: x + σ_min² s(x, 0)."""
    t0 = jnp.zeros((), x.dtype)
    return x + sde.sigma(t0).astype(x.dtype) ** 2 * evaluate(score_fn, x, t0)[0]


def solve(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    x_init: jax.Array,
    n_steps: int,
    *,
    solver: Solver = EulerMaruyama(),
    keep_every: int | None = None,
    denoise: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Integrates one chain from t = 1 to t = 0 in n_steps.

    Args:
      key: typed PRNG key of this chain.
      score_fn: score_fn(x [H, W, C], t) → [H, W, C].
      sde: the VE SDE.
      x_init: [H, W, C] state at t = 1, e.g. σ_max · N(0, I).
      n_steps: N.
      solver: the integrator (Euler–Maruyama by default, the paper's choice).
      keep_every: if set, also return the state after every keep_every steps;
        it must divide n_steps. Memory is then n_steps/keep_every states.
      denoise: apply a final Tweedie step at t = 0 (off in the paper).

    Returns:
      x_final [H, W, C], or (x_final, trajectory [n_steps/keep_every, H, W, C])
      when keep_every is set (the trajectory is not denoised; its last entry is
      the state at t = 0).
    """
    x = jnp.asarray(x_init)
    _check(x, n_steps)
    idx = jnp.arange(n_steps, dtype=jnp.int32)
    if keep_every is None:
        x = integrate(key, score_fn, sde, x, idx, n_steps, solver=solver)
        traj = None
    else:
        if int(keep_every) != keep_every or keep_every < 1 or n_steps % keep_every:
            raise ValueError(f"keep_every={keep_every} must be a positive divisor of n_steps={n_steps}")

        def segment(z, seg_idx):
            z = integrate(key, score_fn, sde, z, seg_idx, n_steps, solver=solver)
            return z, z

        x, traj = jax.lax.scan(segment, x, idx.reshape(-1, keep_every))
    if denoise:
        x = tweedie_denoise(score_fn, sde, x)
    return x if traj is None else (x, traj)


def euler_maruyama(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    x_init: jax.Array,
    n_steps: int,
    *,
    keep_every: int | None = None,
    denoise: bool = False,
):
    """Eq. 20 of Adam et al. 2022 for one chain; see `solve` for arguments and returns."""
    return solve(key, score_fn, sde, x_init, n_steps, solver=EulerMaruyama(),
                 keep_every=keep_every, denoise=denoise)


def predictor_corrector(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    x_init: jax.Array,
    n_steps: int,
    *,
    snr: float = 0.16,
    n_corrector: int = 1,
    keep_every: int | None = None,
    denoise: bool = False,
):
    """Langevin-corrected Euler–Maruyama for one chain; see `solve`."""
    return solve(key, score_fn, sde, x_init, n_steps,
                 solver=PredictorCorrector(snr=snr, n_corrector=n_corrector),
                 keep_every=keep_every, denoise=denoise)


def probability_flow(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: VESDE,
    x_init: jax.Array,
    n_steps: int,
    *,
    method: str = "euler",
    keep_every: int | None = None,
    denoise: bool = False,
):
    """The probability-flow ODE for one chain (key unused, kept for a uniform signature)."""
    return solve(key, score_fn, sde, x_init, n_steps, solver=ProbabilityFlow(method=method),
                 keep_every=keep_every, denoise=denoise)
