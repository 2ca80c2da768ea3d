"""Reading, centring and resizing galaxy cutouts from FITS files (pure numpy + astropy).

A cutout becomes a training image in four steps:
  1. `read_fits_image`: the first HDU holding an image (the primary HDU, else the first
     image extension, compressed ones included), as [H, W, C]. 2D data is one band;
     3D data (C, H, W) in FITS/numpy order is a band cube; leading length-1 axes are
     dropped. Non-finite pixels raise ValueError.
  2. `select_bands`: keep the planes named by ``bands`` (or the first ``channels``).
  3. `centre_crop`: a square window of side ``crop`` (default min(H, W)) centred, to the
     nearest pixel, on the galaxy: the flux-weighted centroid of the positive part of
     the band sum (``centre='centroid'``), its brightest pixel (``'peak'``) or the
     array centre (``'none'``). The shift is by whole pixels, so no pixel is
     interpolated; parts of the window outside the array are zero (sky-subtracted
     cutouts have zero mean sky).
  4. `resize`: to npix × npix. Shrinking averages the input over each output pixel's
     footprint (exact area overlap, so the mean surface brightness is kept and an
     integer factor is plain block averaging); enlarging interpolates linearly between
     pixel centres (`jax.image.resize`, 'linear').
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["FITS_SUFFIXES", "read_fits_image", "select_bands", "centre_crop", "area_resize", "resize",
           "galaxy_centre", "prepare_cutout"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")
CENTRES = ("centroid", "peak", "none")


def read_fits_image(path: str | os.PathLike) -> np.ndarray:
    """The first image in a FITS file, as float64 [H, W, C]."""
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        data = next((h.data for h in hdul if h.is_image and h.data is not None and h.data.ndim >= 2), None)
        if data is None:
            raise ValueError(f"{path}: no image HDU with at least 2 dimensions")
        data = np.array(data, dtype=np.float64)
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[..., None]
    elif data.ndim == 3:
        data = np.moveaxis(data, 0, -1)
    else:
        raise ValueError(f"{path}: image has shape {data.shape}; expected (H, W) or (C, H, W)")
    bad = int(np.sum(~np.isfinite(data)))
    if bad:
        raise ValueError(f"{path}: {bad} non-finite (NaN/inf) pixels; mask or inpaint them before "
                         "building the data set")
    return data


def select_bands(image: np.ndarray, *, channels: int, bands: tuple[int, ...] | None = None,
                 name: str = "image") -> np.ndarray:
    """Keep ``bands`` (indices into the last axis), or the first ``channels`` planes."""
    bands = tuple(range(channels)) if bands is None else tuple(bands)
    if len(bands) != channels:
        raise ValueError(f"bands={bands} has {len(bands)} entries but channels={channels}")
    if max(bands) >= image.shape[-1] or min(bands) < 0:
        raise ValueError(f"{name}: has {image.shape[-1]} band(s); cannot take bands {bands}")
    return image[..., list(bands)]


def galaxy_centre(image: np.ndarray, method: str = "centroid") -> tuple[float, float]:
    """(row, column) of the galaxy in an [H, W, C] image; see the module docstring."""
    if method not in CENTRES:
        raise ValueError(f"centre must be one of {CENTRES}, got {method!r}")
    h, w = image.shape[:2]
    total = image.sum(-1)
    if method == "peak":
        i, j = np.unravel_index(np.argmax(total), total.shape)
        return float(i), float(j)
    pos = np.maximum(total, 0.0)
    if method == "none" or pos.sum() <= 0:
        return (h - 1) / 2, (w - 1) / 2
    norm = pos.sum()
    return float((pos.sum(1) * np.arange(h)).sum() / norm), float((pos.sum(0) * np.arange(w)).sum() / norm)


def centre_crop(image: np.ndarray, centre: tuple[float, float], size: int) -> np.ndarray:
    """A [size, size, C] window centred on ``centre`` to the nearest pixel, zero outside."""
    h, w, c = image.shape
    out = np.zeros((size, size, c), image.dtype)
    i0 = int(np.floor(centre[0] - (size - 1) / 2 + 0.5))
    j0 = int(np.floor(centre[1] - (size - 1) / 2 + 0.5))
    si, sj = slice(max(i0, 0), min(i0 + size, h)), slice(max(j0, 0), min(j0 + size, w))
    if si.start < si.stop and sj.start < sj.stop:
        out[si.start - i0:si.stop - i0, sj.start - j0:sj.stop - j0] = image[si, sj]
    return out


def _overlap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights: fraction of output pixel o covered by input pixel k."""
    edges_out = np.arange(n_out + 1) * (n_in / n_out)
    lo = np.maximum(edges_out[:-1, None], np.arange(n_in)[None, :])
    hi = np.minimum(edges_out[1:, None], np.arange(1, n_in + 1)[None, :])
    return np.clip(hi - lo, 0, None) / (n_in / n_out)


def area_resize(image: np.ndarray, npix: int) -> np.ndarray:
    """Shrink [S, S, C] to [npix, npix, C] by exact area averaging (S >= npix)."""
    s = image.shape[0]
    if image.shape[1] != s or s < npix:
        raise ValueError(f"area_resize needs a square image at least {npix} wide, got {image.shape}")
    m = _overlap_matrix(s, npix)
    return np.einsum("ik,klc,jl->ijc", m, image, m)


def resize(image: np.ndarray, npix: int) -> np.ndarray:
    """[S, S, C] → [npix, npix, C]: area averaging down, linear interpolation up."""
    s = image.shape[0]
    if s == npix:
        return image
    if s > npix:
        return area_resize(image, npix)
    import jax
    import jax.numpy as jnp

    up = jax.image.resize(jnp.asarray(image, jnp.float32), (npix, npix, image.shape[-1]), method="linear")
    return np.asarray(up, np.float64)


def prepare_cutout(image: np.ndarray, npix: int, *, centre: str = "centroid", crop: int | None = None,
                   allow_resize: bool = True, name: str = "image") -> np.ndarray:
    """Centre, crop and resize an [H, W, C] cutout to [npix, npix, C] (float64).

    Args:
      image: [H, W, C] finite surface brightness.
      npix: output side.
      centre: 'centroid', 'peak' or 'none'.
      crop: side of the window cut around the centre before resizing (default min(H, W)).
      allow_resize: if False, the window must already be npix wide.
      name: used in error messages (e.g. the file name).

    Raises:
      ValueError: non-finite pixels, or a window size other than npix with allow_resize=False.
    """
    if image.ndim != 3:
        raise ValueError(f"{name}: expected [H, W, C], got shape {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name}: non-finite (NaN/inf) pixels")
    size = int(crop) if crop else min(image.shape[:2])
    if size != npix and not allow_resize:
        raise ValueError(f"{name}: the {size}x{size} window (image {image.shape[0]}x{image.shape[1]}) "
                         f"is not npix={npix}; allow resizing or set crop={npix}")
    window = centre_crop(image, galaxy_centre(image, centre), size)
    return resize(window, npix)
