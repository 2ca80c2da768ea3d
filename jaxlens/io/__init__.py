"""FITS, JSON and NPZ input/output with validation at the boundary.

Everything read from disk is checked here, once, with errors that name the file
and the problem; the rest of the package can then assume finite float32 arrays
of the right shape.

Conventions:

* A FITS image [NAXIS2, NAXIS1] is read as a numpy array [H, W] whose index
  [i, j] is the pixel at (x_j, y_i), FITS origin at lower-left.
* Samples are [N, H, W, C] in memory. On disk, ``samples.fits`` holds a cube
  [N, H, W] when C = 1 and a hypercube [N, C, H, W] otherwise (FITS puts the
  fastest axis first, so NAXIS1 = W, NAXIS2 = H). ``samples.npz`` holds the
  in-memory layout unchanged, plus the header as JSON.
* Settings go into FITS headers as standard keywords when the name has at most
  eight characters from ``A-Z 0-9 _ -`` (case-insensitive) and as ``HIERARCH``
  cards otherwise. Long strings use ``CONTINUE`` cards.
* Writes go to a temporary file in the destination folder and are renamed into
  place, so a killed run never leaves a truncated file under the final name.

Reading lives in `jaxlens.io.read`, writing and the output folder in `jaxlens.io.write`;
both are re-exported here, so callers use ``from jaxlens import io``.
"""

from jaxlens.io.read import LENS_FIELDS, read_image, read_lens, read_noise, read_psf, read_samples
from jaxlens.io.write import (OutputExistsError, environment, fits_header, prepare_out_dir, save_arrays, write_lens,
                              write_map, write_results, write_samples, write_text)

__all__ = [
    "LENS_FIELDS",
    "OutputExistsError",
    "environment",
    "fits_header",
    "prepare_out_dir",
    "read_image",
    "read_lens",
    "read_noise",
    "read_psf",
    "read_samples",
    "save_arrays",
    "write_lens",
    "write_map",
    "write_results",
    "write_samples",
    "write_text",
]
