"""FITS, JSON and NPZ input/output with validation at the boundary.

Everything read from disk is checked here, once, with errors that name the file
and the problem; the rest of the package can then assume finite float32 arrays
of the right shape.

Conventions:

* A FITS image [NAXIS2, NAXIS1] is read as a numpy array [H, W] whose index
  [i, j] is the pixel at (x_j, y_i), FITS origin at lower-left (DESIGN.md).
* Samples are [N, H, W, C] in memory. On disk, ``samples.fits`` holds a cube
  [N, H, W] when C = 1 and a hypercube [N, C, H, W] otherwise (FITS puts the
  fastest axis first, so NAXIS1 = W, NAXIS2 = H). ``samples.npz`` holds the
  in-memory layout unchanged, plus the header as JSON.
* Settings go into FITS headers as standard keywords when the name has at most
  eight characters from ``A-Z 0-9 _ -`` (case-insensitive) and as ``HIERARCH``
  cards otherwise. Long strings use ``CONTINUE`` cards.
* Writes go to a temporary file in the destination folder and are renamed into
  place, so a killed run never leaves a truncated file under the final name.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyError

__all__ = [
    "LENS_FIELDS",
    "OutputExistsError",
    "fits_header",
    "prepare_out_dir",
    "read_image",
    "read_lens",
    "read_noise",
    "read_psf",
    "read_samples",
    "write_lens",
    "write_map",
    "write_samples",
]

LENS_FIELDS = ("theta_e", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")

_PSF_SUM_ATOL = 1e-3
_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
# Structural keywords astropy manages; a settings dict must not override them.
_RESERVED = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|XTENSION|END|BSCALE|BZERO)$")
_CHUNK_RE = re.compile(r"^chunk_(\d{5})\.npz$")
_OWN_OUTPUTS = ("samples.fits", "samples.npz", "settings.json")


class OutputExistsError(ValueError):
    """The output folder already holds results and neither resume nor overwrite was asked for."""


# --------------------------------------------------------------------------- reading


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


def write_lens(path: str | os.PathLike, lens) -> Path:
    """Writes lens parameters (a `LensParams` or a mapping) as JSON readable by `read_lens`."""
    if isinstance(lens, Mapping):
        raw = dict(lens)
    else:
        try:
            raw = {k: getattr(lens, k) for k in LENS_FIELDS}
        except AttributeError as err:
            raise ValueError(f"write_lens needs the fields {list(LENS_FIELDS)}: {err}") from err
    for key in list(raw):
        arr = np.asarray(raw[key]) if not isinstance(raw[key], str) else raw[key]
        if isinstance(arr, np.ndarray):
            if arr.size != 1:
                raise ValueError(f"write_lens writes one lens; {key} has shape {arr.shape}")
            raw[key] = arr.item()
    values = _lens_dict(raw, "")
    return _atomic_write_text(Path(path), json.dumps(values, indent=2) + "\n")


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


# --------------------------------------------------------------------------- headers


def _card_value(key: str, value):
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)  # FITS has no NaN/Inf literal
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        try:
            value = json.dumps(_jsonable(value))
        except (TypeError, ValueError) as err:
            raise ValueError(f"header value for {key!r} is not representable: {value!r}") from err
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"header value for {key!r} must be printable ASCII, got {value!r}")
    return value


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def fits_header(settings: Mapping[str, Any] | None = None, *, bunit: str | None = None) -> fits.Header:
    """Builds a FITS header from a flat settings mapping.

    Keys of at most eight characters from ``A-Z 0-9 _ -`` become standard
    (upper-case) keywords; any other key becomes a ``HIERARCH`` card keeping its
    spelling. Values may be bool, int, float, str or paths; lists and dicts are
    stored as JSON strings and None as the string "None". ORIGIN and DATE are
    always set.

    Raises:
      ValueError: a structural keyword (NAXIS, BITPIX, ...), a key or value
        that is not printable ASCII, or a card that cannot fit FITS's 80 columns.
    """
    header = fits.Header()
    from jaxlens import __version__

    header["ORIGIN"] = (f"jaxlens {__version__}", "software that wrote this file")
    header["DATE"] = (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        "UTC time of writing",
    )
    if bunit is not None:
        header["BUNIT"] = (_card_value("BUNIT", bunit), "pixel value unit")
    for key, value in (settings or {}).items():
        key = str(key)
        if not key or not key.isascii() or not key.isprintable() or "=" in key:
            raise ValueError(f"header key {key!r} must be non-empty printable ASCII without '='")
        if _RESERVED.match(key.upper()):
            raise ValueError(f"header key {key!r} is a structural FITS keyword; rename it")
        card_key = key.upper() if _STANDARD_KEY.match(key.upper()) else f"HIERARCH {key}"
        value = "None" if value is None else _card_value(key, value)
        card = _checked_card(card_key, value)
        if card.keyword in header:  # the caller's value wins over ORIGIN/DATE/BUNIT
            del header[card.keyword]
        header.append(card, end=True)
    return header


def _checked_card(card_key: str, value) -> fits.Card:
    # astropy only warns (and truncates) when a card overflows 80 columns, so
    # format it and read it back to be sure the value survives.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            card = fits.Card(card_key, value)
            back = list(fits.Header.fromstring(card.image).values())
        except (ValueError, VerifyError) as err:
            back, card = [err], None
    if card is None or back != [value]:
        raise ValueError(f"header card {card_key!r} = {value!r} does not fit a FITS header")
    return card


def _linear_wcs(header: fits.Header, shape_hw: tuple[int, int], fov: float | None) -> None:
    if fov is None:
        return
    fov = float(fov)
    if not (math.isfinite(fov) and fov > 0):
        raise ValueError(f"fov must be a positive number of arcsec, got {fov}")
    h, w = shape_hw
    if h != w:
        raise ValueError(f"fov describes square fields; got an image of shape {shape_hw}")
    # FITS pixel p (1-based) has centre (p - (n+1)/2) * fov/n, the jaxlens pixel_grid convention.
    for axis, name in ((1, "X"), (2, "Y")):
        header[f"CTYPE{axis}"] = (f"{name}OFFSET", f"{name.lower()} offset from the field centre")
        header[f"CUNIT{axis}"] = "arcsec"
        header[f"CRPIX{axis}"] = (w + 1) / 2.0
        header[f"CRVAL{axis}"] = 0.0
        header[f"CDELT{axis}"] = (fov / w, "pixel size, arcsec")


# --------------------------------------------------------------------------- writing


def _atomic_replace(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _atomic_write_text(path: Path, text: str) -> Path:
    return _atomic_replace(path, lambda tmp: Path(tmp).write_text(text))


def _finite_float32(array, what: str) -> np.ndarray:
    arr = np.asarray(array, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} has {int(np.count_nonzero(~np.isfinite(arr)))} non-finite values")
    return arr


def write_map(
    path: str | os.PathLike,
    image,
    header: Mapping[str, Any] | None = None,
    *,
    bunit: str | None = None,
    fov: float | None = None,
) -> Path:
    """Writes one image [H, W] (or [H, W, C], stored as [C, H, W]) to a FITS file.

    Args:
      path: destination; an existing file is replaced.
      image: the map; NaN is allowed (e.g. for masked pixels of a residual).
      header: settings recorded in the header (see `fits_header`).
      bunit: BUNIT value, e.g. the observation's unit.
      fov: field of view in arcsec; if given, a linear WCS in arcsec is written.
    """
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
    elif arr.ndim != 2:
        raise ValueError(f"write_map takes [H, W] or [H, W, C], got shape {arr.shape}")
    hdr = fits_header(header, bunit=bunit)
    _linear_wcs(hdr, arr.shape[-2:], fov)
    hdu = fits.PrimaryHDU(arr, header=hdr)
    return _atomic_replace(Path(path), lambda tmp: hdu.writeto(tmp, overwrite=True))


def write_samples(
    out_dir: str | os.PathLike,
    samples,
    *,
    header: Mapping[str, Any],
    bunit: str | None = None,
    fov: float | None = None,
) -> tuple[Path, Path]:
    """Writes posterior samples as ``samples.fits`` and ``samples.npz`` in `out_dir`.

    Args:
      out_dir: output folder (created if missing).
      samples: [N, H, W, C] (or [N, H, W], read as C = 1), finite.
      header: the run's settings, recorded in the FITS header and as JSON in the npz.
      bunit: BUNIT of the samples (the source's surface-brightness unit).
      fov: source field of view, arcsec, for a linear WCS.

    Returns:
      (fits path, npz path).
    """
    arr = _finite_float32(samples, "samples")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or min(arr.shape) < 1:
        raise ValueError(f"samples must be [N, H, W, C], got shape {np.shape(samples)}")
    n, h, w, c = arr.shape
    hdr = fits_header(header, bunit=bunit)
    _linear_wcs(hdr, (h, w), fov)
    cube = arr[..., 0] if c == 1 else np.moveaxis(arr, -1, 1)
    axis_n = 3 if c == 1 else 4
    if c > 1:
        hdr["CTYPE3"] = ("BAND", "channel index")
    hdr[f"CTYPE{axis_n}"] = ("SAMPLE", "posterior sample index")
    hdr["NSAMPLE"] = (n, "number of posterior samples")
    hdr["NCHAN"] = (c, "number of channels (bands)")
    out_dir = Path(out_dir)
    hdu = fits.PrimaryHDU(cube, header=hdr)
    fits_path = _atomic_replace(out_dir / "samples.fits", lambda tmp: hdu.writeto(tmp, overwrite=True))
    meta = json.dumps(_jsonable(dict(header)), sort_keys=True)

    def _write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, samples=arr, header=np.array(meta))

    npz_path = _atomic_replace(out_dir / "samples.npz", _write_npz)
    return fits_path, npz_path


# --------------------------------------------------------------------------- output folder


def prepare_out_dir(out: str | os.PathLike, *, resume: bool, overwrite: bool) -> Path:
    """Creates or checks the output folder before anything is computed.

    * A missing or empty folder is created/used.
    * A non-empty folder needs `resume` (keep its chunks and continue) or
      `overwrite` (delete this package's own outputs: chunks/ (chunk files
      and manifest), samples.*, settings.json; other files are left, and
      replaced only when rewritten).

    Raises:
      OutputExistsError: non-empty folder without resume or overwrite.
      ValueError: both flags, or `out` is a file.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: pick one")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (resume or overwrite):
            raise OutputExistsError(
                f"--out {out} is not empty; pass --resume to continue a run there, or --overwrite "
                "to replace its results (nothing was written)"
            )
        if overwrite:
            for name in _OWN_OUTPUTS:
                (out / name).unlink(missing_ok=True)
            chunks = out / "chunks"
            if chunks.is_dir():  # jaxlens.sample.chunks layout: chunk files, manifest, temp files
                for p in chunks.iterdir():
                    if p.is_file() and (_CHUNK_RE.match(p.name) or p.name == "manifest.json"
                                        or p.name.startswith(".tmp-")):
                        p.unlink()
                if not any(chunks.iterdir()):
                    shutil.rmtree(chunks)
    out.mkdir(parents=True, exist_ok=True)
    return out
