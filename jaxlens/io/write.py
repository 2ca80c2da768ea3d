"""Writing FITS maps, sample cubes and lens JSON atomically, and preparing the output folder."""

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

from jaxlens.io.read import LENS_FIELDS, _lens_dict

__all__ = ["OutputExistsError", "fits_header", "prepare_out_dir", "write_lens", "write_map", "write_samples"]

_STANDARD_KEY = re.compile(r"^[A-Z0-9_-]{1,8}$")
_RESERVED = re.compile(r"^(SIMPLE|BITPIX|NAXIS\d*|EXTEND|PCOUNT|GCOUNT|XTENSION|END|BSCALE|BZERO)$")
_CHUNK_RE = re.compile(r"^chunk_(\d{5})\.npz$")
_OWN_OUTPUTS = ("samples.fits", "samples.npz", "settings.json")


class OutputExistsError(ValueError):
    """The output folder already holds results and neither resume nor overwrite was asked for."""


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


def _durable_replace(path, fill) -> Path:
    """`_atomic_replace` writing through `fill(binary file)`, flushed to disk before the rename."""

    def write(tmp):
        with open(tmp, "wb") as f:
            fill(f)
            f.flush()
            os.fsync(f.fileno())

    return _atomic_replace(Path(path), write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes `text` to `path` atomically (a reader sees the old file or the new one, never a part);
    the folder is made if needed."""
    return _durable_replace(path, lambda f: f.write(text.encode()))


def save_arrays(path: str | os.PathLike, **arrays) -> Path:
    """`np.savez` of `arrays` to `path`, atomically (a run stopped mid-write leaves the previous file);
    the folder is made if needed. For caches that let a long run resume."""
    return _durable_replace(path, lambda f: np.savez(f, **arrays))


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

    npz_path = save_arrays(out_dir / "samples.npz", samples=arr, header=np.array(meta))
    return fits_path, npz_path


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
    return write_text(path, json.dumps(values, indent=2) + "\n")



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


def environment() -> dict:
    """Where results were made: date, CPU model and cores, JAX version and devices (for result JSON)."""
    import platform
    import subprocess

    import jax

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        cpu = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    dev = jax.devices()[0]
    return {"date": datetime.date.today().isoformat(), "cpu": cpu, "cores": os.cpu_count(),
            "jax": jax.__version__, "platform": dev.platform, "device": dev.device_kind,
            "device_count": jax.device_count()}


def _command_line(argv: list[str]) -> str:
    """`argv` as a command to type again: a script under the working directory becomes `python -m pkg.mod`,
    so a record names no path of the machine it was made on."""
    import shlex

    script = os.path.abspath(argv[0]) if argv else ""
    rel = os.path.relpath(script, os.getcwd()) if script else ""
    if rel.endswith(".py") and not rel.startswith(".."):
        head = ["python", "-m", rel[:-3].replace(os.sep, ".")]
    else:
        head = [os.path.basename(argv[0])] if argv else []
    return shlex.join(head + list(argv[1:]))


def write_results(path: str, record: dict) -> str:
    """Writes a study's or benchmark's record as JSON, with `environment()` under "environment"; a
    "command" given as an argv list is written as `_command_line(argv)`."""
    if isinstance(record.get("command"), list):
        record = {**record, "command": _command_line(record["command"])}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"environment": environment(), **record}, f, indent=1, default=_json_default)
    return path


def _json_default(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serialisable: {type(v).__name__}")
