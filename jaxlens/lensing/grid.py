"""Pixel grids: square fields of view centred on the origin.

Pixel k of an n-pixel axis over a field of view `fov` (arcsec) has its centre at
(k − (n − 1)/2) · fov/n. Array index [i, j] is the pixel at (x_j, y_i): x grows
with the column j and y with the row i (FITS, origin at the lower left).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pixel_centers", "pixel_grid", "pixel_scale"]


def _check_n_fov(n: int, fov) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"number of pixels must be a positive integer, got {n!r}")
    if not isinstance(fov, jax.core.Tracer) and not float(fov) > 0:
        raise ValueError(f"field of view must be positive (arcsec), got {fov!r}")


def pixel_scale(n: int, fov: float) -> float:
    """Pixel side in arcsec."""
    _check_n_fov(n, fov)
    return fov / n


def pixel_centers(n: int, fov: jax.typing.ArrayLike) -> jax.Array:
    """Centres of the n pixels of one axis, arcsec, shape [n], default float dtype."""
    _check_n_fov(n, fov)
    k = jnp.arange(n, dtype=jnp.result_type(float))
    return (k - (n - 1) / 2) * (fov / n)


def pixel_grid(n: int, fov: jax.typing.ArrayLike) -> tuple[jax.Array, jax.Array]:
    """Pixel-centre coordinates of an n×n field of side `fov` arcsec.

    Returns:
      (x, y), each [n, n], with x[i, j] = x_j and y[i, j] = y_i.
    """
    c = pixel_centers(n, fov)
    x, y = jnp.meshgrid(c, c, indexing="xy")
    return x, y
