"""TFDS builders (array_record format, no TensorFlow needed): procedural galaxies,
PROBES cutouts and any folder of FITS cutouts.

Each example is ``{'image': float32 [npix, npix, C], 'id': str}`` and the examples of a
split are stored in a fixed order (``disable_shuffling``), so index k of a split is
always the same galaxy. Files land in
``<data_dir>/<dataset>/<config name>/<version>/<dataset>-<split>.array_record-*``.

``procedural_galaxies`` (config name ``npix{N}_n{count}_s{offset}[_v{val}][_{norm}]``)
  train seeds      [offset, offset + count)
  validation seeds [VALIDATION_SEED_START + offset, ... + val)   (val = max(1, count // 10))
  held-out lenses  seeds ≥ HELD_OUT_SEED_START, never in a data set.
  id = the seed (as text). Any name following that pattern is accepted, so
  ``tfds.data_source('procedural_galaxies/npix64_n1000_s0', data_dir=...)`` works.

``probes`` / ``fits_folder`` (manual_dir = a directory of ``*.fits`` cutouts, one galaxy
per file; see `jaxlens.data.builders.cutouts` for how a file becomes an image)
  A file goes to validation when crc32(file name) / 2³² < validation_fraction, so a
  file's split does not change when files are added. id = the file name.
  The fits_folder config name includes a hash of the folder path, so several folders
  can share one data_dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import zlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import utils as tfds_utils

from jaxlens.data.builders.cutouts import FITS_SUFFIXES, prepare_cutout, read_fits_image, select_bands
from jaxlens.data.normalize import Normalization
from jaxlens.data.procedural import HELD_OUT_SEED_START, VALIDATION_SEED_START, procedural_galaxy

__all__ = ["ProceduralGalaxies", "ProceduralConfig", "Probes", "FitsFolder", "CutoutConfig",
           "VALIDATION_SEED_START", "HELD_OUT_SEED_START", "PROBES_COUNT", "split_of", "fits_files"]

PROBES_COUNT = 2059  # galaxies used by Adam et al. (2022)

log = logging.getLogger(__name__)


def _features(npix: int, channels: int):
    return tfds.features.FeaturesDict({
        "image": tfds.features.Tensor(shape=(npix, npix, channels), dtype=np.float32),
        "id": tfds.features.Text(),
    })


def _check_image(image: np.ndarray, npix: int, channels: int, name: str) -> np.ndarray:
    if image.shape != (npix, npix, channels):
        raise ValueError(f"{name}: image shape {image.shape} != ({npix}, {npix}, {channels})")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{name}: non-finite pixels after preprocessing")
    return image.astype(np.float32)


class _NoTFBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of our builders: pins `code_path` to this file.

    TFDS's default `code_path` of a builder defined in an installed package checks the
    resource path against `importlib_resources.abc.Traversable`, which needs the
    `importlib_resources` backport that TFDS does not install; the path is only used
    to look for a checksums file, which these builders do not have. Also makes
    array_record the default file format: TFDS writes it without TensorFlow (TFRecord
    writing needs TensorFlow).
    """

    def __init__(self, *, file_format: str = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    @tfds_utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(__file__)


# ----------------------------------------------------------------------------- procedural


@dataclasses.dataclass(eq=False)
class ProceduralConfig(tfds.core.BuilderConfig):
    """npix, number of train galaxies, seed offset, validation count, normalisation tag."""

    npix: int = 64
    count: int = 20000
    seed_offset: int = 0
    validation_count: int | None = None
    normalization: str = "none"

    @classmethod
    def make(cls, *, npix: int, count: int, seed_offset: int = 0, validation_count: int | None = None,
             normalization: str | Normalization | None = "none") -> ProceduralConfig:
        norm = Normalization.parse(normalization).tag
        if npix < 4 or count < 1 or seed_offset < 0:
            raise ValueError(f"need npix >= 4, count >= 1, seed_offset >= 0; got {npix}, {count}, {seed_offset}")
        val = max(1, count // 10) if validation_count is None else int(validation_count)
        if seed_offset + max(count, val) > VALIDATION_SEED_START:
            raise ValueError(f"seed_offset + count must be <= {VALIDATION_SEED_START} so train, validation "
                             "and held-out seeds stay disjoint")
        name = f"npix{npix}_n{count}_s{seed_offset}"
        if val != max(1, count // 10):
            name += f"_v{val}"
        if norm != "none":
            name += f"_{norm}"
        return cls(name=name, npix=npix, count=count, seed_offset=seed_offset, validation_count=val,
                   normalization=norm, description=f"{count} procedural galaxies at {npix}²")

    @classmethod
    def from_name(cls, name: str) -> ProceduralConfig | None:
        m = re.fullmatch(r"npix(\d+)_n(\d+)_s(\d+)(?:_v(\d+))?(?:_(.+))?", name)
        if not m:
            return None
        npix, count, off, val, norm = m.groups()
        return cls.make(npix=int(npix), count=int(count), seed_offset=int(off),
                        validation_count=None if val is None else int(val), normalization=norm or "none")


class ProceduralGalaxies(_NoTFBuilder):
    """Procedural galaxies (`jaxlens.data.procedural`), drawn from disjoint seed ranges."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Sérsic bulge, exponential disk, arms, bars, clumps, dust, mergers."}
    BUILDER_CONFIGS = [ProceduralConfig.make(npix=64, count=20000), ProceduralConfig.make(npix=32, count=1000)]

    @classmethod
    def get_builder_config(cls, name, version=None):
        return super().get_builder_config(name, version) or ProceduralConfig.from_name(name)

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=_features(self.builder_config.npix, 1),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        c = self.builder_config
        return {"train": self._generate_examples(c.seed_offset, c.count),
                "validation": self._generate_examples(VALIDATION_SEED_START + c.seed_offset, c.validation_count)}

    def _generate_examples(self, start: int, count: int):
        c = self.builder_config
        norm = Normalization.parse(c.normalization)
        for seed in range(start, start + count):
            image = norm.apply(procedural_galaxy(seed, c.npix, channel_axis=True))
            yield seed, {"image": _check_image(image, c.npix, 1, f"seed {seed}"), "id": str(seed)}


# ----------------------------------------------------------------------------- FITS cutouts


@dataclasses.dataclass(eq=False)
class CutoutConfig(tfds.core.BuilderConfig):
    """How FITS cutouts become images (see `jaxlens.data.builders.cutouts`)."""

    npix: int = 256
    channels: int = 1
    bands: tuple[int, ...] | None = None
    centre: str = "centroid"
    crop: int | None = None
    allow_resize: bool = True
    normalization: str = "peak"
    validation_fraction: float = 0.1

    @classmethod
    def make(cls, *, prefix: str = "", npix: int, channels: int = 1, bands=None, centre: str = "centroid",
             crop: int | None = None, allow_resize: bool = True,
             normalization: str | Normalization | None = "peak", validation_fraction: float = 0.1):
        norm = Normalization.parse(normalization).tag
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        bands = None if bands is None else tuple(int(b) for b in bands)
        opts = (channels, bands, centre, crop, allow_resize, validation_fraction)
        digest = hashlib.sha1(repr(opts).encode()).hexdigest()[:6]
        name = re.sub(r"[^a-z0-9_]+", "_", f"{prefix}npix{npix}_{norm}_{digest}".lower())
        return cls(name=name, npix=npix, channels=channels, bands=bands, centre=centre, crop=crop,
                   allow_resize=allow_resize, normalization=norm, validation_fraction=validation_fraction)


def fits_files(manual_dir) -> list[str]:
    """Sorted FITS paths in manual_dir; ValueError if it is not a directory or has none."""
    if manual_dir is None or not os.path.isdir(manual_dir):
        raise ValueError(f"manual_dir {manual_dir!r} is not a directory of FITS cutouts")
    files = sorted(os.path.join(manual_dir, f) for f in os.listdir(manual_dir)
                   if f.lower().endswith(FITS_SUFFIXES))
    if not files:
        raise ValueError(f"no FITS files ({', '.join(FITS_SUFFIXES)}) in {manual_dir}")
    return files


def split_of(filename: str, validation_fraction: float) -> str:
    """'train' or 'validation' for a file name, from its crc32 (stable as files are added)."""
    return "validation" if zlib.crc32(os.path.basename(filename).encode()) / 2**32 < validation_fraction else "train"


class _CutoutBuilder(_NoTFBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Put one FITS cutout per galaxy (*.fits, *.fits.gz, ...) in the "
                                    "manual_dir; see docs/data.md.")

    def _info(self):
        c = self.builder_config
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=_features(c.npix, c.channels),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        c = self.builder_config
        files = fits_files(os.fspath(dl_manager.manual_dir))
        self._check_count(len(files))
        splits = {"train": [], "validation": []}
        for f in files:
            splits[split_of(f, c.validation_fraction)].append(f)
        if c.validation_fraction > 0 and not splits["validation"] and len(files) > 1:
            splits["validation"].append(splits["train"].pop())
        if not splits["train"]:
            raise ValueError(f"no training files left in {dl_manager.manual_dir} after the validation split")
        return {k: self._generate_examples(v) for k, v in splits.items() if v}

    def _check_count(self, n: int) -> None:
        pass

    def _generate_examples(self, files):
        c = self.builder_config
        norm = Normalization.parse(c.normalization)
        for key, path in enumerate(files):
            name = os.path.basename(path)
            image = select_bands(read_fits_image(path), channels=c.channels, bands=c.bands, name=path)
            image = prepare_cutout(image, c.npix, centre=c.centre, crop=c.crop, allow_resize=c.allow_resize,
                                   name=path)
            yield key, {"image": _check_image(norm.apply(image), c.npix, c.channels, path), "id": name}


class Probes(_CutoutBuilder):
    """PROBES galaxies (Stone & Courteau 2019; Stone et al. 2021): 2,059 cutouts in Adam et al. (2022).

    manual_dir: one FITS file per galaxy; a (C, H, W) cube holds the bands (g, r, z for the
    DESI Legacy Survey cutouts; ``bands=(0,)`` keeps g). Defaults: 256², peak normalisation.
    """

    BUILDER_CONFIGS = [CutoutConfig.make(npix=256), CutoutConfig.make(npix=64)]

    def _check_count(self, n: int) -> None:
        if n != PROBES_COUNT:
            log.warning("probes: found %d FITS files in the manual_dir; the paper used %d", n, PROBES_COUNT)


class FitsFolder(_CutoutBuilder):
    """Any folder of FITS cutouts (one galaxy per file)."""

    BUILDER_CONFIGS = [CutoutConfig.make(npix=64)]
