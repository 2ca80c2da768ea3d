"""Lens mass models: singular isothermal ellipsoid (SIE) and external shear.

Conventions are lenstronomy's (``LensModel(['SIE', 'SHEAR'])``):

* SIE convergence κ = (θ_E / 2) / sqrt(q x'² + y'²/q), with (x', y') the
  coordinates along the major and minor axes, so that θ_E is the Einstein
  radius on the intermediate axis (the product average of the semi-axes).
* Ellipticity (e1, e2): c = sqrt(e1² + e2²), q = (1 − c)/(1 + c) and the major
  axis lies at position angle φ = atan2(e2, e1)/2 from the x axis.
* External shear: α = (γ1 x + γ2 y, γ2 x − γ1 y).

The SIE deflection is the closed form of Kormann et al. (1994) in the
parametrisation of Keeton & Kochanek (1998, eq. 8 with zero core):
in the major-axis frame, with b = θ_E √q, e = √(1 − q²) and ψ = √(q² x'² + y'²),

    α_x' = b/e · arctan(e x'/ψ),    α_y' = b/e · arctanh(e y'/ψ).

Two places need care so that values *and* gradients stay finite:

* Round lenses (c → 0). κ is a smooth function of (e1, e2) at c = 0 in these
  conventions, but q(c) and φ are not (a cone and an undefined angle). Below
  c = √ε (ε the dtype's machine epsilon) we switch to the first-order expansion
  in (e1, e2), ψ_lens = θ_E [r − (e1 (x² − y²) + 2 e2 x y)/(3r)], whose error
  O(c²) is below ε. The other branch sees a safe dummy ellipticity, so no NaN
  leaks into gradients (the "double where" idiom).
* The lens centre, where the deflection is bounded but direction dependent.
  There the deflection is defined as zero (as lenstronomy returns) with zero
  derivative.

Everything is written with jax.numpy and takes its dtype from the inputs, so it
runs in float32 by default and float64 under ``jax.enable_x64``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "LensParams",
    "sie_deflection",
    "shear_deflection",
    "deflection",
    "ray_trace",
    "ellipticity_to_phi_q",
]

# lenstronomy clips c at this value (q ≈ 5e-5); we do the same so that
# nonsense ellipticities give a degenerate but finite lens.
_C_MAX = 0.9999


class LensParams(NamedTuple):
    """SIE + external shear parameters (a pytree; every field may be a traced array).

    Only theta_e is required; the others default to 0 (a round, centred lens
    without shear).

    Attributes:
      theta_e: Einstein radius on the intermediate axis, arcsec.
      e1, e2: ellipticity components (lenstronomy convention, dimensionless).
      center_x, center_y: lens centre, arcsec.
      gamma1, gamma2: external shear components (dimensionless).
    """

    theta_e: jax.typing.ArrayLike
    e1: jax.typing.ArrayLike = 0.0
    e2: jax.typing.ArrayLike = 0.0
    center_x: jax.typing.ArrayLike = 0.0
    center_y: jax.typing.ArrayLike = 0.0
    gamma1: jax.typing.ArrayLike = 0.0
    gamma2: jax.typing.ArrayLike = 0.0


def _float_dtype(*xs) -> jnp.dtype:
    return jnp.result_type(float, *xs)


@jax.custom_jvp
def _atan(x: jax.Array) -> jax.Array:
    """arctan, vectorisable in float32.

    XLA's CPU arctan is a scalar library call, ~20× slower than this. For
    float32 we use the Cephes `atanf` reduction (to |t| ≤ tan(π/8)) and minimax
    polynomial, accurate to ~1 ulp; wider dtypes keep jnp.arctan.
    """
    if x.dtype != jnp.float32:
        return jnp.arctan(x)
    a = jnp.abs(x)
    big = a > 2.414213562373095  # tan(3π/8)
    mid = a > 0.41421356237309503  # tan(π/8)
    offset = jnp.where(big, np.float32(np.pi / 2), jnp.where(mid, np.float32(np.pi / 4), np.float32(0)))
    # The unused branches stay finite: a + 1 ≥ 1, and a > tan(3π/8) where 1/a is taken.
    t = jnp.where(big, -1 / jnp.where(big, a, 1), jnp.where(mid, (a - 1) / (a + 1), a))
    z = t * t
    poly = (((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z
    return jnp.sign(x) * (offset + (t + t * poly))


@_atan.defjvp
def _atan_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return _atan(x), dx / (1 + x * x)


def _atanh(x: jax.Array) -> jax.Array:
    """arctanh(x) = ½ log1p(2x/(1 − x)) for |x| < 1: accurate near 0, cheaper than XLA's."""
    return 0.5 * jnp.log1p(2 * x / (1 - x))


def ellipticity_to_phi_q(e1: jax.typing.ArrayLike, e2: jax.typing.ArrayLike):
    """Position angle φ (radians) and axis ratio q of ellipticity (e1, e2).

    Not differentiable at e1 = e2 = 0 (φ is undefined there); `sie_deflection`
    does not go through this function for nearly round lenses.
    """
    e1, e2 = jnp.asarray(e1), jnp.asarray(e2)
    c = jnp.minimum(jnp.hypot(e1, e2), _C_MAX)
    return jnp.arctan2(e2, e1) / 2, (1 - c) / (1 + c)


def _sie_major_axis(xp, yp, theta_e, q, e2q):
    """Deflection in the major-axis frame; e2q = 1 − q², supplied exactly."""
    dtype = _float_dtype(xp, yp, theta_e, q)
    psi2 = (q * xp) ** 2 + yp**2
    # The centre: keep both sqrt and the quotients away from 0/0; the threshold
    # keeps ψ³ (which appears in second-order terms of the chain rule) normal.
    at_centre = psi2 < jnp.sqrt(jnp.finfo(dtype).tiny)
    psi = jnp.sqrt(jnp.where(at_centre, 1.0, psi2))
    # In float32, 1 − q² rounds to 1 for c near _C_MAX; keep arctanh finite.
    e = jnp.sqrt(jnp.minimum(e2q, 1 - jnp.finfo(dtype).eps))
    b_over_e = theta_e * jnp.sqrt(q) / e
    ax = b_over_e * _atan(e * xp / psi)
    ay = b_over_e * _atanh(e * yp / psi)
    zero = jnp.zeros((), dtype)
    return jnp.where(at_centre, zero, ax), jnp.where(at_centre, zero, ay)


def _sie_round(x, y, theta_e, e1, e2):
    """First-order expansion of the SIE deflection in (e1, e2), error O(c²)."""
    dtype = _float_dtype(x, y, theta_e)
    r2 = x * x + y * y
    at_centre = r2 < jnp.sqrt(jnp.finfo(dtype).tiny)
    r = jnp.sqrt(jnp.where(at_centre, 1.0, r2))
    quad = e1 * (x * x - y * y) + 2 * e2 * x * y
    ax = x / r - ((2 * e1 * x + 2 * e2 * y) / r - quad * x / r**3) / 3
    ay = y / r - ((2 * e2 * x - 2 * e1 * y) / r - quad * y / r**3) / 3
    zero = jnp.zeros((), dtype)
    return (
        jnp.where(at_centre, zero, theta_e * ax),
        jnp.where(at_centre, zero, theta_e * ay),
    )


def sie_deflection(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    theta_e: jax.typing.ArrayLike,
    e1: jax.typing.ArrayLike,
    e2: jax.typing.ArrayLike,
    center_x: jax.typing.ArrayLike = 0.0,
    center_y: jax.typing.ArrayLike = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """Deflection angle of a singular isothermal ellipsoid (lenstronomy 'SIE').

    Args:
      x, y: image-plane positions, arcsec, any broadcastable shapes.
      theta_e: Einstein radius on the intermediate axis, arcsec.
      e1, e2: ellipticity (q = (1−c)/(1+c), c = √(e1²+e2²), φ = atan2(e2, e1)/2).
      center_x, center_y: lens centre, arcsec.

    Returns:
      (alpha_x, alpha_y), arcsec, with the broadcast shape of the inputs. Finite
      with finite derivatives everywhere, including the centre and q = 1.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    dtype = _float_dtype(x, y, theta_e, e1, e2, center_x, center_y)
    x = x.astype(dtype) - center_x
    y = y.astype(dtype) - center_y
    e1 = jnp.asarray(e1, dtype)
    e2 = jnp.asarray(e2, dtype)
    theta_e = jnp.asarray(theta_e, dtype)

    c2 = e1 * e1 + e2 * e2
    # Below c = √ε the round expansion is exact to working precision.
    is_round = c2 < jnp.finfo(dtype).eps
    # The elliptical branch sees a harmless dummy ellipticity when round, so
    # that atan2(0, 0) and √0 never enter a derivative (double-where idiom).
    e1s = jnp.where(is_round, 0.5, e1)
    e2s = jnp.where(is_round, 0.0, e2)

    def elliptical(x, y, theta_e, e1s, e2s):
        c = jnp.minimum(jnp.sqrt(e1s * e1s + e2s * e2s), _C_MAX)
        q = (1 - c) / (1 + c)
        e2q = 4 * c / (1 + c) ** 2  # 1 − q², free of cancellation for small c
        phi = jnp.arctan2(e2s, e1s) / 2
        cos, sin = jnp.cos(phi), jnp.sin(phi)
        axp, ayp = _sie_major_axis(cos * x + sin * y, cos * y - sin * x, theta_e, q, e2q)
        return cos * axp - sin * ayp, sin * axp + cos * ayp

    shape = jnp.broadcast_shapes(x.shape, y.shape, theta_e.shape)
    if is_round.ndim == 0:
        # One lens: evaluate only the branch that is needed.
        return jax.lax.cond(
            is_round,
            lambda: _broadcast(_sie_round(x, y, theta_e, e1, e2), shape),
            lambda: _broadcast(elliptical(x, y, theta_e, e1s, e2s), shape),
        )
    ax_round, ay_round = _sie_round(x, y, theta_e, e1, e2)
    ax_ell, ay_ell = elliptical(x, y, theta_e, e1s, e2s)
    return jnp.where(is_round, ax_round, ax_ell), jnp.where(is_round, ay_round, ay_ell)


def _broadcast(pair, shape):
    return tuple(jnp.broadcast_to(v, shape) for v in pair)


def shear_deflection(
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    gamma1: jax.typing.ArrayLike,
    gamma2: jax.typing.ArrayLike,
) -> tuple[jax.Array, jax.Array]:
    """External shear deflection α = (γ1 x + γ2 y, γ2 x − γ1 y), about the origin.

    Args:
      x, y: image-plane positions, arcsec.
      gamma1, gamma2: shear components.

    Returns:
      (alpha_x, alpha_y), arcsec.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    return gamma1 * x + gamma2 * y, gamma2 * x - gamma1 * y


def deflection(
    x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, lens: LensParams
) -> tuple[jax.Array, jax.Array]:
    """Total deflection of SIE + external shear (shear centred on the origin, as lenstronomy's default)."""
    ax1, ay1 = sie_deflection(
        x, y, lens.theta_e, lens.e1, lens.e2, lens.center_x, lens.center_y
    )
    ax2, ay2 = shear_deflection(x, y, lens.gamma1, lens.gamma2)
    return ax1 + ax2, ay1 + ay2


def ray_trace(
    x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, lens: LensParams
) -> tuple[jax.Array, jax.Array]:
    """Source-plane positions β = θ − α(θ) of image-plane positions (x, y), arcsec."""
    ax, ay = deflection(x, y, lens)
    return jnp.asarray(x) - ax, jnp.asarray(y) - ay
