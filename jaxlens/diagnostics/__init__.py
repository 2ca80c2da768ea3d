"""Diagnostics: goodness of fit, posterior summaries, TARP coverage, morphology and paper figures.

Everything here runs on the host after sampling and takes plain arrays.
"""

from jaxlens.diagnostics.figures import (
    coverage_plot,
    figure1,
    figure3,
    image_grid,
    noise_sweep_figure,
)
from jaxlens.diagnostics.metrics import (
    RegionStats,
    diverged_chains,
    high_magnification_mask,
    magnification_from_rays,
    magnification_map,
    magnification_region,
    posterior_moments,
    reduced_chi2,
    region_std,
    residual_snr,
    spread_and_skill,
    spread_skill,
)
from jaxlens.diagnostics.morphology import (
    Morphology,
    centroid,
    concentration,
    ellipticity,
    flux_radius,
    half_light_radius,
    ks_distance,
    morphology,
    morphology_ks,
    total_flux,
)
from jaxlens.diagnostics.prior_quality import prior_quality
from jaxlens.diagnostics.tarp import (
    coverage_bias,
    max_calibration_error,
    tarp_bootstrap,
    tarp_coverage,
    tarp_statistic,
    tarp_summary,
)

__all__ = [
    "prior_quality",
    "Morphology",
    "RegionStats",
    "centroid",
    "concentration",
    "coverage_bias",
    "coverage_plot",
    "diverged_chains",
    "ellipticity",
    "figure1",
    "figure3",
    "flux_radius",
    "half_light_radius",
    "high_magnification_mask",
    "image_grid",
    "ks_distance",
    "magnification_from_rays",
    "magnification_map",
    "magnification_region",
    "max_calibration_error",
    "morphology",
    "morphology_ks",
    "noise_sweep_figure",
    "posterior_moments",
    "reduced_chi2",
    "region_std",
    "residual_snr",
    "spread_and_skill",
    "spread_skill",
    "tarp_bootstrap",
    "tarp_coverage",
    "tarp_statistic",
    "tarp_summary",
    "total_flux",
]
