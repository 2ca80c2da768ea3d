"""The lens forward model: SIE + shear mass, pixel grids, bilinear sources, A and Aᵀ."""

from jaxlens.lensing.diagnostics import AATDiagnostics, aat_diagnostics
from jaxlens.lensing.forward import (
    Geometry,
    average_pool,
    check_lens,
    convolve_psf,
    lens_operator,
    render,
    simulate,
)
from jaxlens.lensing.grid import pixel_centers, pixel_grid, pixel_scale
from jaxlens.lensing.interpolate import apply_stencil, bilinear, bilinear_stencil
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
    "apply_stencil",
    "average_pool",
    "bilinear",
    "bilinear_stencil",
    "check_lens",
    "convolve_psf",
    "deflection",
    "ellipticity_to_phi_q",
    "lens_operator",
    "pixel_centers",
    "pixel_grid",
    "pixel_scale",
    "ray_trace",
    "render",
    "shear_deflection",
    "sie_deflection",
    "simulate",
]
