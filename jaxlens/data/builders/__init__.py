"""TFDS array_record builders and `load_source` (see `datasets` for splits and layout)."""

from jaxlens.data.builders.cutouts import area_resize, centre_crop, galaxy_centre, prepare_cutout, read_fits_image
from jaxlens.data.builders.datasets import (
    HELD_OUT_SEED_START,
    PROBES_COUNT,
    VALIDATION_SEED_START,
    CutoutConfig,
    FitsFolder,
    ProceduralConfig,
    ProceduralGalaxies,
    Probes,
    split_of,
)
from jaxlens.data.builders.load import DATASETS, load_source, make_builder

__all__ = [
    "DATASETS", "HELD_OUT_SEED_START", "PROBES_COUNT", "VALIDATION_SEED_START", "CutoutConfig", "FitsFolder",
    "ProceduralConfig", "ProceduralGalaxies", "Probes", "area_resize", "centre_crop", "galaxy_centre",
    "load_source", "make_builder", "prepare_cutout", "read_fits_image", "split_of",
]
