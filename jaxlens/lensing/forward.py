"""The lens forward model: y = A x (+ noise).

A ray-traces the centres of a fine image-plane grid to the source plane,
interpolates the source bilinearly there (zero outside it), optionally convolves
with a PSF on the fine grid, and average-pools to the observed pixels. The result
is the mean surface brightness over each observed pixel, in the source's units.

* `render(source, lens, geometry)` is differentiable in the source *and* the
  lens parameters (the path for lens-parameter inference).
* `lens_operator(lens, geometry)` fixes the lens and returns the matrix-free
  pair (A, Aᵀ); the ray tracing and the interpolation stencil are computed once.
* `simulate(key, source, lens, geometry, sigma_n)` returns a noisy observation.

Sources are [n, n] or [n, n, C] (C bands, each lensed the same way); outputs are
[m, m] or [m, m, C] with m = fine_npix / pool.

Performance notes (XLA on CPU, where these choices were measured):

* Bilinear interpolation is four plain gathers from a zero-padded source with
  one precomputed flat index per ray (no masks), then a blend.
* Pooling is a sum of pool² strided slices, which fuses into the gathers; a
  reshape-and-mean is ~10× slower.
* Aᵀ never scatters: the transposed interpolation (with the pooling folded in
  when there is no PSF) is a sparse matrix in bucketed-ELL form, applied with
  gathers only.
* Small PSFs use a fused shifted sum, large ones an FFT; XLA's CPU convolution
  is several times slower than either on single-channel images.
* The kernels are module-level jitted functions taking the precomputed arrays
  as arguments, so eager calls compile once per shape.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlens.lensing.grid import Geometry
from jaxlens.lensing.interpolate import (
    BilinearCells,
    BucketedRows,
    apply_bucketed_rows,
    bilinear_cells,
    bilinear_stencil,
    bucketed_rows,
    interpolate_cells,
)
from jaxlens.lensing.mass import LensParams, ray_trace

__all__ = ["render", "lens_operator", "simulate", "check_lens", "convolve_psf", "average_pool"]


def _is_concrete(tree) -> bool:
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def check_lens(lens: LensParams) -> None:
    """Raise ValueError for a bad lens; value checks only when `lens` is concrete."""
    if not isinstance(lens, LensParams):
        raise ValueError(f"lens must be a LensParams, got {type(lens).__name__}")
    if not _is_concrete(lens):
        return
    values = {name: np.asarray(getattr(lens, name), dtype=np.float64) for name in lens._fields}
    for name, value in values.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"lens parameter {name} is not finite: {value}")
    if np.any(values["theta_e"] < 0):
        raise ValueError(f"lens parameter theta_e must be >= 0, got {values['theta_e']}")
    if np.any(values["e1"] ** 2 + values["e2"] ** 2 >= 1):
        raise ValueError("lens ellipticity must satisfy e1² + e2² < 1 (axis ratio q > 0)")


def _check_source(source: jax.Array, geometry: Geometry) -> None:
    n = geometry.src_npix
    if source.ndim not in (2, 3) or source.shape[:2] != (n, n):
        raise ValueError(
            f"source must have shape ({n}, {n}) or ({n}, {n}, C) for this geometry, got {source.shape}"
        )


def _check_image(image: jax.Array, geometry: Geometry) -> None:
    m = geometry.img_npix
    if image.ndim not in (2, 3) or image.shape[:2] != (m, m):
        raise ValueError(
            f"image must have shape ({m}, {m}) or ({m}, {m}, C) for this geometry, got {image.shape}"
        )


@functools.lru_cache(maxsize=16)
def _fine_grid_np(n: int, fov: float) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n, dtype=np.float64) - (n - 1) / 2) * (fov / n)
    return tuple(np.meshgrid(c, c, indexing="xy"))


def _fine_grid(geometry: Geometry, dtype) -> tuple[jax.Array, jax.Array]:
    x, y = _fine_grid_np(geometry.fine_npix, geometry.img_fov)
    return jnp.asarray(x, dtype), jnp.asarray(y, dtype)


# Above this many PSF taps the FFT beats the direct shifted sum on CPU.
_DIRECT_CONV_MAX_TAPS = 49


def convolve_psf(image: jax.Array, psf: np.ndarray) -> jax.Array:
    """'same'-size convolution with zero padding (scipy.signal.convolve2d 'same'), per channel.

    Small kernels use a fused sum of shifted copies; large ones an FFT. (XLA's
    CPU convolution is several times slower than either for single-channel
    images.)

    Args:
      image: [H, W] or [H, W, C].
      psf: odd-sized [kh, kw] kernel (numpy, static).

    Returns:
      [H, W] or [H, W, C].
    """
    psf = np.asarray(psf)
    kh, kw = psf.shape
    h, w = image.shape[:2]
    ha, hb = kh // 2, kw // 2
    extra = ((0, 0),) * (image.ndim - 2)
    if psf.size <= _DIRECT_CONV_MAX_TAPS:
        padded = jnp.pad(image, ((ha, ha), (hb, hb)) + extra)
        out = None
        for a in range(kh):
            for b in range(kw):
                if psf[a, b] == 0:
                    continue
                # out[i, j] += psf[a, b] image[i − a + ha, j − b + hb]
                term = psf[a, b] * padded[2 * ha - a : 2 * ha - a + h, 2 * hb - b : 2 * hb - b + w]
                out = term if out is None else out + term
        return out.astype(image.dtype)
    shape = (h + kh - 1, w + kw - 1)
    img = jnp.moveaxis(image, (0, 1), (-2, -1)) if image.ndim == 3 else image
    spec = jnp.fft.rfft2(img, s=shape) * jnp.fft.rfft2(jnp.asarray(psf, image.dtype), s=shape)
    full = jnp.fft.irfft2(spec, s=shape)
    out = full[..., ha : ha + h, hb : hb + w].astype(image.dtype)
    return jnp.moveaxis(out, (-2, -1), (0, 1)) if image.ndim == 3 else out


def average_pool(image: jax.Array, pool: int) -> jax.Array:
    """Mean over pool×pool blocks of [H, W] or [H, W, C] (H, W divisible by pool).

    Written as a sum of pool² strided slices, which XLA fuses into the producer;
    a reshape-and-mean lowers to a reduction that is ~10× slower on CPU.
    """
    if pool == 1:
        return image
    if image.shape[0] % pool or image.shape[1] % pool:
        raise ValueError(f"pool={pool} does not divide the image shape {image.shape[:2]}")
    total = None
    for a in range(pool):
        for b in range(pool):
            part = image[a::pool, b::pool]
            total = part if total is None else total + part
    return total * (1.0 / pool**2)


def _detector(fine: jax.Array, geometry: Geometry) -> jax.Array:
    if geometry.psf is not None:
        fine = convolve_psf(fine, geometry.psf_array)
    return average_pool(fine, geometry.pool)


def render(source: jax.typing.ArrayLike, lens: LensParams, geometry: Geometry) -> jax.Array:
    """Lensed, PSF-convolved, pooled image of a pixelated source.

    Differentiable in `source` and in every field of `lens`.

    Args:
      source: [n, n] or [n, n, C] surface brightness, n = geometry.src_npix.
      lens: lens parameters (scalars; may be traced).
      geometry: the grids and the PSF.

    Returns:
      [m, m] or [m, m, C] mean surface brightness, m = geometry.img_npix.
    """
    source = jnp.asarray(source)
    _check_source(source, geometry)
    check_lens(lens)
    return _render(source, lens, geometry)


@functools.partial(jax.jit, static_argnums=2)
def _render(source: jax.Array, lens: LensParams, geometry: Geometry) -> jax.Array:
    dtype = jnp.result_type(float, source)
    x, y = _fine_grid(geometry, dtype)
    bx, by = ray_trace(x, y, lens)
    cells = bilinear_cells(bx, by, geometry.src_npix, geometry.src_fov)
    return _detector(interpolate_cells(source, cells), geometry)


# A and Aᵀ kernels are jitted at module level with the precomputed arrays as
# arguments, so eager calls compile once per shape and do not embed constants.
@functools.partial(jax.jit, static_argnums=2)
def _forward(source: jax.Array, cells: BilinearCells, geometry: Geometry) -> jax.Array:
    return _detector(interpolate_cells(source, cells), geometry)


@functools.partial(jax.jit, static_argnums=2)
def _adjoint(image: jax.Array, matrix: BucketedRows, geometry: Geometry) -> jax.Array:
    if geometry.psf is None:
        values = image  # the pooling is folded into the sparse matrix
    else:
        values = _detector_transpose(image, geometry)
    flat = values.reshape((-1,) + values.shape[2:])
    n = geometry.src_npix
    return apply_bucketed_rows(matrix, flat).reshape((n, n) + image.shape[2:])


def lens_operator(lens: LensParams, geometry: Geometry):
    """Matrix-free forward operator A and its adjoint Aᵀ for a fixed lens.

    Everything that depends on the lens is computed here, once: the ray-traced
    fine grid, located on the padded source (A is then four gathers, a blend,
    the PSF and a fused pooling), and, when `lens` is concrete, the transposed
    interpolation as a bucketed sparse matrix (Aᵀ is then gathers only, with the
    pooling folded in when there is no PSF). If `lens` is traced (lens_operator
    called inside jit), Aᵀ falls back to `jax.linear_transpose` of A, which
    scatters. No dense matrix is ever formed.

    Both functions are pure and linear, and work under jit, vmap (e.g. over
    chains) and grad, on [n, n] / [n, n, C] sources and [m, m] / [m, m, C] images.

    Args:
      lens: lens parameters; checked (finite, q > 0) when concrete.
      geometry: the grids and the PSF.

    Returns:
      (A, AT) with A: [n, n(, C)] → [m, m(, C)] and AT: [m, m(, C)] → [n, n(, C)].
    """
    check_lens(lens)
    bx, by, cells = _trace(lens, geometry)
    n = geometry.src_npix

    def A(source):
        source = jnp.asarray(source)
        _check_source(source, geometry)
        return _forward(source, cells, geometry)

    matrix = _adjoint_interpolation(bx, by, geometry) if _is_concrete((bx, by)) else None

    def AT(image):
        image = jnp.asarray(image)
        _check_image(image, geometry)
        if matrix is None:
            primal = jax.ShapeDtypeStruct((n, n) + image.shape[2:], image.dtype)
            (out,) = jax.linear_transpose(A, primal)(image)
            return out
        return _adjoint(image, matrix, geometry)

    return A, AT


@functools.partial(jax.jit, static_argnums=1)
def _trace(lens: LensParams, geometry: Geometry):
    x, y = _fine_grid(geometry, jnp.result_type(float))
    bx, by = ray_trace(x, y, lens)
    return bx, by, bilinear_cells(bx, by, geometry.src_npix, geometry.src_fov)


_stencil = jax.jit(bilinear_stencil, static_argnums=(2, 3))


def _adjoint_interpolation(bx, by, geometry: Geometry) -> BucketedRows:
    """Bᵀ (or (P B)ᵀ without PSF) as a bucketed sparse matrix, from concrete rays."""
    index, weight = _stencil(bx, by, geometry.src_npix, geometry.src_fov)
    index, weight = np.asarray(index), np.asarray(weight, np.float64)
    f = geometry.fine_npix
    fine = np.arange(f * f)
    if geometry.psf is None:
        p = geometry.pool
        cols = (fine // f // p) * geometry.img_npix + (fine % f) // p
        weight = weight / p**2
    else:
        cols = fine
    cols = np.broadcast_to(cols.reshape(f, f, 1), index.shape)
    return bucketed_rows(index, cols, weight, geometry.src_npix**2, dtype=bx.dtype)


def _detector_transpose(image: jax.Array, geometry: Geometry) -> jax.Array:
    """Adjoint of PSF-then-pool: upsample / pool², then correlate with the PSF."""
    p = geometry.pool
    fine = jnp.repeat(jnp.repeat(image, p, axis=0), p, axis=1) * (1.0 / p**2)
    if geometry.psf is not None:
        fine = convolve_psf(fine, geometry.psf_array[::-1, ::-1])
    return fine


def simulate(
    key: jax.Array,
    source: jax.typing.ArrayLike,
    lens: LensParams,
    geometry: Geometry,
    sigma_n: jax.typing.ArrayLike,
) -> jax.Array:
    """Noisy observation y = render(source, lens, geometry) + σ_n · N(0, 1).

    Args:
      key: a PRNG key (jax.random.key).
      source: [n, n] or [n, n, C].
      lens: lens parameters.
      geometry: the grids and the PSF.
      sigma_n: noise standard deviation, a positive scalar or a per-pixel map:
        [m, m] (shared by all bands) or anything broadcastable to [m, m(, C)].

    Returns:
      The noisy image y only, [m, m] or [m, m, C] (call `render` for the clean one).
    """
    clean = render(source, lens, geometry)
    sigma_n = jnp.asarray(sigma_n, clean.dtype)
    if sigma_n.ndim == 2 and clean.ndim == 3:
        sigma_n = sigma_n[..., None]  # one [m, m] map for every band
    try:
        shape = jnp.broadcast_shapes(sigma_n.shape, clean.shape)
    except ValueError as err:
        raise ValueError(
            f"sigma_n of shape {sigma_n.shape} does not broadcast to the image shape {clean.shape}"
        ) from err
    if shape != clean.shape:
        raise ValueError(f"sigma_n of shape {sigma_n.shape} would enlarge the image shape {clean.shape}")
    if _is_concrete(sigma_n):
        s = np.asarray(sigma_n)
        if not np.all(np.isfinite(s)) or not np.all(s > 0):
            raise ValueError("sigma_n must be finite and > 0 everywhere")
    return clean + sigma_n * jax.random.normal(key, clean.shape, clean.dtype)
