"""The clipped Lanczos solve against dense linear algebra and against conjugate gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.sparse.linalg import cg

from jaxlens.sample.krylov import clipped_lanczos_solve, jacobi_eigh

N = 48


def _problem(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(N, N)))
    d = rng.uniform(0.5, 2.0, N)
    # M = D½ Q Λ Qᵀ D½, so the Jacobi-preconditioned operator D^-½ M D^-½ has spectrum Λ exactly.
    sq = np.sqrt(d)[:, None]
    m = sq * ((q * eigenvalues) @ q.T) * sq.T
    return m.astype(np.float32), rng.normal(size=N).astype(np.float32), d.astype(np.float32), q


def _solve(m, b, d, floor, **kw):
    return clipped_lanczos_solve(lambda v: jnp.asarray(m) @ v, jnp.asarray(b), jnp.asarray(d), floor, **kw)


def test_positive_definite_gives_the_exact_solve():
    m, b, d, _ = _problem(np.geomspace(0.3, 3.0, N))
    u, info = _solve(m, b, d, 0.1, tol=1e-7, maxiter=N)
    np.testing.assert_allclose(u, np.linalg.solve(m.astype(np.float64), b), rtol=2e-4, atol=2e-4)
    assert int(info.clipped) == 0 and int(info.iterations) < N


@pytest.mark.parametrize("k", [1, 3, 6])
def test_positive_definite_matches_preconditioned_cg_iterate(k):
    # Lanczos and CG build the same Galerkin iterate in the same Krylov space (from x0 = 0).
    m, b, d, _ = _problem(np.geomspace(0.3, 3.0, N), seed=1)
    u, info = _solve(m, b, d, 0.1, tol=1e-12, maxiter=k)
    ref, _ = cg(lambda v: jnp.asarray(m) @ v, jnp.asarray(b), tol=1e-12, maxiter=k, M=lambda v: v / d)
    assert int(info.iterations) == k
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))


def test_indefinite_full_space_is_the_spectrally_clipped_solve():
    lam = np.linspace(-1.0, 4.0, N)
    m, b, d, q = _problem(lam, seed=2)
    floor = 0.25
    u, info = _solve(m, b, d, floor, tol=1e-12, maxiter=N)
    s = 1 / np.sqrt(d.astype(np.float64))
    ref = s * (q @ ((q.T @ (s * b)) / np.maximum(lam, floor)))
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    assert int(info.clipped) == int((lam < floor).sum())


@pytest.mark.parametrize("k", [2, 5, 12])
def test_bounded_on_an_indefinite_operator(k):
    # Eigenvalues straddling zero: the clipped solve obeys its norm bound at every cap.
    m, b, d, _ = _problem(np.linspace(-2.0, 2.0, N) + 1e-4, seed=3)
    floor = 0.05
    u, _ = _solve(m, b, d, floor, maxiter=k)
    bound = np.linalg.norm(b) / (floor * d.min())
    assert np.all(np.isfinite(u)) and np.linalg.norm(u) <= bound * (1 + 1e-5)


def test_zero_rhs_batched_and_bad_settings():
    m, b, d, _ = _problem(np.geomspace(0.3, 3.0, N))
    solve = jax.jit(jax.vmap(lambda r: _solve(m, r, d, 0.1, maxiter=6)[0]))
    out = solve(jnp.stack([jnp.asarray(b), jnp.zeros(N)]))
    assert np.all(out[1] == 0) and np.allclose(out[0], _solve(m, b, d, 0.1, maxiter=6)[0], atol=1e-5)
    with pytest.raises(ValueError, match="maxiter"):
        _solve(m, b, d, 0.1, maxiter=0)


@pytest.mark.parametrize("k", [1, 2, 7, 40])
def test_jacobi_eigh_matches_lapack(k):
    rng = np.random.default_rng(k)
    a = rng.normal(size=(k, k))
    a = (a + a.T).astype(np.float32)
    lam, v = jax.jit(jacobi_eigh)(jnp.asarray(a))
    np.testing.assert_allclose(np.sort(lam), np.linalg.eigvalsh(a.astype(np.float64)), atol=2e-5 * k)
    np.testing.assert_allclose(v @ np.diag(lam) @ v.T, a, atol=2e-5 * k)
    np.testing.assert_allclose(v.T @ v, np.eye(k), atol=1e-5)


def _solve_aux(m, b, d, floor, g, **kw):
    m, g = jnp.asarray(m), jnp.asarray(g)
    return clipped_lanczos_solve(lambda v: (m @ v, g @ v), jnp.asarray(b), jnp.asarray(d), floor, has_aux=True, **kw)


def test_aux_gain_on_a_positive_definite_system_is_g_times_the_solve():
    # K = σ_n² I + A C Aᵀ with C ⪰ 0 and aux G = C Aᵀ: the gain is C Aᵀ K⁻¹ b.
    rng = np.random.default_rng(4)
    a = rng.normal(size=(N, 30)) / np.sqrt(30)
    c = rng.normal(size=(30, 30))
    c = c @ c.T / 30
    k_mat = (0.1 * np.eye(N) + a @ c @ a.T).astype(np.float32)
    g = (c @ a.T).astype(np.float32)
    b = rng.normal(size=N).astype(np.float32)
    u, gain, info = _solve_aux(k_mat, b, np.diag(k_mat), 1e-3, g, tol=1e-7, maxiter=N)
    exact = np.linalg.solve(k_mat.astype(np.float64), b)
    np.testing.assert_allclose(u, exact, rtol=1e-3, atol=1e-4 * np.abs(exact).max())
    np.testing.assert_allclose(gain, g @ exact, rtol=1e-3, atol=1e-3 * np.abs(g @ exact).max())
    assert int(info.clipped) == 0


def test_aux_gain_drops_the_eigenpairs_below_the_floor():
    # Full Krylov space on an indefinite operator: u raises the low Ritz values to the floor,
    # the gain removes them, so it is G D^-½ Σ_{λ > floor} q qᵀ D^-½ b / λ.
    lam = np.linspace(-1.0, 4.0, N)
    m, b, d, q = _problem(lam, seed=5)
    g = np.random.default_rng(5).normal(size=(7, N)).astype(np.float32)
    floor = 0.25
    u, gain, info = _solve_aux(m, b, d, floor, g, tol=1e-12, maxiter=N)
    s = 1 / np.sqrt(d.astype(np.float64))
    coef = q.T @ (s * b)
    keep = lam > floor
    np.testing.assert_allclose(u, s * (q @ (coef / np.maximum(lam, floor))), rtol=1e-3, atol=1e-3 * np.abs(u).max())
    ref = g @ (s * (q[:, keep] @ (coef[keep] / lam[keep])))
    np.testing.assert_allclose(gain, ref, rtol=1e-3, atol=2e-3 * np.abs(ref).max())
    assert int(info.clipped) == int((~keep).sum())


def _dense_galerkin_of_symmetric_part(m, b, d, k):
    """S V (Vᵀ ½(M̃ + M̃ᵀ) V)⁻¹ Vᵀ b̃ for M̃ = S M S, b̃ = S b, S = D^-½, V an orthonormal basis of K_k(M̃, b̃)."""
    s = 1 / np.sqrt(d.astype(np.float64))
    mt = s[:, None] * m.astype(np.float64) * s[None, :]
    bt = s * b
    v = [bt / np.linalg.norm(bt)]
    for _ in range(k - 1):
        w = mt @ v[-1]
        for _ in range(2):
            w = w - np.stack(v).T @ (np.stack(v) @ w)
        v.append(w / np.linalg.norm(w))
    v = np.stack(v).T
    t = v.T @ (0.5 * (mt + mt.T)) @ v
    return s * (v @ np.linalg.solve(t, v.T @ bt)), np.linalg.eigvalsh(t)


@pytest.mark.parametrize("k", [3, 6, 12])
def test_non_symmetric_operator_is_solved_by_the_symmetric_part_of_its_projection(k):
    # A learned Jacobian is not symmetric. M̃ = Q Λ Qᵀ + a skew part: its symmetric part has spectrum Λ ⊂ [0.5, 2],
    # so nothing should be clipped and the solve is the Galerkin one of that symmetric part. Reading the Hessenberg
    # projection as tridiagonal (Lanczos' assumption) makes T indefinite here.
    rng = np.random.default_rng(6)
    lam = np.geomspace(0.5, 2.0, N)
    m, b, d, _ = _problem(lam, seed=6)
    skew = rng.normal(size=(N, N))
    skew = 0.4 * (skew - skew.T) / np.sqrt(N)
    sq = np.sqrt(d)[:, None]
    m = (m + sq * skew * sq.T).astype(np.float32)
    g = rng.normal(size=(5, N)).astype(np.float32)
    u, gain, info = _solve_aux(m, b, d, 0.1, g, tol=1e-12, maxiter=k)
    ref, ritz = _dense_galerkin_of_symmetric_part(m, b, d, k)
    assert ritz.min() >= 0.5 - 1e-6 and int(info.clipped) == 0 and int(info.iterations) == k
    np.testing.assert_allclose(u, ref, rtol=1e-3, atol=1e-3 * np.abs(ref).max())
    np.testing.assert_allclose(gain, g @ ref, rtol=1e-3, atol=1e-3 * np.abs(g @ ref).max())
