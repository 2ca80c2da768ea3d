"""Bilinear interpolation of a pixelated source, extended by zeros.

This is lenstronomy's ``INTERPOL`` light profile: the image is sampled at its
pixel centres, and one ring of zero-valued pixels is added around it, so a value
falls linearly to zero between the edge pixel's centre and the next (missing)
pixel's centre and is exactly zero beyond.

Two equivalent forms are provided:

* *cells* (`bilinear_cells`, `interpolate_cells`): the source is padded by two
  rings of zeros, and each query point keeps one flat index into the padded
  array (its lower-left corner) and its fractional offsets (tu, tv). Far-away
  points are clamped onto a cell of the outer ring, whose corners are all zero.
  Interpolation is then four plain gathers and a blend, with no masks: this is
  the fast path used by `render` and `lens_operator`.
* *stencil* (`bilinear_stencil`): four explicit indices into the unpadded
  source and four weights per point (zero for corners outside the source);
  convenient for building sparse matrices.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "BilinearCells",
    "bilinear",
    "bilinear_cells",
    "bilinear_stencil",
    "interpolate_cells",
    "pad_source",
]

_PAD = 2  # rings of zeros; two so that far-away points have an all-zero cell


class BilinearCells(NamedTuple):
    """Query points located on a source grid padded by two rings of zeros.

    Attributes:
      base: int32 [*S] flat index of the lower-left corner in the padded
        [(n+4)*(n+4)] source.
      tu, tv: [*S] fractional offsets in x and y, in [0, 1).

    The source side n is not stored (it would become a traced leaf); the
    source passed to `interpolate_cells` must be the one the cells were made for.
    """

    base: jax.Array
    tu: jax.Array
    tv: jax.Array


def _pixel_coordinates(x, y, n, fov):
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")
    dtype = jnp.result_type(float, x, y)
    scale = n / fov
    # Continuous pixel coordinates: 0 at the centre of pixel 0.
    u = x.astype(dtype) * scale + (n - 1) / 2
    v = y.astype(dtype) * scale + (n - 1) / 2
    return u, v


def bilinear_cells(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, n: int, fov: float) -> BilinearCells:
    """Locates query points on an n×n source of side `fov` arcsec.

    Differentiable in x and y through (tu, tv).
    """
    u, v = _pixel_coordinates(x, y, n, fov)
    u0 = jnp.floor(u)
    v0 = jnp.floor(v)
    # Cells −2 and n have all four corners in the zero padding.
    j = jnp.clip(u0, -_PAD, n).astype(jnp.int32) + _PAD
    i = jnp.clip(v0, -_PAD, n).astype(jnp.int32) + _PAD
    return BilinearCells(base=i * (n + 2 * _PAD) + j, tu=u - u0, tv=v - v0)


def pad_source(image: jax.Array) -> jax.Array:
    """Zero-pads [n, n(, C)] by two rings and flattens to [(n+4)², (C)]."""
    pad = ((_PAD, _PAD), (_PAD, _PAD)) + ((0, 0),) * (image.ndim - 2)
    padded = jnp.pad(image, pad)
    return padded.reshape((-1,) + image.shape[2:])


def interpolate_cells(image: jax.Array, cells: BilinearCells) -> jax.Array:
    """Bilinear values of `image` [n, n(, C)] at located points; returns [*S(, C)]."""
    if image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
        raise ValueError(f"image must be square [n, n] or [n, n, C], got shape {image.shape}")
    n = image.shape[0]
    flat = pad_source(image)
    row = n + 2 * _PAD
    base = cells.base
    # mode="clip" is free of masking work and never triggers: base + row + 1 is
    # in range by construction.
    s00 = jnp.take(flat, base, axis=0, mode="clip")
    s01 = jnp.take(flat, base + 1, axis=0, mode="clip")
    s10 = jnp.take(flat, base + row, axis=0, mode="clip")
    s11 = jnp.take(flat, base + row + 1, axis=0, mode="clip")
    tu, tv = cells.tu, cells.tv
    if image.ndim == 3:
        tu, tv = tu[..., None], tv[..., None]
    tu = tu.astype(jnp.result_type(tu, flat))
    tv = tv.astype(jnp.result_type(tv, flat))
    bottom = s00 + tu * (s01 - s00)
    top = s10 + tu * (s11 - s10)
    return bottom + tv * (top - bottom)


def bilinear_stencil(
    x: jax.typing.ArrayLike, y: jax.typing.ArrayLike, n: int, fov: float
) -> tuple[jax.Array, jax.Array]:
    """Flat indices and weights of the bilinear interpolation on an n×n source.

    Args:
      x, y: query positions, arcsec, same shape S.
      n: source side in pixels.
      fov: source field of view, arcsec (pixel scale fov/n).

    Returns:
      (index, weight): int32 [*S, 4] indices into the flattened [n*n] source, in
      the order (i0,j0), (i0,j0+1), (i0+1,j0), (i0+1,j0+1), and weights [*S, 4].
      Corners outside the source get weight 0 (and a clipped, valid index),
      which is the zero extension.
    """
    u, v = _pixel_coordinates(x, y, n, fov)
    u0 = jnp.floor(u)
    v0 = jnp.floor(v)
    tu = u - u0
    tv = v - v0
    j0 = jnp.clip(u0, -_PAD, n).astype(jnp.int32)
    i0 = jnp.clip(v0, -_PAD, n).astype(jnp.int32)

    def inside(k):
        return (k >= 0) & (k <= n - 1)

    ok_j0, ok_j1 = inside(j0), inside(j0 + 1)
    ok_i0, ok_i1 = inside(i0), inside(i0 + 1)
    zero = jnp.zeros((), tu.dtype)
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
    return interpolate_cells(image, bilinear_cells(x, y, image.shape[0], fov))


# Row-length classes of the bucketed ELL format below: rows are padded up to
# the next level, so the padding waste stays under ~25% beyond 4 entries.
_LEVELS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128)
_UNROLL_MAX = 8


class BucketedRows(NamedTuple):
    """A sparse matrix M [n_rows, n_cols] stored as row buckets of fixed length.

    M v is computed with gathers only (no scatter): each bucket holds rows with
    between two consecutive levels of non-zeros, padded with zero weights; the
    bucket results are concatenated and put in row order by one more gather.

    Attributes:
      cols: per bucket, int32 [K, r] column indices (K entries of r rows).
      weights: per bucket, [K, r] values.
      order: int32 [n_rows], position of each row in the concatenated bucket
        results; rows without entries point at a trailing zero.
    """

    cols: tuple[jax.Array, ...]
    weights: tuple[jax.Array, ...]
    order: jax.Array


def bucketed_rows(rows, cols, values, n_rows: int, *, dtype=None) -> BucketedRows:
    """Builds `BucketedRows` from COO triplets (concrete numpy; duplicates are summed).

    Args:
      rows, cols: integer arrays of equal length.
      values: the entries; exact zeros are dropped.
      n_rows: number of rows of the matrix.
      dtype: dtype of the stored weights (default: jax's default float).
    """
    rows = np.asarray(rows, np.int64).ravel()
    cols = np.asarray(cols, np.int64).ravel()
    values = np.asarray(values, np.float64).ravel()
    keep = values != 0
    rows, cols, values = rows[keep], cols[keep], values[keep]
    n_cols = int(cols.max()) + 1 if cols.size else 1
    keys, inverse = np.unique(rows * n_cols + cols, return_inverse=True)
    values = np.bincount(inverse.ravel(), weights=values, minlength=keys.size)
    rows, cols = keys // n_cols, keys % n_cols  # sorted by row, then column
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(rows.size) - starts[rows]
    levels = list(_LEVELS)
    while levels[-1] < counts.max(initial=0):
        levels.append(levels[-1] * 2)
    # Convert on the host and device_put: jnp.asarray compiles a copy per shape.
    dtype = np.dtype(dtype or jnp.result_type(float))
    order = np.full(n_rows, -1, np.int64)
    out_cols, out_weights = [], []
    lower, offset = 0, 0
    for level in levels:
        members = np.flatnonzero((counts > lower) & (counts <= level))
        lower = level
        if members.size == 0:
            continue
        local = np.full(n_rows, -1, np.int64)
        local[members] = np.arange(members.size)
        sel = local[rows] >= 0
        c = np.zeros((level, members.size), np.int32)
        w = np.zeros((level, members.size), np.float64)
        c[rank[sel], local[rows[sel]]] = cols[sel]
        w[rank[sel], local[rows[sel]]] = values[sel]
        out_cols.append(jax.device_put(c))
        out_weights.append(jax.device_put(w.astype(dtype)))
        order[members] = offset + np.arange(members.size)
        offset += members.size
    order[order < 0] = offset  # the trailing zero
    return BucketedRows(tuple(out_cols), tuple(out_weights), jax.device_put(order.astype(np.int32)))


def apply_bucketed_rows(matrix: BucketedRows, v: jax.Array) -> jax.Array:
    """M v for v of shape [n_cols, *T] (any trailing axes); returns [n_rows, *T]."""
    parts = []
    for cols, weights in zip(matrix.cols, matrix.weights):
        w = weights.reshape(weights.shape + (1,) * (v.ndim - 1))
        if cols.shape[0] <= _UNROLL_MAX:
            # Short rows: one gather per slot, fused into a single loop.
            acc = w[0] * jnp.take(v, cols[0], axis=0, mode="clip")
            for k in range(1, cols.shape[0]):
                acc = acc + w[k] * jnp.take(v, cols[k], axis=0, mode="clip")
        else:
            # Long rows are few; one gather and a reduction keep compilation short.
            acc = jnp.sum(w * jnp.take(v, cols, axis=0, mode="clip"), axis=0)
        parts.append(acc)
    parts.append(jnp.zeros((1,) + v.shape[1:], jnp.result_type(v, *matrix.weights)))
    return jnp.take(jnp.concatenate(parts, axis=0), matrix.order, axis=0, mode="clip")
