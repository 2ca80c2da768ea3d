"""Reading FITS images, noise maps, PSFs, lens JSON and samples, with validation at the boundary."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from astropy.io import fits

__all__ = ["LENS_FIELDS", "read_image", "read_lens", "read_noise", "read_psf", "read_samples"]

LENS_FIELDS = ("theta_e", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")

_PSF_SUM_ATOL = 1e-3


def _check_file(path, name: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(f"{name}: file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{name}: not a regular file: {path}")
    return path


def _image_hdu(hdul: fits.HDUList, hdu, path: Path, name: str):
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (KeyError, IndexError) as err:
            raise ValueError(f"{name}: {path} has no HDU {hdu!r}") from err
        if chosen.data is None or not chosen.is_image:
            raise ValueError(f"{name}: HDU {hdu!r} of {path} holds no image data")
        return chosen
    for candidate in hdul:
        if candidate.is_image and candidate.data is not None:
            return candidate
    raise ValueError(f"{name}: {path} holds no image data in any HDU")


def read_image(
    path: str | os.PathLike,
    *,
    name: str = "observation",
    allow_nonfinite: bool = False,
    hdu: int | str | None = None,
    return_header: bool = False,
):
    """Reads a 2-D image from a FITS file.

    The primary HDU is used when it holds data, else the first image extension,
    unless `hdu` names one. Leading axes of length 1 (NAXIS3 = 1, ...) are
    dropped; any other shape than 2-D is an error.

    Args:
      path: FITS file.
      name: what the image is, for error messages ("observation", "noise map").
      allow_nonfinite: accept NaN and ±Inf pixels.
      hdu: index or EXTNAME of the HDU to read.
      return_header: also return the HDU's header.

    Returns:
      float32 array [H, W] in native byte order, or (array, astropy Header).

    Raises:
      ValueError: missing or unreadable file, no image data, wrong ndim, or
        non-finite pixels when not allowed.
    """
    path = _check_file(path, name)
    try:
        with fits.open(path, memmap=False) as hdul:
            chosen = _image_hdu(hdul, hdu, path, name)
            data = np.array(chosen.data, dtype=np.float32)  # applies BSCALE/BZERO, copies
            header = chosen.header.copy()
    except OSError as err:
        raise ValueError(f"{name}: {path} is not a readable FITS file ({err})") from err
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D image in {path}, got shape {data.shape}; "
            "select one plane or band first"
        )
    if data.size == 0:
        raise ValueError(f"{name}: {path} holds an empty image")
    if not allow_nonfinite:
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise ValueError(
                f"{name}: {path} has {bad} non-finite pixel(s) (NaN/Inf); mask them through an "
                "infinite noise value instead, or replace them"
            )
    return (data, header) if return_header else data


def _parse_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def read_noise(
    path_or_value, *, shape: tuple[int, int] | None = None
) -> float | np.ndarray:
    """Reads the per-pixel noise standard deviation σ_n.

    Args:
      path_or_value: a positive number, a string holding one ("0.05"), a FITS
        noise map, or an array. In a map, +Inf marks a masked pixel (it then
        carries no information); NaN, −Inf and values ≤ 0 are errors.
      shape: if given, the [H, W] shape a map must have (the observation's).

    Returns:
      A positive float, or a float32 map [H, W].
    """
    number = _parse_number(path_or_value)
    if number is not None:
        if not (math.isfinite(number) and number > 0):
            raise ValueError(f"noise σ_n must be a finite positive number, got {path_or_value!r}")
        return number
    if isinstance(path_or_value, (str, os.PathLike)):
        sigma = read_image(path_or_value, name="noise map", allow_nonfinite=True)
        where = f" in {path_or_value}"
    else:
        sigma = np.asarray(path_or_value, dtype=np.float32)
        where = ""
        if sigma.ndim != 2:
            raise ValueError(f"noise map must be 2-D [H, W], got shape {sigma.shape}")
    if np.isnan(sigma).any():
        raise ValueError(f"noise map{where} has NaN values; use +inf to mask a pixel")
    finite = np.isfinite(sigma)
    if np.any(sigma[~finite] < 0):
        raise ValueError(f"noise map{where} has -inf values; use +inf to mask a pixel")
    if np.any(sigma[finite] <= 0):
        raise ValueError(f"noise map{where} must be > 0 where finite, min is {sigma[finite].min()}")
    if not finite.any():
        raise ValueError(f"noise map{where} masks every pixel (all +inf)")
    if shape is not None and tuple(sigma.shape) != tuple(shape):
        raise ValueError(f"noise map{where} has shape {sigma.shape}, the observation {tuple(shape)}")
    return sigma


def read_psf(path: str | os.PathLike, *, normalize: bool = False) -> np.ndarray:
    """Reads a PSF kernel sampled on the fine (ray-tracing) grid.

    The kernel must be 2-D with odd sides, finite and non-negative. A sum within
    1e-3 of 1 is rescaled to exactly 1; a larger departure is an error unless
    `normalize` is set.

    Returns:
      float64 array [kh, kw] summing to 1.
    """
    psf = read_image(path, name="PSF", allow_nonfinite=False).astype(np.float64)
    if psf.shape[0] % 2 == 0 or psf.shape[1] % 2 == 0:
        raise ValueError(f"PSF in {path} must have odd sides so it has a centre pixel, got {psf.shape}")
    if np.any(psf < 0):
        raise ValueError(f"PSF in {path} has negative values (min {psf.min():.3g}); clip them first")
    total = float(psf.sum())
    if total <= 0:
        raise ValueError(f"PSF in {path} sums to {total}, not a kernel")
    if abs(total - 1.0) > _PSF_SUM_ATOL and not normalize:
        raise ValueError(
            f"PSF in {path} sums to {total:.6g}, not 1 within {_PSF_SUM_ATOL}; "
            "pass normalize=True to rescale it"
        )
    return psf / total


def _lens_dict(data, where: str) -> dict[str, float]:
    if not isinstance(data, Mapping):
        raise ValueError(f"lens{where} must be a JSON object with keys {list(LENS_FIELDS)}")
    missing = [k for k in LENS_FIELDS if k not in data]
    unknown = [k for k in data if k not in LENS_FIELDS]
    if missing or unknown:
        raise ValueError(
            f"lens{where}: missing keys {missing}, unknown keys {unknown}; "
            f"expected exactly {list(LENS_FIELDS)}"
        )
    out = {}
    for key in LENS_FIELDS:
        value = data[key]
        number = None if isinstance(value, str) else _parse_number(value)
        if number is None or not math.isfinite(number):
            raise ValueError(f"lens{where}: {key} must be a finite number, got {value!r}")
        out[key] = number
    if out["theta_e"] <= 0:
        raise ValueError(f"lens{where}: theta_e must be > 0 arcsec, got {out['theta_e']}")
    if math.hypot(out["e1"], out["e2"]) >= 1:
        raise ValueError(f"lens{where}: |(e1, e2)| must be < 1, got ({out['e1']}, {out['e2']})")
    return out


def read_lens(path: str | os.PathLike):
    """Reads lens parameters from a JSON object with exactly the seven `LENS_FIELDS`.

    Example file: ``{"theta_e": 1.2, "e1": 0.1, "e2": -0.05, "center_x": 0.0,
    "center_y": 0.0, "gamma1": 0.02, "gamma2": 0.0}`` (arcsec for theta_e and
    the centre, lenstronomy conventions).

    Returns:
      `jaxlens.lensing.LensParams` with float fields.
    """
    path = _check_file(path, "lens")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"lens: {path} is not valid JSON ({err})") from err
    values = _lens_dict(data, f" in {path}")
    from jaxlens.lensing import LensParams  # lazy: io must not pull in the physics

    return LensParams(**values)


def read_samples(path: str | os.PathLike) -> np.ndarray:
    """Reads samples written by `write_samples` (``.npz`` or ``.fits``) as float32 [N, H, W, C]."""
    path = _check_file(path, "samples")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "samples" not in data:
                raise ValueError(f"samples: {path} has no 'samples' array")
            out = np.asarray(data["samples"], dtype=np.float32)
    else:
        with fits.open(path, memmap=False) as hdul:
            cube = np.array(_image_hdu(hdul, None, path, "samples").data, dtype=np.float32)
        if cube.ndim == 3:
            out = cube[..., None]
        elif cube.ndim == 4:
            out = np.moveaxis(cube, 1, -1)
        else:
            raise ValueError(f"samples: {path} holds shape {cube.shape}, expected 3-D or 4-D")
    if out.ndim != 4:
        raise ValueError(f"samples: {path} holds shape {out.shape}, expected [N, H, W, C]")
    return out
