"""Bilinear interpolation of a pixelated source, extended by zeros.

This is lenstronomy's ``INTERPOL`` light profile: the image is sampled at its
pixel centres, and one ring of zero-valued pixels is added around it, so a value
falls linearly to zero between the edge pixel's centre and the next (missing)
pixel's centre and is exactly zero beyond.

The interpolation is split into a *stencil* (four flat indices and four weights
per query point, which depend only on the coordinates) and a weighted gather.
`lens_operator` precomputes the stencil once for a fixed lens.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["bilinear", "bilinear_stencil", "apply_stencil"]


def bilinear_stencil(
    x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, n: int, fov: float
) -> tuple[jax.Array, jax.Array]:
    """Flat indices and weights of the bilinear interpolation on an n×n source.

    Args:
      x, y: query positions, arcsec, same shape S.
      n: source side in pixels.
      fov: source field of view, arcsec (pixel scale fov/n).

    Returns:
      (index, weight): int32 [*S, 4] indices into the flattened [n*n] source and
      weights [*S, 4] of x's float dtype. Corners outside the source get weight 0
      (and a clipped, valid index), which is the zero extension.
    """
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    dtype = jnp.result_type(float, x, y)
    scale = n / fov
    # Continuous pixel coordinates: 0 at the centre of pixel 0.
    u = x.astype(dtype) * scale + (n - 1) / 2
    v = y.astype(dtype) * scale + (n - 1) / 2
    u0 = jnp.floor(u)
    v0 = jnp.floor(v)
    tu = u - u0
    tv = v - v0
    j0 = u0.astype(jnp.int32)
    i0 = v0.astype(jnp.int32)
    # Far-away cells collapse onto cell -2 or n, whose four corners are all
    # outside the source, so they keep weight 0 (and int overflow is avoided).
    j0 = jnp.clip(j0, -2, n)
    i0 = jnp.clip(i0, -2, n)

    def inside(k):
        return (k >= 0) & (k <= n - 1)

    ok_j0, ok_j1 = inside(j0), inside(j0 + 1)
    ok_i0, ok_i1 = inside(i0), inside(i0 + 1)
    zero = jnp.zeros((), dtype)
    w00 = jnp.where(ok_i0 & ok_j0, (1 - tv) * (1 - tu), zero)
    w01 = jnp.where(ok_i0 & ok_j1, (1 - tv) * tu, zero)
    w10 = jnp.where(ok_i1 & ok_j0, tv * (1 - tu), zero)
    w11 = jnp.where(ok_i1 & ok_j1, tv * tu, zero)
    jc0 = jnp.clip(j0, 0, n - 1)
    jc1 = jnp.clip(j0 + 1, 0, n - 1)
    ic0 = jnp.clip(i0, 0, n - 1) * n
    ic1 = jnp.clip(i0 + 1, 0, n - 1) * n
    index = jnp.stack([ic0 + jc0, ic0 + jc1, ic1 + jc0, ic1 + jc1], axis=-1)
    weight = jnp.stack([w00, w01, w10, w11], axis=-1)
    return index, weight


def apply_stencil(image: jax.Array, index: jax.Array, weight: jax.Array) -> jax.Array:
    """Weighted gather: out[s] = Σ_k weight[s, k] · image.flat[index[s, k]].

    Args:
      image: [n, n] or [n, n, C].
      index, weight: [*S, 4] from `bilinear_stencil`.

    Returns:
      [*S] or [*S, C].
    """
    n_pix = image.shape[0] * image.shape[1]
    flat = image.reshape((n_pix,) + image.shape[2:])
    vals = jnp.take(flat, index, axis=0, mode="clip")  # [*S, 4(, C)]
    if image.ndim == 3:
        return jnp.einsum("...k,...kc->...c", weight.astype(vals.dtype), vals)
    return jnp.sum(weight.astype(vals.dtype) * vals, axis=-1)


def bilinear(
    image: jax.typing.ArrayLike,
    x: jax.typing.ArrayLike,
    y: jax.typing.ArrayLike,
    fov: float,
) -> jax.Array:
    """Bilinear interpolation of a square pixelated image at positions (x, y).

    Args:
      image: [n, n] or [n, n, C] surface brightness; pixel [i, j] sits at
        (x_j, y_i) of `pixel_grid(n, fov)`.
      x, y: query positions, arcsec, same shape S.
      fov: the image's field of view, arcsec.

    Returns:
      [*S] (or [*S, C]) interpolated values; zero-extended outside the image as
      lenstronomy's INTERPOL. Differentiable in `image`, `x` and `y`.
    """
    image = jnp.asarray(image)
    if image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be square [n, n] or [n, n, C], got shape {image.shape}")
    index, weight = bilinear_stencil(x, y, image.shape[0], fov)
    return apply_stencil(image, index, weight)
