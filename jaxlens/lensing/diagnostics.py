"""Diagnostics of the forward operator (Adam et al. 2022, appendix A).

The convolved likelihood (their eq. 19) replaces σ(t)² AAᵀ by σ(t)² I in the
covariance of p_t(y | x). That is a good approximation when AAᵀ is close to
diagonal with a diagonal near 1. For small geometries we form AAᵀ explicitly
and report its diagonal and how many off-diagonal entries are non-zero.

`normal_operator_norm` gives λ_max(AᵀA) matrix-free at any size: it sets how many
Euler–Maruyama steps the eq. 19 likelihood term needs to stay stable
(`jaxlens.sde.stable_steps`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.lensing.forward import Geometry, lens_operator
from jaxlens.lensing.mass import LensParams

__all__ = ["AATDiagnostics", "aat_diagnostics", "normal_operator_norm"]

_MAX_DENSE_ENTRIES = 2**26  # 64 M entries (512 MB in float64) for the dense A


class AATDiagnostics(NamedTuple):
    """Summary of AAᵀ.

    Attributes:
      diag: [m, m] diagonal of AAᵀ (each entry ≤ 1 for a normalised PSF).
      offdiag_nonzero_fraction: fraction of the off-diagonal entries of AAᵀ whose
        magnitude exceeds `atol`.
      offdiag_max: largest off-diagonal magnitude.
    """

    diag: np.ndarray
    offdiag_nonzero_fraction: float
    offdiag_max: float


def aat_diagnostics(lens: LensParams, geometry: Geometry, *, atol: float = 0.0) -> AATDiagnostics:
    """Forms A densely (small geometries only) and summarises AAᵀ.

    Args:
      lens: concrete lens parameters.
      geometry: a small geometry: (src_npix · img_npix)² must be below 2²⁶.
      atol: off-diagonal entries with |value| ≤ atol count as zero.

    Returns:
      An `AATDiagnostics`.
    """
    n_src = geometry.src_npix**2
    n_img = geometry.img_npix**2
    if n_src * n_img > _MAX_DENSE_ENTRIES:
        raise ValueError(
            f"aat_diagnostics forms A densely; {n_img}×{n_src} is too large for this geometry"
        )
    A, AT = lens_operator(lens, geometry)
    dtype = jnp.result_type(float)
    # Probe with the smaller basis: columns A e_k, or rows Aᵀ e_i.
    if n_img <= n_src:
        a = _probe(AT, n_img, geometry.img_shape, dtype)  # [n_img, n_src]
    else:
        a = _probe(A, n_src, geometry.src_shape, dtype).T
    a = np.asarray(a, np.float64).reshape(n_img, n_src)
    aat = a @ a.T
    diag = np.diag(aat).copy()
    off = aat - np.diag(diag)
    n_off = n_img * (n_img - 1)
    frac = float(np.count_nonzero(np.abs(off) > atol)) / n_off if n_off else 0.0
    return AATDiagnostics(
        diag=diag.reshape(geometry.img_shape),
        offdiag_nonzero_fraction=frac,
        offdiag_max=float(np.abs(off).max()) if n_off else 0.0,
    )


def normal_operator_norm(A, AT, source_shape: tuple[int, ...], *, n_iter: int = 100) -> float:
    """λ_max(AᵀA) = ‖A‖₂², by power iteration on AᵀA from a flat source.

    Converges from below (the estimate after any iteration is a Rayleigh quotient); 100
    iterations give ~3 digits on the lenses we simulate.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter}")

    @jax.jit
    def run(v):
        def body(_, v):
            w = AT(A(v))
            return w / jnp.linalg.norm(w)

        v = jax.lax.fori_loop(0, n_iter, body, v / jnp.linalg.norm(v))
        return jnp.vdot(v, AT(A(v)))

    return float(run(jnp.ones(source_shape, jnp.result_type(float))))


def _probe(op, n: int, shape: tuple[int, int], dtype, chunk: int = 256) -> np.ndarray:
    """op applied to every unit vector of an n-dimensional space, in fixed-size chunks."""
    apply = jax.jit(jax.vmap(lambda k: op(jax.nn.one_hot(k, n, dtype=dtype).reshape(shape))))
    out = []
    for start in range(0, n, chunk):
        k = np.arange(start, start + chunk) % n  # the last chunk wraps, then is cut
        out.append(np.asarray(apply(jnp.asarray(k)))[: min(chunk, n - start)])
    return np.concatenate(out).reshape(n, -1)
