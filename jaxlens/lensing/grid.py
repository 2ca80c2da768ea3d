"""Pixel grids: square fields of view centred on the origin.

Pixel k of an n-pixel axis over a field of view `fov` (arcsec) has its centre at
(k − (n − 1)/2) · fov/n. Array index [i, j] is the pixel at (x_j, y_i): x grows
with the column j and y with the row i (FITS, origin at the lower left).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Geometry", "pixel_centers", "pixel_grid", "pixel_scale"]

_PSF_SUM_RTOL = 1e-4


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


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Static description of the source grid, the ray-tracing grid and the detector.

    A frozen dataclass, validated on construction (ValueError names the bad
    field), immutable and hashable: the PSF is stored as a tuple of tuples of
    floats and the hash is computed once. Pass it as a `jax.jit` static argument
    or close over it; it is deliberately not a pytree, since every field fixes
    array shapes or the structure of the computation.

    Attributes:
      src_npix: source side, pixels (the source is src_npix × src_npix).
      src_fov: source field of view, arcsec, centred on the origin.
      fine_npix: side of the image-plane grid that is ray-traced, pixels.
      img_fov: image field of view, arcsec (same for the fine and observed grids).
      pool: average-pooling factor; the observation has fine_npix // pool pixels
        on a side, and pool must divide fine_npix.
      psf: optional PSF sampled on the *fine* grid: odd-sized 2-D, finite,
        non-negative, summing to 1. Any array-like is accepted and converted.
    """

    src_npix: int
    src_fov: float
    fine_npix: int
    img_fov: float
    pool: int
    psf: tuple[tuple[float, ...], ...] | None = None
    _hash: int = dataclasses.field(init=False, repr=False, compare=False, default=0)

    def __post_init__(self):
        for name in ("src_npix", "fine_npix", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"Geometry.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        for name in ("src_fov", "img_fov"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"Geometry.{name} must be a positive number of arcsec, got {value!r}")
            object.__setattr__(self, name, value)
        if self.fine_npix % self.pool:
            raise ValueError(
                f"Geometry.pool={self.pool} does not divide fine_npix={self.fine_npix}"
            )
        if self.psf is not None:
            object.__setattr__(self, "psf", _validated_psf(self.psf))
        # jit hashes static arguments on every call; a large PSF makes that slow.
        object.__setattr__(self, "_hash", hash((self.src_npix, self.src_fov, self.fine_npix,
                                                self.img_fov, self.pool, self.psf)))

    def __hash__(self) -> int:
        return self._hash

    @property
    def img_npix(self) -> int:
        """Side of the observed image, pixels."""
        return self.fine_npix // self.pool

    @property
    def src_shape(self) -> tuple[int, int]:
        return (self.src_npix, self.src_npix)

    @property
    def img_shape(self) -> tuple[int, int]:
        return (self.img_npix, self.img_npix)

    @property
    def psf_array(self) -> np.ndarray | None:
        """The PSF as a float64 numpy array, or None."""
        return None if self.psf is None else np.asarray(self.psf, dtype=np.float64)


def _validated_psf(psf) -> tuple[tuple[float, ...], ...]:
    arr = np.asarray(psf, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"PSF must be a 2-D array, got shape {arr.shape}")
    if arr.shape[0] % 2 == 0 or arr.shape[1] % 2 == 0:
        raise ValueError(f"PSF must have odd sizes so that it has a centre pixel, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("PSF contains non-finite values")
    if np.any(arr < 0):
        raise ValueError("PSF has negative values")
    total = arr.sum()
    if abs(total - 1.0) > _PSF_SUM_RTOL:
        raise ValueError(f"PSF must be normalised to sum 1, it sums to {total:.6g}")
    return tuple(tuple(float(v) for v in row) for row in arr)
