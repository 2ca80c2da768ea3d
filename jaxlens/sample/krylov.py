"""A matrix-free solve that stays bounded when the operator is not positive definite.

The `tweedie` likelihood solves (σ_n² I + A C Aᵀ) u = r with C = σ² ∂m/∂x built from the
learned score's Jacobian. A learned Jacobian is neither exactly symmetric nor, at large σ,
positive semi-definite (C = σ² I + σ⁴ ∂s/∂x is a difference of two large terms), so the system
can have negative eigenvalues, where conjugate gradients diverges or depends on rounding
(experiments/jacobian_spectrum.py measures it on the shipped prior).

`clipped_lanczos_solve` runs Lanczos on the Jacobi-preconditioned operator, then solves in the
Krylov subspace with the Ritz values raised to a floor that the exact operator is known to
respect (σ_n² I + A C Aᵀ ⪰ σ_n² I for any covariance C). For a symmetric operator above the
floor this is conjugate gradients' iterate, computed another way; otherwise it is the solve
with the operator's spectrum projected onto [floor, ∞) within the subspace, and
‖u‖ ≤ ‖r‖ / (floor · min diag) holds whatever the operator does. A non-symmetric operator is
replaced by the symmetric part of its whole projection Vᵀ op V (a Galerkin solve of (op + opᵀ)/2
in the subspace), not by the tridiagonal part that Lanczos' recurrence assumes.

With `has_aux` it also returns the gain G op⁻¹ b for op = σ_n² I + A G, built from the G v of
each Lanczos vector, with the Ritz pairs below the floor dropped instead of raised. That is what
`tweedie` uses (G = ∂m/∂x Aᵀ): raising leaves the negative part of a learned ∂m/∂x multiplied by
1/σ_n², an Euler–Maruyama step stiff enough at σ_max to throw chains off the data manifold;
dropping treats those directions as if C were zero there, and bounds the step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["KrylovInfo", "clipped_lanczos_solve", "jacobi_eigh"]


class KrylovInfo(NamedTuple):
    """iterations: Lanczos steps taken; clipped: how many Ritz values were raised to the floor."""

    iterations: jax.Array
    clipped: jax.Array


def _round_robin(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairings (p < q) of 0..m-1 (m even) in m - 1 rounds, each index once per round (circle method)."""
    ring = list(range(1, m))
    ps, qs = [], []
    for _ in range(m - 1):
        order = [0] + ring
        pairs = [sorted((order[i], order[m - 1 - i])) for i in range(m // 2)]
        ps.append([a for a, _ in pairs])
        qs.append([b for _, b in pairs])
        ring = ring[-1:] + ring[:-1]
    return np.asarray(ps), np.asarray(qs)


def jacobi_eigh(a: jax.Array, *, max_sweeps: int = 10, fixed_iterations: bool = False) -> tuple[jax.Array, jax.Array]:
    """(eigenvalues, eigenvectors as columns) of a small symmetric matrix by parallel Jacobi rotations.

    Pure jnp: `jnp.linalg.eigh` is a LAPACK call on the CPU, and such calls inside the sampler's
    loops deadlock XLA:CPU when several host devices share the cores. Each round applies m/2
    disjoint rotations at once; sweeps repeat until the off-diagonal part is at rounding level.
    Eigenvalues are not sorted. `fixed_iterations` runs all `max_sweeps` (skipping those after
    convergence), which reverse-mode differentiation needs.
    """
    k = a.shape[0]
    m = k + k % 2
    if m != k:  # an even size for the round robin; the extra index is decoupled
        a = jnp.pad(a, ((0, 1), (0, 1))).at[k, k].set(1.0)
    ps, qs = (jnp.asarray(x) for x in _round_robin(m))
    eps = jnp.finfo(a.dtype).eps

    def rotate(r, state):
        a, v = state
        p, q = ps[r], qs[r]
        app, aqq, apq = a[p, p], a[q, q], a[p, q]
        tau = (aqq - app) / (2.0 * jnp.where(apq == 0, 1.0, apq))
        t = jnp.where(tau >= 0, 1.0, -1.0) / (jnp.abs(tau) + jnp.sqrt(1.0 + tau * tau))
        t = jnp.where(apq == 0, 0.0, t)
        c = jax.lax.rsqrt(1.0 + t * t)
        s = t * c
        c, s = c[:, None], s[:, None]
        # A ← Rᵀ A R and V ← V R for the m/2 disjoint plane rotations R, as row and column updates.
        ap, aq = a[p], a[q]
        a = a.at[p].set(c * ap - s * aq).at[q].set(s * ap + c * aq)
        ap, aq = a[:, p].T, a[:, q].T
        a = a.at[:, p].set((c * ap - s * aq).T).at[:, q].set((s * ap + c * aq).T)
        vp, vq = v[:, p].T, v[:, q].T
        return a, v.at[:, p].set((c * vp - s * vq).T).at[:, q].set((s * vp + c * vq).T)

    def off(a):
        return jnp.linalg.norm(a - jnp.diag(jnp.diag(a)))

    def sweep(state):
        a, v, n = state
        a, v = jax.lax.fori_loop(0, m - 1, rotate, (a, v))
        return a, v, n + 1

    def unfinished(state):
        a, _, n = state
        return (n < max_sweeps) & (off(a) > 4 * eps * jnp.linalg.norm(a))

    loop = (lambda c, b, s: _bounded_while(c, b, s, max_sweeps)) if fixed_iterations else jax.lax.while_loop
    a, v, _ = loop(unfinished, sweep, (a, jnp.eye(m, dtype=a.dtype), jnp.int32(0)))
    return jnp.diag(a)[:k], v[:k, :k]


def _bounded_while(cond, body, state, max_iter: int):
    """`lax.while_loop(cond, body, state)` for loops known to stop within `max_iter` passes.

    A scan of `max_iter` passes that skips `body` once `cond` is false: the same result, and,
    unlike a while loop, differentiable in reverse mode. It never stops early: under vmap the skip
    becomes a select, so every pass costs a full `body`. Both loops of the solve (Lanczos and the
    eigen-solve's sweeps) use it only when asked (`fixed_iterations`): the Lanczos body is a
    Jacobian product of the network, and a while loop stops as soon as every chain has converged.
    """

    def step(s, _):
        return jax.lax.cond(cond(s), body, lambda z: z, s), None

    return jax.lax.scan(step, state, None, length=max_iter)[0]


def _subspace_solve(projected, k, norm_b, floor, fixed_iterations=False):
    """Coefficients in the first k Lanczos vectors of ‖b‖ T⁺⁻¹ e₁ and of ‖b‖ T₊⁻¹ e₁.

    T is the symmetric part of the projected operator Vᵀ op V. T⁺ has its eigenvalues below
    `floor` raised to it; T₊ has those eigenpairs removed (their inverse taken as zero). T is kept
    at its full [maxiter, maxiter] size so that the shape is static.
    """
    n = projected.shape[0]
    used = jnp.arange(n) < k
    block = used[:, None] & used[None, :]
    # The unused block is a multiple of the identity above the floor: its Ritz values are never
    # clipped and carry no weight, since e₁ has no component there.
    t = jnp.where(block, 0.5 * (projected + projected.T), jnp.diag(jnp.where(used, 0.0, jnp.maximum(floor, 1.0))))
    lam, Q = jacobi_eigh(t, fixed_iterations=fixed_iterations)
    weight = Q[0] * norm_b
    raised = Q @ (weight / jnp.maximum(lam, floor))
    kept = lam >= floor
    removed = Q @ jnp.where(kept, weight / jnp.where(kept, lam, 1.0), 0.0)
    return jnp.where(used, raised, 0.0), jnp.where(used, removed, 0.0), jnp.sum(~kept)


def clipped_lanczos_solve(
    op: Callable[[jax.Array], jax.Array],
    b: jax.Array,
    diag: jax.Array,
    floor: jax.Array | float,
    *,
    tol: float = 1e-5,
    maxiter: int = 20,
    has_aux: bool = False,
    fixed_iterations: bool = False,
    aux_tol: jax.Array | float | None = None,
    aux_offset: jax.Array | None = None,
    drop_below_floor: bool = False,
):
    """Approximately solves op(u) = b for a symmetric `op` with spectrum meant to be ≥ floor · diag.

    Args:
      op: the linear operator, acting on arrays shaped like b; should be symmetric. With
        `has_aux`, op(v) returns (op(v), G v) for a linear map G whose output has a fixed shape.
      b: right-hand side, any shape.
      diag: positive Jacobi preconditioner, broadcastable to b (op ≈ diag · I).
      floor: lower bound on the eigenvalues of diag^-½ op diag^-½ that the exact operator
        satisfies; Ritz values below it are raised to it.
      tol: stop when the preconditioned residual of the subspace solve is below tol · ‖b‖.
      maxiter: the most Lanczos steps (operator applications).
      has_aux: also return G op⁻¹ b with the Ritz pairs below the floor dropped rather than
        raised, from the G v already computed (no further calls of op). For op = σ_n² I + A G
        with G = C Aᵀ, it is the gain C Aᵀ op⁻¹ b with C projected onto the directions where the
        operator says it is positive: where C has negative curvature the gain is zero, as it
        would be for C = 0, rather than the 1/floor amplification that raising gives.
      fixed_iterations: run the loop as a fixed-length scan (the same result, no early exit), which
        `jax.grad` can differentiate; a while loop (the default) stops as soon as it converges.
      aux_tol: with `has_aux`, also stop once a step changes G u₊ by at most aux_tol ·
        ‖aux_offset + G u₊‖: for a caller that needs G u₊ only to a relative accuracy of the sum
        it adds it to. It costs a small subspace solve per step.
      aux_offset: that sum's other term, shaped like G u₊ (default zero).
      drop_below_floor: return u₊, with the Ritz pairs below the floor dropped, instead of u with
        them raised to it.

    Returns:
      (u, KrylovInfo), or (u, G u₊, KrylovInfo) with `has_aux`.
    """
    if maxiter < 1 or not tol > 0:
        raise ValueError(f"need maxiter >= 1 and tol > 0, got {maxiter}, {tol}")
    if aux_tol is not None and not has_aux:
        raise ValueError("aux_tol needs has_aux=True")
    dtype = b.dtype
    scale = jax.lax.rsqrt(jnp.broadcast_to(jnp.asarray(diag, dtype), b.shape)).ravel()
    full_op = op if has_aux else (lambda v: (op(v), jnp.zeros((0,), dtype)))
    aux_shape = jax.eval_shape(lambda v: full_op(v)[1], b)

    def apply(v):
        w, g = full_op((scale * v).reshape(b.shape))
        return scale * w.ravel(), g.ravel()

    rhs = scale * b.ravel()
    norm_b = jnp.linalg.norm(rhs)
    tiny = jnp.finfo(dtype).tiny
    n = rhs.shape[0]
    floor = jnp.asarray(floor, dtype)

    def body(state):
        k, V, G, P, beta, pivot, last, indefinite, _, aux, change = state
        v = V[k]
        w, g = apply(v)
        G = G.at[k].set(g)
        # Full re-orthogonalisation, twice: k ≤ maxiter vectors, cheap next to `op`, and it keeps
        # the Ritz values honest in float32. Its coefficients are column k of Vᵀ op V, kept whole:
        # for a non-symmetric op (a learned Jacobian) that matrix is Hessenberg, not the
        # tridiagonal (α, β) that Lanczos assumes, and reading it as tridiagonal can put a spurious
        # Ritz value just above the floor, a gain ~1/floor times too large in one step.
        h = V @ w
        w = w - V.T @ h
        h2 = V @ w
        w = w - V.T @ h2
        bk = jnp.linalg.norm(w)
        a = h[k] + h2[k]
        P = P.at[:, k].set((h + h2)[:maxiter].at[k + 1].set(bk, mode="drop"))
        beta = beta.at[k + 1].set(bk)
        V = V.at[k + 1].set(jnp.where(bk > tiny, w / jnp.maximum(bk, tiny), 0.0))
        # LDLᵀ of T without pivoting: while every pivot is positive T is positive definite and
        # `last` = (T⁻¹)ₖ₁ gives CG's residual β_{k+1} |(T⁻¹)ₖ₁| ‖b‖, a valid stopping test; a
        # non-positive pivot means negative curvature, and the solve runs to the cap. Ritz values
        # below the floor are clipped after the loop either way.
        d = a - beta[k] ** 2 / pivot
        indefinite = indefinite | (d <= 0)
        d = jnp.where(jnp.abs(d) > tiny, d, tiny)
        last = jnp.where(k == 0, 1.0 / d, -last * beta[k] / d)
        if aux_tol is not None:
            _, removed, _ = _subspace_solve(P, k + 1, norm_b, floor, fixed_iterations)
            new = G.T @ removed.astype(G.dtype)
            change = jnp.linalg.norm(new - aux) / jnp.maximum(jnp.linalg.norm(offset + new), tiny)
            aux = new
        return k + 1, V, G, P, beta, d, last, indefinite, bk * jnp.abs(last) * norm_b, aux, change

    def cond(state):
        k, _, _, _, beta, _, _, indefinite, residual, _, change = state
        converged = ~indefinite & (residual <= tol * norm_b)
        if aux_tol is not None:
            converged = converged | (change <= aux_tol)
        return (k < maxiter) & ~converged & ((k == 0) | (beta[k] > tiny))

    V0 = jnp.zeros((maxiter + 1, n), dtype).at[0].set(rhs / jnp.maximum(norm_b, tiny))
    G0 = jnp.zeros((maxiter, int(np.prod(aux_shape.shape))), aux_shape.dtype)
    zero = jnp.zeros((), dtype)
    aux0 = jnp.zeros(G0.shape[1:] if aux_tol is not None else (0,), G0.dtype)
    offset = 0.0 if aux_offset is None else jnp.ravel(aux_offset).astype(G0.dtype)
    init = (jnp.int32(0), V0, G0, jnp.zeros((maxiter, maxiter), dtype), jnp.zeros(maxiter + 1, dtype), zero + 1,
            zero, jnp.asarray(False), jnp.asarray(jnp.inf, dtype), aux0, jnp.asarray(jnp.inf, G0.dtype))
    if fixed_iterations:
        k, V, G, P, *_ = _bounded_while(cond, body, init, maxiter)
    else:
        k, V, G, P, *_ = jax.lax.while_loop(cond, body, init)
    raised, removed, clipped = _subspace_solve(P, k, norm_b, floor, fixed_iterations)
    u = (scale * (V[:maxiter].T @ (removed if drop_below_floor else raised))).reshape(b.shape)
    info = KrylovInfo(k, clipped)
    if not has_aux:
        return u, info
    return u, (G.T @ removed.astype(G.dtype)).reshape(aux_shape.shape), info
