"""Training data: procedural galaxies, TFDS array_record builders, normalisation, batches.

  procedural   draw_params, procedural_galaxy(ies): the embedded default galaxies
  profiles     GalaxyParams, render: the light profiles (Sérsic, disk, arms, clumps, ...)
  normalize    Normalization(kind='peak'|'sum'|'fixed'|'none', scale, clip)
  builders     TFDS builders procedural_galaxies, probes, fits_folder; load_source
  pipeline     batch_indices, get_batch (deterministic in (seed, step)), shard_batch

The TFDS names (`load_source`, `make_builder`, the builder classes) are imported on
first use, so procedural galaxies do not pull in tensorflow_datasets. TensorFlow itself
is never needed: array_record files are written and read by TFDS's numpy path.
"""

from jaxlens.data.normalize import NORMALIZATION_KINDS, Normalization
from jaxlens.data.pipeline import (
    all_images,
    augmentation_codes,
    batch_indices,
    dihedral,
    get_batch,
    read_images,
    shard_batch,
)
from jaxlens.data.procedural import (
    HELD_OUT_SEED_START,
    KINDS,
    VALIDATION_SEED_START,
    draw_params,
    procedural_galaxies,
    procedural_galaxy,
)
from jaxlens.data.profiles import GalaxyParams, render, sersic_b

_LAZY = {
    "load_source": "jaxlens.data.builders.load",
    "make_builder": "jaxlens.data.builders.load",
    "DATASETS": "jaxlens.data.builders.load",
    "ProceduralGalaxies": "jaxlens.data.builders.datasets",
    "Probes": "jaxlens.data.builders.datasets",
    "FitsFolder": "jaxlens.data.builders.datasets",
    "PROBES_COUNT": "jaxlens.data.builders.datasets",
}

__all__ = [
    "GalaxyParams", "HELD_OUT_SEED_START", "KINDS", "VALIDATION_SEED_START", "NORMALIZATION_KINDS", "Normalization", "all_images", "augmentation_codes",
    "batch_indices", "dihedral", "draw_params", "get_batch", "procedural_galaxies", "procedural_galaxy",
    "read_images", "render", "sersic_b", "shard_batch", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxlens.data' has no attribute {name!r}")
