"""Forward model speed: jaxlens against lenstronomy on the paper's 256² → 128² problem.

A 256² source (3″ field) is lensed by an SIE + shear (θ_E = 1.5″), ray-traced on a
256² grid over an 8″ field and average-pooled by 2 to a 128² observation, without
PSF. Both peers compute the same image (checked below):

* lenstronomy "ray_shooting + INTERPOL": `LensModel.ray_shooting` on the fine grid,
  the `INTERPOL` light profile, and `image_util.re_size` pooling.
* lenstronomy `ImageModel`: the same via `PixelGrid` + `supersampling_factor=2`
  (it returns flux per pixel, i.e. surface brightness × pixel area).

Timed jaxlens functions, all jitted and float32 (the default):

* `A`, `AT` from `lens_operator` (lens fixed, precomputed);
* `render` with the lens parameters as traced arguments (the path of jax.grad
  with respect to the lens), and for information its χ² gradient;
* `A`, `AT` vmapped over 8 sources (per-source time), as the sampler calls them.

Each function is warmed up (compiled) first, then timed over several repeats with
block_until_ready; we report the median and the minimum wall time. Ratios use
medians and the faster lenstronomy route. Run from the repository root:

    python -m benchmarks.forward_vs_lenstronomy [--repeats 50]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import time

import numpy as np

import jax
import jax.numpy as jnp
import lenstronomy
from lenstronomy.Data.pixel_grid import PixelGrid
from lenstronomy.Data.psf import PSF
from lenstronomy.ImSim.image_model import ImageModel
from lenstronomy.LensModel.lens_model import LensModel
from lenstronomy.LightModel.light_model import LightModel
from lenstronomy.Util import image_util, util

from jaxlens import lensing
from jaxlens.lensing import Geometry, LensParams

SRC_NPIX, SRC_FOV, FINE_NPIX, IMG_FOV, POOL = 256, 3.0, 256, 8.0, 2
LENS = dict(theta_e=1.5, e1=0.15, e2=-0.08, center_x=0.05, center_y=-0.03, gamma1=0.03, gamma2=-0.02)


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def _timeit(fn, repeats: int) -> tuple[float, float]:
    """Median and minimum wall time in ms of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def _source(rng) -> np.ndarray:
    i, j = np.mgrid[:SRC_NPIX, :SRC_NPIX] / SRC_NPIX
    blob = np.exp(-((i - 0.52) ** 2 + (j - 0.47) ** 2) / 0.02)
    return blob + 0.05 * rng.uniform(size=(SRC_NPIX, SRC_NPIX))


def lenstronomy_renderers(source: np.ndarray):
    kwargs_lens = [
        dict(theta_E=LENS["theta_e"], e1=LENS["e1"], e2=LENS["e2"],
             center_x=LENS["center_x"], center_y=LENS["center_y"]),
        dict(gamma1=LENS["gamma1"], gamma2=LENS["gamma2"]),
    ]
    kwargs_source = [dict(image=source, amp=1.0, center_x=0.0, center_y=0.0, phi_G=0.0,
                          scale=SRC_FOV / SRC_NPIX)]
    lens_model = LensModel(["SIE", "SHEAR"])
    light = LightModel(["INTERPOL"])
    xg, yg = util.make_grid(FINE_NPIX, IMG_FOV / FINE_NPIX)

    def ray_shooting_interpol():
        bx, by = lens_model.ray_shooting(xg, yg, kwargs_lens)
        fine = util.array2image(light.surface_brightness(bx, by, kwargs_source))
        return image_util.re_size(fine, POOL)

    npix = FINE_NPIX // POOL
    delta = IMG_FOV / npix
    grid = PixelGrid(nx=npix, ny=npix, transform_pix2angle=np.eye(2) * delta,
                     ra_at_xy_0=-(npix - 1) / 2 * delta, dec_at_xy_0=-(npix - 1) / 2 * delta)
    model = ImageModel(grid, PSF(psf_type="NONE"), lens_model_class=lens_model,
                       source_model_class=light,
                       kwargs_numerics=dict(supersampling_factor=POOL, supersampling_convolution=False))

    def image_model():
        return model.image(kwargs_lens=kwargs_lens, kwargs_source=kwargs_source) / delta**2

    return ray_shooting_interpol, image_model


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--chains", type=int, default=8)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    source = _source(rng)
    geometry = Geometry(SRC_NPIX, SRC_FOV, FINE_NPIX, IMG_FOV, POOL)
    lens = LensParams(**{k: jnp.float32(v) for k, v in LENS.items()})
    load_before = os.getloadavg()

    # Peers (float64 numpy), fewer repeats: each call takes tens of ms.
    ref_fn, imagemodel_fn = lenstronomy_renderers(source)
    ref = ref_fn()
    np.testing.assert_allclose(imagemodel_fn(), ref, rtol=1e-6, atol=1e-9)
    peer_repeats = max(5, args.repeats // 5)
    t_ref = _timeit(ref_fn, peer_repeats)
    t_imagemodel = _timeit(imagemodel_fn, peer_repeats)
    baseline = min(t_ref[0], t_imagemodel[0])
    baseline_name = "ray_shooting+INTERPOL" if t_ref[0] <= t_imagemodel[0] else "ImageModel"

    src = jnp.asarray(source, jnp.float32)
    t0 = time.perf_counter()
    A, AT = lensing.lens_operator(lens, geometry)
    t_setup = 1e3 * (time.perf_counter() - t0)
    A, AT = jax.jit(A), jax.jit(AT)
    y = A(src).block_until_ready()
    render = jax.jit(lensing.render, static_argnums=2)
    rendered = render(src, lens, geometry)
    err = float(np.max(np.abs(np.asarray(rendered) - ref)) / np.max(np.abs(ref)))
    err_a = float(np.max(np.abs(np.asarray(y) - ref)) / np.max(np.abs(ref)))

    def chi2(lens_params, s):
        return jnp.sum((y - lensing.render(s, lens_params, geometry)) ** 2)

    grad = jax.jit(jax.grad(chi2))
    batch = jnp.broadcast_to(src, (args.chains,) + src.shape)
    ybatch = jnp.broadcast_to(y, (args.chains,) + y.shape)
    vA, vAT = jax.jit(jax.vmap(A)), jax.jit(jax.vmap(AT))

    rows = [
        ("A (lens_operator)", _timeit(lambda: A(src).block_until_ready(), args.repeats), 50),
        ("AT (lens_operator)", _timeit(lambda: AT(y).block_until_ready(), args.repeats), 50),
        ("render, lens traced", _timeit(lambda: render(src, lens, geometry).block_until_ready(), args.repeats), 10),
        ("grad chi2 wrt lens", _timeit(lambda: jax.block_until_ready(grad(lens, src)), args.repeats), None),
    ]
    per = [
        (f"vmap A, {args.chains} sources", _timeit(lambda: vA(batch).block_until_ready(), args.repeats)),
        (f"vmap AT, {args.chains} sources", _timeit(lambda: vAT(ybatch).block_until_ready(), args.repeats)),
    ]
    load_after = os.getloadavg()

    print(f"# forward model vs lenstronomy, {datetime.date.today()}")
    print(f"machine: {_cpu_model()}, {os.cpu_count()} cores; load average {load_before[0]:.1f} → {load_after[0]:.1f}")
    print(f"jax {jax.__version__} ({jax.default_backend()}), lenstronomy {lenstronomy.__version__}, numpy {np.__version__}")
    print(f"problem: source {SRC_NPIX}² over {SRC_FOV}″, fine grid {FINE_NPIX}² over {IMG_FOV}″, pool {POOL} → "
          f"{FINE_NPIX // POOL}², SIE+shear, no PSF; jaxlens float32, lenstronomy float64")
    print(f"agreement with lenstronomy (max |Δ| / max): render {err:.1e}, A {err_a:.1e}; "
          f"lens_operator setup {t_setup:.0f} ms (once per lens)")
    print(f"lenstronomy ray_shooting+INTERPOL+re_size: median {t_ref[0]:.2f} ms (min {t_ref[1]:.2f})")
    print(f"lenstronomy ImageModel (supersampling 2):   median {t_imagemodel[0]:.2f} ms (min {t_imagemodel[1]:.2f})")
    print(f"baseline for ratios: {baseline_name}, {baseline:.2f} ms")
    print()
    print("| jaxlens function | median ms | min ms | speed-up (median) | goal |")
    print("|---|---|---|---|---|")
    for name, (med, best), goal in rows:
        ratio = baseline / med
        verdict = "—" if goal is None else (f"≥{goal}×: {'met' if ratio >= goal else 'MISSED'}")
        print(f"| {name} | {med:.3f} | {best:.3f} | {ratio:.1f}× | {verdict} |")
    for name, (med, best) in per:
        per_source = med / args.chains
        print(f"| {name} (per source) | {per_source:.3f} | {best / args.chains:.3f} | {baseline / per_source:.1f}× | — |")


if __name__ == "__main__":
    main()
