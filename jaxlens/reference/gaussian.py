"""An analytic Gaussian prior: exact diffused scores and the exact linear-Gaussian posterior.

A prior x ~ N(μ, Σ) diffused by the VE SDE has marginals p_t = N(μ, Σ + σ(t)² I),
so its score is known in closed form at every t. With a linear observation
y = A x + η, η ~ N(0, diag(σ_n²)), the posterior is Gaussian too. Both make the
sampler testable against linear algebra; the dense matrices built here are for
small problems (tests and benchmarks) only.

Covariances are over the flattened state: index (i, j, c) of an [H, W, C] array
is i·W·C + j·C + c (numpy's C order).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.sde import VESDE

_EM_MODES = ("none", "eq19", "eq12", "tweedie", "dps")

__all__ = [
    "GaussianPrior",
    "smooth_gaussian_prior",
    "isotropic_gaussian_prior",
    "gaussian_prior_score",
    "gaussian_prior_sample",
    "dense_operator",
    "linear_gaussian_posterior",
    "gaussian_em_moments",
]


class GaussianPrior(NamedTuple):
    """N(mean, Σ) with Σ = V diag(eigvals) Vᵀ, or Σ = diag(eigvals) when eigvecs is None.

    Attributes:
      mean: [H, W, C] prior mean.
      eigvals: [D] eigenvalues of Σ (D = H·W·C), or the per-pixel variances in
        flattened order when eigvecs is None.
      eigvecs: [D, D] orthonormal eigenvectors (columns), or None for a diagonal Σ.
    """

    mean: jax.Array
    eigvals: jax.Array
    eigvecs: jax.Array | None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.mean.shape)

    def covariance(self) -> np.ndarray:
        """The dense [D, D] covariance in float64 (small D only)."""
        lam = np.asarray(self.eigvals, np.float64)
        if self.eigvecs is None:
            return np.diag(lam)
        v = np.asarray(self.eigvecs, np.float64)
        return (v * lam) @ v.T


def _check_shape(shape) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be [H, W, C] with positive sides, got {shape}")
    return shape


def smooth_gaussian_prior(
    shape: tuple[int, int, int],
    *,
    length_scale: float = 2.0,
    std: float = 1.0,
    jitter: float = 1e-3,
    mean: float = 0.0,
) -> GaussianPrior:
    """A smooth random-field prior: squared-exponential kernel on the pixel grid.

    Σ = std² (K + jitter·I) ⊗ I_C with K_pq = exp(−|r_p − r_q|² / (2 ℓ²)), r in
    pixels, so every pixel has standard deviation std·√(1 + jitter) and channels
    are independent. The jitter keeps Σ invertible (the SE spectrum decays fast).

    Args:
      shape: (H, W, C) of one state.
      length_scale: correlation length ℓ in pixels.
      std: marginal standard deviation (before jitter).
      jitter: relative diagonal added to the kernel.
      mean: constant prior mean.

    Returns:
      A GaussianPrior with float32 leaves (eigendecomposition done in float64).
    """
    h, w, c = _check_shape(shape)
    if not (length_scale > 0 and std > 0 and jitter >= 0):
        raise ValueError(
            f"need length_scale > 0, std > 0, jitter >= 0; got {length_scale}, {std}, {jitter}"
        )
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.float64)
    d2 = np.sum((r[:, None, :] - r[None, :, :]) ** 2, axis=-1)
    k = std**2 * (np.exp(-0.5 * d2 / length_scale**2) + jitter * np.eye(h * w))
    cov = np.kron(k, np.eye(c))
    lam, vec = np.linalg.eigh(cov)
    lam = np.maximum(lam, std**2 * jitter)
    return GaussianPrior(
        mean=jnp.full((h, w, c), mean, jnp.float32),
        eigvals=jnp.asarray(lam, jnp.float32),
        eigvecs=jnp.asarray(vec, jnp.float32),
    )


def isotropic_gaussian_prior(
    shape: tuple[int, int, int], *, std: float = 1.0, mean: float = 0.0
) -> GaussianPrior:
    """N(mean, std² I): a diagonal prior, cheap at any size."""
    h, w, c = _check_shape(shape)
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    return GaussianPrior(
        mean=jnp.full((h, w, c), mean, jnp.float32),
        eigvals=jnp.full((h * w * c,), std**2, jnp.float32),
        eigvecs=None,
    )


def gaussian_prior_score(prior: GaussianPrior, sde: VESDE) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """Exact score of the diffused prior, ∇ log N(x; μ, Σ + σ(t)² I) = (Σ + σ(t)² I)⁻¹ (μ − x).

    Args:
      prior: the Gaussian prior.
      sde: the VE SDE that sets σ(t).

    Returns:
      score_fn(x, t) for one state x [H, W, C] and a scalar t; vmap it for chains.
    """

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        if x.shape != prior.mean.shape:
            raise ValueError(f"state shape {x.shape} != prior shape {prior.mean.shape}")
        var_t = sde.sigma(t).astype(x.dtype) ** 2
        delta = (prior.mean - x).reshape(-1)
        inv = 1.0 / (prior.eigvals + var_t)
        if prior.eigvecs is None:
            out = inv * delta
        else:
            v = prior.eigvecs
            out = v @ (inv * (v.T @ delta))
        return out.reshape(x.shape)

    return score_fn


def gaussian_prior_sample(key: jax.Array, prior: GaussianPrior, n: int) -> jax.Array:
    """n independent draws from the prior, [n, H, W, C]."""
    z = jax.random.normal(key, (n, prior.eigvals.shape[0]), prior.mean.dtype)
    z = z * jnp.sqrt(prior.eigvals)
    if prior.eigvecs is not None:
        z = z @ prior.eigvecs.T
    return prior.mean + z.reshape((n,) + prior.shape)


def dense_operator(A: Callable[[jax.Array], jax.Array], in_shape: tuple[int, ...], *,
                   chunk: int | None = None) -> np.ndarray:
    """The dense matrix of a linear operator, built by applying it to basis vectors.

    Args:
      A: a linear map from arrays of shape in_shape to any shape.
      in_shape: the input shape.
      chunk: basis vectors per vmapped call (None: all at once); bounds the memory of
        an expensive A, such as a network's JVP.

    Returns:
      [m, D] float64 matrix with A(x).ravel() = M @ x.ravel(); D = prod(in_shape).
    """
    d = int(np.prod(in_shape))
    if d > 20_000:
        raise ValueError(f"dense_operator is for small problems; input size {d} is too large")
    basis = jnp.eye(d, dtype=jnp.float32).reshape((d,) + tuple(in_shape))
    cols = jax.jit(lambda b: jax.lax.map(lambda e: jnp.ravel(A(e)), b, batch_size=chunk or d))(basis)
    return np.asarray(cols, np.float64).T


def linear_gaussian_posterior(
    prior: GaussianPrior,
    matrix: np.ndarray,
    y: np.ndarray,
    sigma_n,
    *,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact posterior of x ~ N(μ, Σ) given y = M x + η, η ~ N(0, diag(σ_n²)).

    Computed in float64 with the observation-space (Kalman) form
    K = Σ Mᵀ (M Σ Mᵀ + N)⁻¹, mean = μ + K (y − M μ), cov = Σ − K M Σ,
    which never inverts Σ. Pixels that are masked (mask True) or have infinite
    σ_n are dropped.

    Args:
      prior: the Gaussian prior over states of shape [H, W, C].
      matrix: [m, D] dense forward operator (see `dense_operator`).
      y: observation with m elements (any shape; raveled in C order).
      sigma_n: noise standard deviation, scalar or broadcastable to y.
      mask: optional boolean array broadcastable to y; True marks pixels to ignore.

    Returns:
      (mean [H, W, C], cov [D, D]) as float64 numpy arrays.
    """
    y = np.asarray(y, np.float64)
    sn = np.broadcast_to(np.asarray(sigma_n, np.float64), y.shape).ravel()
    keep = np.isfinite(sn)
    if mask is not None:
        keep &= ~np.broadcast_to(np.asarray(mask, bool), y.shape).ravel()
    m = np.asarray(matrix, np.float64)[keep]
    yv, sn = y.ravel()[keep], sn[keep]
    mu = np.asarray(prior.mean, np.float64).ravel()
    cov = prior.covariance()
    sm = cov @ m.T
    s = m @ sm + np.diag(sn**2)
    gain = np.linalg.solve(s, sm.T).T
    mean = mu + gain @ (yv - m @ mu)
    post = cov - gain @ sm.T
    post = 0.5 * (post + post.T)
    return mean.reshape(prior.shape), post


def gaussian_em_moments(
    prior: GaussianPrior,
    matrix: np.ndarray | None,
    y: np.ndarray | None,
    sigma_n,
    sde: VESDE,
    n_steps: int,
    *,
    likelihood: str = "eq19",
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the Euler–Maruyama output for a Gaussian prior.

    With a Gaussian prior and a linear observation every likelihood mode gives a
    score that is affine in x, s(x, t) = b_t − J_t x, so the EM chain
    x ← x + h g² s(x, t) + √(h g²) z started from N(0, σ_max² I) stays Gaussian
    with m ← F m + h g² b and P ← F P Fᵀ + h g² I, F = I − h g² J_t (h = 1/N).
    This is the law the sampler draws from, discretisation error included and
    Monte-Carlo error excluded, so it separates the two. Float64, small D only;
    the CG solves of 'eq12'/'tweedie' are done exactly here.

    Args:
      prior: the Gaussian prior.
      matrix: [m, D] dense forward operator, or None with likelihood='none'.
      y: observation with m elements, or None with likelihood='none'.
      sigma_n: noise std, scalar or broadcastable to y (inf = unused pixel).
      sde: the VE SDE.
      n_steps: N.
      likelihood: 'none' (prior sampling), 'eq19', 'eq12', 'tweedie' or 'dps'.
      mask: optional boolean array broadcastable to y; True marks ignored pixels.

    Returns:
      (mean [H, W, C], cov [D, D]) as float64 numpy arrays.
    """
    if likelihood not in _EM_MODES:
        raise ValueError(f"likelihood must be one of {_EM_MODES}, got {likelihood!r}")
    lam = np.asarray(prior.eigvals, np.float64)
    d = lam.shape[0]
    mu = np.asarray(prior.mean, np.float64).ravel()
    m_op = yv = nvar = None
    if likelihood != "none":
        y = np.asarray(y, np.float64)
        sn = np.broadcast_to(np.asarray(sigma_n, np.float64), y.shape).ravel()
        keep = np.isfinite(sn)
        if mask is not None:
            keep &= ~np.broadcast_to(np.asarray(mask, bool), y.shape).ravel()
        m_op = np.asarray(matrix, np.float64)[keep]
        yv, nvar = y.ravel()[keep], sn[keep] ** 2
    isotropic = prior.eigvecs is None and np.all(lam == lam[0])
    if isotropic and (nvar is None or np.all(nvar == nvar[0])):
        mean, var, basis = _em_moments_svd(lam[0], mu, m_op, yv, nvar, sde, n_steps, likelihood)
        return (basis @ mean).reshape(prior.shape), (basis * var) @ basis.T
    # Work in the prior's eigenbasis, where (Σ + σ²I)⁻¹ and ∂m/∂x are diagonal.
    vec = np.eye(d) if prior.eigvecs is None else np.asarray(prior.eigvecs, np.float64)
    mu_e = vec.T @ mu
    m_e = None if m_op is None else m_op @ vec
    h = 1.0 / n_steps
    mean = np.zeros(d)
    cov = sde.sigma_max**2 * np.eye(d)
    for i in range(n_steps):
        t = 1.0 - i / n_steps
        var_t = float(sde.sigma(t)) ** 2
        g2 = 2.0 * sde.log_ratio * var_t
        prec = 1.0 / (lam + var_t)
        jac, b = np.diag(prec), prec * mu_e
        if likelihood in ("eq19", "eq12"):
            if likelihood == "eq19":
                w = m_e.T / (nvar + var_t)
            else:
                w = np.linalg.solve(np.diag(nvar) + var_t * m_e @ m_e.T, m_e).T
            jac, b = jac + w @ m_e, b + w @ yv
        elif likelihood in ("tweedie", "dps"):
            am = m_e * (1.0 - var_t * prec)  # A ∂m/∂x
            k = np.diag(nvar)
            if likelihood == "tweedie":
                k = k + var_t * am @ m_e.T
            w = np.linalg.solve(k, am).T
            jac, b = jac + w @ am, b + w @ (yv - var_t * m_e @ (prec * mu_e))
        f = np.eye(d) - h * g2 * jac
        mean = f @ mean + h * g2 * b
        cov = f @ cov @ f.T + h * g2 * np.eye(d)
    cov = vec @ cov @ vec.T
    return (vec @ mean).reshape(prior.shape), 0.5 * (cov + cov.T)


def _em_moments_svd(v, mu, m_op, yv, nvar, sde, n_steps, likelihood):
    # Isotropic prior and scalar noise: every mode's Jacobian is diagonal in the
    # right singular basis of A, so the recursion is elementwise there.
    d = mu.shape[0]
    if m_op is None:
        basis, s_k, y_k = np.eye(d), np.zeros(d), np.zeros(d)
        nv = 1.0
    else:
        u, sv, vt = np.linalg.svd(m_op, full_matrices=True)
        basis = vt.T
        s_k = np.zeros(d)
        s_k[: sv.shape[0]] = sv
        y_k = np.zeros(d)
        y_k[: sv.shape[0]] = (u.T @ yv)[: sv.shape[0]]
        nv = float(nvar[0])
    mu_k = basis.T @ mu
    h = 1.0 / n_steps
    mean, var = np.zeros(d), np.full(d, sde.sigma_max**2)
    for i in range(n_steps):
        t = 1.0 - i / n_steps
        var_t = float(sde.sigma(t)) ** 2
        g2 = 2.0 * sde.log_ratio * var_t
        jac, b = np.full(d, 1.0 / (v + var_t)), mu_k / (v + var_t)
        if likelihood == "eq19":
            jac, b = jac + s_k**2 / (nv + var_t), b + s_k * y_k / (nv + var_t)
        elif likelihood == "eq12":
            k = nv + var_t * s_k**2
            jac, b = jac + s_k**2 / k, b + s_k * y_k / k
        elif likelihood in ("tweedie", "dps"):
            g = v / (v + var_t)  # ∂m/∂x
            k = nv + (var_t * g * s_k**2 if likelihood == "tweedie" else 0.0)
            resid = y_k - s_k * var_t * mu_k / (v + var_t)
            jac, b = jac + g**2 * s_k**2 / k, b + g * s_k * resid / k
        f = 1.0 - h * g2 * jac
        mean = f * mean + h * g2 * b
        var = f**2 * var + h * g2
    return mean, var, basis
