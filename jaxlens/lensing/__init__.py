"""The lens forward model: SIE + shear mass, pixel grids, bilinear sources, A and Aᵀ."""

from jaxlens.lensing.diagnostics import AATDiagnostics, aat_diagnostics, normal_operator_norm
from jaxlens.lensing.forward import (
    average_pool,
    check_lens,
    convolve_psf,
    lens_operator,
    render,
    simulate,
)
from jaxlens.lensing.grid import Geometry, pixel_centers, pixel_grid, pixel_scale
from jaxlens.lensing.interpolate import (
    BilinearCells,
    bilinear,
    bilinear_cells,
    bilinear_stencil,
    interpolate_cells,
    pad_source,
)
from jaxlens.lensing.mass import (
    LensParams,
    deflection,
    ellipticity_to_phi_q,
    ray_trace,
    shear_deflection,
    sie_deflection,
)

__all__ = [
    "AATDiagnostics",
    "Geometry",
    "LensParams",
    "aat_diagnostics",
    "average_pool",
    "BilinearCells",
    "bilinear",
    "bilinear_cells",
    "bilinear_stencil",
    "check_lens",
    "convolve_psf",
    "deflection",
    "ellipticity_to_phi_q",
    "interpolate_cells",
    "lens_operator",
    "normal_operator_norm",
    "pad_source",
    "pixel_centers",
    "pixel_grid",
    "pixel_scale",
    "ray_trace",
    "render",
    "shear_deflection",
    "sie_deflection",
    "simulate",
]
