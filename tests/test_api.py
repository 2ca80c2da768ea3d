"""The public surface: every exported name exists, and the documented entry points keep their signatures."""

import importlib
import inspect
import pkgutil

import pytest

import jaxlens

# The CLI modules define absl flags at import, so they cannot share one process; they export nothing.
_MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxlens.__path__, "jaxlens.")
                  if m.name not in ("jaxlens.cli.train", "jaxlens.cli.sample"))


@pytest.mark.parametrize("name", _MODULES)
def test_every_exported_name_exists(name):
    mod = importlib.import_module(name)
    missing = [n for n in getattr(mod, "__all__", ()) if not hasattr(mod, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"


@pytest.mark.parametrize("module, name, params", [
    ("jaxlens.lensing", "sie_deflection", ["x", "y", "theta_e", "e1", "e2", "center_x", "center_y"]),
    ("jaxlens.lensing", "shear_deflection", ["x", "y", "gamma1", "gamma2"]),
    ("jaxlens.lensing", "pixel_grid", ["n", "fov"]),
    ("jaxlens.lensing", "bilinear", ["image", "x", "y", "fov"]),
    ("jaxlens.lensing", "render", ["source", "lens", "geometry"]),
    ("jaxlens.lensing", "lens_operator", ["lens", "geometry"]),
    ("jaxlens.lensing", "simulate", ["key", "source", "lens", "geometry", "sigma_n"]),
    ("jaxlens.sde", "VESDE", ["sigma_min", "sigma_max"]),
    ("jaxlens.sde", "sigma_max_from_data", ["images"]),
    ("jaxlens.sde", "step_confidence", ["n_steps", "n_dims", "sigma_min", "sigma_max"]),
    ("jaxlens.sde", "steps_for_confidence", ["p", "n_dims", "sigma_min", "sigma_max"]),
    ("jaxlens.sample", "euler_maruyama", ["key", "score_fn", "sde", "x_init", "n_steps"]),
    ("jaxlens.sample", "sample_posterior",
     ["key", "score_fn", "y", "A", "AT", "sigma_n", "sde", "n_chains", "n_steps"]),
    ("jaxlens.sample", "posterior_chains", ["key", "prior_score", "observation", "sde"]),
    ("jaxlens.sample", "prior_chains", ["key", "prior_score", "sde", "shape"]),
    ("jaxlens.sample", "observe", ["y", "sigma_n"]),
])
def test_design_names_keep_their_leading_parameters(module, name, params):
    obj = getattr(importlib.import_module(module), name)
    got = list(inspect.signature(obj).parameters)[: len(params)]
    assert got == params


def test_design_pytrees_have_their_fields():
    from jaxlens.lensing import Geometry, LensParams
    assert LensParams._fields == ("theta_e", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2")
    assert list(inspect.signature(Geometry).parameters)[:6] == ["src_npix", "src_fov", "fine_npix", "img_fov",
                                                                 "pool", "psf"]
