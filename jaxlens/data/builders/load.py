"""`load_source`: prepare a data set if needed, then open it for random access."""

from __future__ import annotations

import hashlib
import os
import re

import tensorflow_datasets as tfds

from jaxlens.data.builders.datasets import (
    CutoutConfig,
    FitsFolder,
    ProceduralConfig,
    ProceduralGalaxies,
    Probes,
    fits_files,
)
from jaxlens.data.normalize import Normalization

__all__ = ["DATASETS", "load_source", "make_builder"]

DATASETS = ("procedural_galaxies", "probes", "fits_folder")
_CLASSES = {"procedural_galaxies": ProceduralGalaxies, "probes": Probes, "fits_folder": FitsFolder}


def _folder_prefix(manual_dir: str) -> str:
    path = os.path.realpath(manual_dir)
    base = re.sub(r"[^a-z0-9]+", "_", os.path.basename(path).lower()).strip("_")[:24] or "fits"
    return f"{base}_{hashlib.sha1(path.encode()).hexdigest()[:8]}_"


def make_builder(name: str, data_dir: str, *, npix: int, channels: int = 1, manual_dir: str | None = None,
                 count: int | None = None, seed_offset: int = 0,
                 normalization: str | Normalization | None = None, bands=None, centre: str = "centroid",
                 crop: int | None = None, allow_resize: bool = True, validation_fraction: float = 0.1):
    """The TFDS builder that `load_source` uses (same arguments); nothing is written."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {DATASETS}")
    if npix < 4:
        raise ValueError(f"npix must be >= 4, got {npix}")
    if name == "procedural_galaxies":
        if channels != 1:
            raise ValueError(f"procedural galaxies have one band; got channels={channels}")
        config = ProceduralConfig.make(npix=npix, count=20000 if count is None else int(count), seed_offset=seed_offset,
                                       normalization="none" if normalization is None else normalization)
    else:
        if name == "fits_folder" and manual_dir is None:
            raise ValueError("fits_folder needs manual_dir, the folder of FITS cutouts (it names the data set)")
        prefix = _folder_prefix(manual_dir) if name == "fits_folder" else ""
        config = CutoutConfig.make(prefix=prefix, npix=npix, channels=channels, bands=bands, centre=centre,
                                   crop=crop, allow_resize=allow_resize,
                                   normalization="peak" if normalization is None else normalization,
                                   validation_fraction=validation_fraction)
    cls = _CLASSES[name]
    # TFDS refuses a config object that merely shares its name with a predefined one, and
    # procedural names are parsed back into configs, so pass the name where it resolves.
    known = cls.get_builder_config(config.name) is not None
    return cls(config=config.name if known else config, data_dir=data_dir)


def _check_data_dir(data_dir: str) -> str:
    if not data_dir:
        raise ValueError("data_dir is empty; give the directory where TFDS writes and reads data sets")
    data_dir = os.path.abspath(os.path.expanduser(os.fspath(data_dir)))
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} exists and is not a directory")
    if not os.path.isdir(os.path.dirname(data_dir)):
        raise ValueError(f"data_dir {data_dir}: its parent directory does not exist")
    return data_dir


def load_source(name: str, data_dir: str, *, split: str = "train", npix: int, channels: int = 1,
                manual_dir: str | None = None, count: int | None = None, seed_offset: int = 0,
                normalization: str | Normalization | None = None, bands=None, centre: str = "centroid",
                crop: int | None = None, allow_resize: bool = True, validation_fraction: float = 0.1):
    """Prepare a data set in ``data_dir`` if it is not there yet, and open one split.

    Args:
      name: 'procedural_galaxies', 'probes' or 'fits_folder'.
      data_dir: where TFDS writes and reads array_record files (created if its parent exists).
      split: 'train' or 'validation'; TFDS slices such as 'train[:100]' work too.
      npix: image side in pixels.
      channels: bands per image (C). Procedural galaxies have one.
      manual_dir: directory of FITS cutouts (probes, fits_folder); only needed to build.
      count: procedural: number of training galaxies (default 20000; validation gets
        count // 10). probes / fits_folder: keep at most the first ``count`` examples of the split.
      seed_offset: procedural: first training seed.
      normalization: a `Normalization` or its tag ('peak', 'sum', 'none', 'fixed1.48_clip1.48').
        Default: 'none' for procedural galaxies (already peak ~1), 'peak' for cutouts.
      bands, centre, crop, allow_resize, validation_fraction: cutout options, see
        `jaxlens.data.builders.datasets` and `jaxlens.data.builders.cutouts`.

    Returns:
      A TFDS ``ArrayRecordDataSource``: ``len(src)``, ``src[i]`` → ``{'image': float32
      [npix, npix, C], 'id': bytes}``, ``src.__getitems__(indices)`` for batches.

    Raises:
      ValueError: unknown name, missing data_dir parent or manual_dir, images that are not
        npix wide (with allow_resize=False), non-finite pixels, an empty split.

    With several JAX processes, process 0 prepares first and the others open the files
    after a barrier (data_dir should be on a shared file system; otherwise each host
    builds its own identical copy).
    """
    data_dir = _check_data_dir(data_dir)
    if manual_dir is not None:
        manual_dir = os.path.abspath(os.path.expanduser(os.fspath(manual_dir)))
    builder = make_builder(name, data_dir, npix=npix, channels=channels, manual_dir=manual_dir,
                           count=count if name == "procedural_galaxies" else None, seed_offset=seed_offset,
                           normalization=normalization, bands=bands, centre=centre, crop=crop,
                           allow_resize=allow_resize, validation_fraction=validation_fraction)
    _prepare(builder, name, manual_dir)
    base = split.split("[")[0]
    if base not in builder.info.splits:
        raise ValueError(f"{name}: no split {base!r}; available: {sorted(builder.info.splits)}")
    if name != "procedural_galaxies" and count is not None and "[" not in split:
        if int(count) < builder.info.splits[base].num_examples:
            split = f"{split}[:{int(count)}]"
    source = builder.as_data_source(split=split)
    shape = tuple(builder.info.features["image"].shape)
    if shape != (npix, npix, channels):
        raise ValueError(f"{name} in {builder.data_dir} stores images of shape {shape}, "
                         f"not ({npix}, {npix}, {channels})")
    if len(source) == 0:
        raise ValueError(f"{name}: split {split!r} is empty")
    return source


def _prepare(builder, name: str, manual_dir: str | None) -> None:
    import jax

    def run():
        if builder.is_prepared():
            return
        if name != "procedural_galaxies" and (manual_dir is None or not os.path.isdir(manual_dir)):
            raise ValueError(f"{name} is not prepared in {builder.data_dir} and manual_dir={manual_dir!r} is not a "
                             "directory; pass manual_dir=<folder of FITS cutouts> (see docs/data.md)")
        if name != "procedural_galaxies":
            fits_files(manual_dir)  # a clear error for an empty folder, before TFDS's own
        config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
        builder.download_and_prepare(download_config=config)

    if jax.process_count() == 1:
        return run()
    from jax.experimental import multihost_utils

    if jax.process_index() == 0:
        run()
    multihost_utils.sync_global_devices(f"jaxlens.data prepared {builder.name}/{builder.builder_config.name}")
    if jax.process_index() != 0:
        run()

