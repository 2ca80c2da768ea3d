"""Tests of jaxlens.lensing against lenstronomy, scipy and closed forms.

Precision tests run in float64 inside `jax.enable_x64` (per test, never global).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import jax
import jax.numpy as jnp

from jaxlens import lensing
from jaxlens.lensing import Geometry, LensParams

lenstronomy = pytest.importorskip("lenstronomy")
from lenstronomy.LensModel.lens_model import LensModel  # noqa: E402
from lenstronomy.LightModel.light_model import LightModel  # noqa: E402
from lenstronomy.Util import image_util, util  # noqa: E402


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def _lens_kwargs(lens: LensParams):
    return [
        dict(theta_E=lens.theta_e, e1=lens.e1, e2=lens.e2, center_x=lens.center_x, center_y=lens.center_y),
        dict(gamma1=lens.gamma1, gamma2=lens.gamma2),
    ]


def _random_lenses(rng, n):
    """Random lenses, a third of them nearly or exactly round."""
    lenses = []
    for k in range(n):
        e = rng.uniform(-0.4, 0.4, 2)
        if k % 3 == 1:
            e = e * 10.0 ** rng.uniform(-9, -3)
        elif k % 3 == 2 and k % 2:
            e = np.zeros(2)
        lenses.append(
            LensParams(
                theta_e=rng.uniform(0.3, 2.5), e1=e[0], e2=e[1],
                center_x=rng.uniform(-0.5, 0.5), center_y=rng.uniform(-0.5, 0.5),
                gamma1=rng.uniform(-0.1, 0.1), gamma2=rng.uniform(-0.1, 0.1),
            )
        )
    return lenses


LENS = LensParams(theta_e=1.2, e1=0.15, e2=-0.08, center_x=0.05, center_y=-0.03, gamma1=0.03, gamma2=-0.02)


# ----------------------------------------------------------------------------- mass


def test_deflection_matches_lenstronomy(x64):
    # lenstronomy 'SIE' is NIE with core 1e-10 and q capped at 1 − 1e-8: both
    # are far below the 1e-6 tolerance away from the centre itself.
    rng = np.random.default_rng(1)
    model = LensModel(["SIE", "SHEAR"])
    x = rng.uniform(-4, 4, 2000)
    y = rng.uniform(-4, 4, 2000)
    deflect = jax.jit(lensing.deflection)
    for lens in _random_lenses(rng, 60):
        ax_ref, ay_ref = model.alpha(x, y, _lens_kwargs(lens))
        ax, ay = deflect(jnp.asarray(x), jnp.asarray(y), lens)
        err = np.hypot(ax - ax_ref, ay - ay_ref) / np.hypot(ax_ref, ay_ref)
        assert err.max() < 1e-6, (lens, err.max())
    # float32 by default (x64 off): same code, single precision.
    with jax.enable_x64(False):
        ax, ay = deflect(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), LENS)
    assert ax.dtype == jnp.float32 and ay.dtype == jnp.float32
    ax_ref, ay_ref = model.alpha(x, y, _lens_kwargs(LENS))
    err = np.hypot(ax - ax_ref, ay - ay_ref) / np.hypot(ax_ref, ay_ref)
    assert err.max() < 2e-6


def test_sie_and_shear_separately(x64):
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, 500)
    y = rng.uniform(-3, 3, 500)
    sie, shear = LensModel(["SIE"]), LensModel(["SHEAR"])
    sie_deflection = jax.jit(lensing.sie_deflection)
    for lens in _random_lenses(rng, 9):
        kw = _lens_kwargs(lens)
        ref = sie.alpha(x, y, [kw[0]])
        got = sie_deflection(x, y, lens.theta_e, lens.e1, lens.e2, lens.center_x, lens.center_y)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)
        ref = shear.alpha(x, y, [kw[1]])
        got = lensing.shear_deflection(x, y, lens.gamma1, lens.gamma2)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
    # Round lens: the singular isothermal sphere, α = θ_E r̂ exactly.
    ax, ay = sie_deflection(x, y, 1.5, 0.0, 0.0, 0.0, 0.0)
    r = np.hypot(x, y)
    np.testing.assert_allclose(ax, 1.5 * x / r, rtol=1e-14)
    np.testing.assert_allclose(ay, 1.5 * y / r, rtol=1e-14)


def _deflection_objective(lens, x, y):
    ax, ay = lensing.deflection(x, y, lens)
    return jnp.sum(ax * x + 2 * ay + ax**2)


# One compilation serves both the values (finite differences) and the gradients.
_objective_and_grad = jax.jit(jax.value_and_grad(_deflection_objective, argnums=(0, 1, 2)))


def _objective(lens, x, y):
    return _objective_and_grad(lens, x, y)[0]


def _objective_grad(lens, x, y):
    return _objective_and_grad(lens, x, y)[1]


def test_gradients_finite_at_centre_and_round_and_match_fd(x64):
    # Points: exactly the lens centre, 1e-12 from it, and generic ones.
    x = jnp.array([0.1, 0.1 + 1e-12, 1.0, -1.5, 0.3])
    y = jnp.array([-0.2, -0.2, 0.5, 0.7, -1.9])
    for e in [(0.0, 0.0), (1e-9, -2e-9), (3e-4, 1e-4), (0.2, 0.1)]:
        lens = LensParams(1.0, e[0], e[1], 0.1, -0.2, 0.01, 0.02)
        grads = _objective_grad(lens, x, y)
        for leaf in jax.tree_util.tree_leaves(grads):
            assert np.all(np.isfinite(leaf)), e
        # κ is smooth in (e1, e2) at c = 0, so even at q = 1 exactly the
        # derivative must equal the two-sided difference quotient (not 0 or NaN).
        # (The centre's own derivative is undefined at the centre pixel: skip it.)
        h = 1e-6
        for name in ("e1", "e2", "theta_e", "gamma1"):
            up = lens._replace(**{name: getattr(lens, name) + h})
            down = lens._replace(**{name: getattr(lens, name) - h})
            fd = (_objective(up, x, y) - _objective(down, x, y)) / (2 * h)
            np.testing.assert_allclose(getattr(grads[0], name), fd, rtol=1e-6, err_msg=f"{name} at e={e}")
        assert abs(grads[0].e1) > 1e-3
    with jax.enable_x64(False):
        lens32 = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), LensParams(1.0, 0.0, 0.0, 0.1, -0.2))
        for leaf in jax.tree_util.tree_leaves(_objective_grad(lens32, x.astype(jnp.float32), y.astype(jnp.float32))):
            assert leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))


# ----------------------------------------------------------------------------- grids and interpolation


def test_pixel_grid_matches_lenstronomy(x64):
    x, y = lensing.pixel_grid(6, 1.8)
    xl, yl = util.make_grid(6, 0.3)
    np.testing.assert_allclose(x, util.array2image(xl), atol=1e-14)
    np.testing.assert_allclose(y, util.array2image(yl), atol=1e-14)
    assert x[0, 1] > x[0, 0] and y[1, 0] > y[0, 0]


def test_bilinear_matches_interpol(x64):
    rng = np.random.default_rng(3)
    n, fov = 12, 2.4
    img = rng.normal(size=(n, n))
    # Points inside, on the zero-falloff ring and beyond.
    x = rng.uniform(-1.8, 1.8, 3000)
    y = rng.uniform(-1.8, 1.8, 3000)
    ref = LightModel(["INTERPOL"]).surface_brightness(
        x, y, [dict(image=img, amp=1.0, center_x=0.0, center_y=0.0, phi_G=0.0, scale=fov / n)]
    )
    got = lensing.bilinear(img, x, y, fov)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    # Multi-band: each channel separately.
    img3 = np.stack([img, 2 * img, -img], axis=-1)
    got3 = lensing.bilinear(img3, x, y, fov)
    np.testing.assert_allclose(got3, np.stack([ref, 2 * ref, -ref], -1), rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- render


def _lenstronomy_render(source, lens, geometry):
    """Reference renderer: lenstronomy ray_shooting + INTERPOL, scipy PSF, re_size pooling."""
    delta = geometry.img_fov / geometry.fine_npix
    xg, yg = util.make_grid(geometry.fine_npix, delta)
    bx, by = LensModel(["SIE", "SHEAR"]).ray_shooting(xg, yg, _lens_kwargs(lens))
    kw = dict(image=source, amp=1.0, center_x=0.0, center_y=0.0, phi_G=0.0,
              scale=geometry.src_fov / geometry.src_npix)
    fine = util.array2image(LightModel(["INTERPOL"]).surface_brightness(bx, by, [kw]))
    if geometry.psf is not None:
        fine = scipy.signal.convolve2d(fine, geometry.psf_array, mode="same")
    return image_util.re_size(fine, geometry.pool)


def _smooth_source(n, rng):
    i, j = np.mgrid[:n, :n] / n
    src = np.exp(-((i - 0.5) ** 2 + (j - 0.45) ** 2) / 0.05) + 0.1 * rng.uniform(size=(n, n))
    return src


def _gaussian_psf(k, s):
    r = np.arange(k) - k // 2
    g = np.exp(-(r[:, None] ** 2 + 0.5 * r[None, :] ** 2) / (2 * s**2))
    return g / g.sum()


@pytest.mark.parametrize("with_psf", [False, True])
def test_render_matches_lenstronomy(x64, with_psf):
    rng = np.random.default_rng(4)
    geometry = Geometry(256, 3.0, 256, 6.0, 2, psf=_gaussian_psf(7, 1.3) if with_psf else None)
    source = _smooth_source(256, rng)
    ref = _lenstronomy_render(source, LENS, geometry)
    got = jax.jit(lensing.render, static_argnums=2)(source, LENS, geometry)
    assert got.shape == (128, 128)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("with_psf", [False, True])
def test_lens_operator_matches_render_and_is_adjoint(x64, with_psf):
    rng = np.random.default_rng(5)
    geometry = Geometry(32, 2.0, 48, 4.0, 3, psf=_gaussian_psf(5, 0.8) if with_psf else None)
    A, AT = lensing.lens_operator(LENS, geometry)
    # Without PSF: [n, n]; with PSF: [n, n, C] (each band lensed alike).
    shape = (32, 32) if not with_psf else (32, 32, 3)
    src = rng.normal(size=shape)
    y = rng.normal(size=(16, 16) + shape[2:])
    got = A(src)
    assert got.shape == (16, 16) + shape[2:]
    np.testing.assert_allclose(got, lensing.render(src, LENS, geometry), rtol=1e-12, atol=1e-12)
    # Each band is lensed on its own, as lenstronomy would lens it.
    for band in range(src.shape[2]) if with_psf else ():
        # (lenstronomy's SIE has a 1e-10 core: ~1e-8 deflection differences
        # next to the centre, amplified by this rough source.)
        ref = _lenstronomy_render(src[..., band], LENS, geometry)
        np.testing.assert_allclose(got[..., band], ref, rtol=1e-6, atol=1e-8)
    aty = AT(y)
    assert aty.shape == src.shape
    lhs, rhs = np.vdot(got, y), np.vdot(src, aty)
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)
    # The gather-only adjoint equals JAX's transpose of A (a scatter).
    transpose = jax.jit(jax.linear_transpose(A, jax.ShapeDtypeStruct(src.shape, src.dtype)))
    np.testing.assert_allclose(aty, transpose(y)[0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- gradients


def test_chi2_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(7)
    # Odd fine grid: one ray-traced pixel centre sits exactly on the origin.
    geometry = Geometry(24, 2.4, 33, 4.0, 3, psf=_gaussian_psf(3, 0.7))
    source = _smooth_source(24, rng)
    y = _lenstronomy_render(source, LENS, geometry) + 0.01 * rng.normal(size=(11, 11))
    source = jnp.asarray(source)

    # One compilation serves both the values (finite differences) and the gradients.
    value_and_grad = jax.jit(jax.value_and_grad(
        lambda src, lens: jnp.sum((y - lensing.render(src, lens, geometry)) ** 2), argnums=(0, 1)))

    def chi2(src, lens):
        return value_and_grad(src, lens)[0]

    def grad(src, lens):
        return value_and_grad(src, lens)[1]
    lens = jax.tree_util.tree_map(jnp.asarray, LENS)  # one compilation for every step
    g_src, g_lens = grad(source, lens)
    # χ² is piecewise smooth (bilinear kinks at pixel edges); a tiny step keeps
    # the difference quotient inside one piece for every ray.
    h = 1e-8
    for name in LENS._fields:
        step = lens._replace(**{name: getattr(lens, name) + h})
        back = lens._replace(**{name: getattr(lens, name) - h})
        fd = (chi2(source, step) - chi2(source, back)) / (2 * h)
        np.testing.assert_allclose(getattr(g_lens, name), fd, rtol=1e-5, atol=1e-9, err_msg=name)
    direction = jnp.asarray(rng.normal(size=source.shape))
    fd = (chi2(source + h * direction, lens) - chi2(source - h * direction, lens)) / (2 * h)
    np.testing.assert_allclose(jnp.vdot(g_src, direction), fd, rtol=1e-6)
    # A round lens centred exactly on that pixel centre: still finite.
    round_lens = jax.tree_util.tree_map(jnp.asarray, LensParams(0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
    for leaf in jax.tree_util.tree_leaves(grad(source, round_lens)):
        assert np.all(np.isfinite(leaf))


# ----------------------------------------------------------------------------- transformations


def test_jit_vmap_over_sources_equals_loop():
    rng = np.random.default_rng(8)
    geometry = Geometry(20, 2.0, 24, 3.0, 2)
    batch = jnp.asarray(rng.normal(size=(3, 20, 20, 2)), jnp.float32)
    A, AT = lensing.lens_operator(LENS, geometry)
    out = jax.jit(jax.vmap(A))(batch)
    back = jax.jit(jax.vmap(AT))(out)
    for b in range(3):
        np.testing.assert_allclose(out[b], A(batch[b]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back[b], AT(out[b]), rtol=1e-5, atol=1e-6)
    # lens_operator inside jit (traced lens): Aᵀ falls back to a transposed scatter.
    traced_AT = jax.jit(lambda lens, y: lensing.lens_operator(lens, geometry)[1](y))
    np.testing.assert_allclose(traced_AT(LENS, out[0]), back[0], rtol=1e-5, atol=1e-5)
    # render, vmapped over sources *and* lenses, against each lens's operator.
    lenses = jax.tree_util.tree_map(lambda v: jnp.full((3,), v, jnp.float32), LENS)
    lenses = lenses._replace(theta_e=jnp.array([0.8, 1.0, 1.2], jnp.float32))
    rendered = jax.jit(jax.vmap(lensing.render, in_axes=(0, 0, None)), static_argnums=2)(batch, lenses, geometry)
    for b in range(3):
        A_b, _ = lensing.lens_operator(jax.tree_util.tree_map(lambda v: v[b], lenses), geometry)
        # render traces rays in its own jit, which may round float32 differently.
        np.testing.assert_allclose(rendered[b], A_b(batch[b]), atol=2e-5)
    assert out.dtype == jnp.float32

    # Inside lax.scan, as the sampler uses them.
    def body(x, _):
        return x + 0.1 * AT(A(x)), None

    scanned, _ = jax.jit(lambda x: jax.lax.scan(body, x, None, length=3))(batch[0])
    x = batch[0]
    for _ in range(3):
        x = x + 0.1 * AT(A(x))
    np.testing.assert_allclose(scanned, x, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- simulate and diagnostics


def test_simulate_noise_statistics(x64):
    geometry = Geometry(32, 2.0, 48, 4.0, 3)  # as in the operator test: shared compilation
    source = _smooth_source(32, np.random.default_rng(9))
    clean = _lenstronomy_render(source, LENS, geometry)
    resid = np.concatenate([
        np.asarray(lensing.simulate(jax.random.key(k), source, LENS, geometry, 0.5) - clean).ravel()
        for k in range(16)
    ])  # 4096 draws: the tolerances are > 3.5 standard errors
    assert abs(resid.std() - 0.5) < 0.02 and abs(resid.mean()) < 0.03
    sigma_map = np.full((16, 16), 0.1)
    sigma_map[:8] = 2.0
    resid = np.stack([
        np.asarray(lensing.simulate(jax.random.key(k), source, LENS, geometry, sigma_map) - clean)
        for k in range(16, 32)
    ])
    assert abs(resid[:, :8].std() - 2.0) < 0.15 and abs(resid[:, 8:].std() - 0.1) < 0.0075


def test_aat_diagnostics(x64):
    # No lens, identical grids, pooling by 2: A is the 2×2 mean, AAᵀ = I/4.
    no_lens = LensParams(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    d = lensing.aat_diagnostics(no_lens, Geometry(8, 2.0, 8, 2.0, 2))
    np.testing.assert_allclose(d.diag, 0.25, rtol=1e-12)
    assert d.offdiag_nonzero_fraction == 0.0
    # A real lens, against a dense A built column by column with lenstronomy.
    geometry = Geometry(10, 2.0, 12, 3.0, 2, psf=_gaussian_psf(3, 0.7))
    d = lensing.aat_diagnostics(LENS, geometry)
    assert np.all(d.diag <= 1 + 1e-12) and np.all(d.diag >= 0)
    dense = np.stack([_lenstronomy_render(e.reshape(10, 10), LENS, geometry).ravel() for e in np.eye(100)], axis=1)
    aat = dense @ dense.T
    np.testing.assert_allclose(d.diag.ravel(), np.diag(aat), rtol=1e-8, atol=1e-14)
    off = np.abs(aat[~np.eye(36, dtype=bool)])
    assert d.offdiag_nonzero_fraction == pytest.approx(np.count_nonzero(off > 1e-14) / off.size, abs=1e-3)
    assert 0 < d.offdiag_nonzero_fraction < 1


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise():
    good = Geometry(20, 2.0, 24, 3.0, 2)
    src = jnp.ones((20, 20))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="pool"):
        Geometry(16, 2.0, 30, 3.0, 4)
    with pytest.raises(ValueError, match="odd"):
        Geometry(16, 2.0, 16, 3.0, 2, psf=np.full((4, 4), 1 / 16))
    with pytest.raises(ValueError, match="normalised"):
        Geometry(16, 2.0, 16, 3.0, 2, psf=np.ones((3, 3)))
    bad_psf = _gaussian_psf(3, 1.0)
    bad_psf[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        Geometry(16, 2.0, 16, 3.0, 2, psf=bad_psf)
    with pytest.raises(ValueError, match="src_fov"):
        Geometry(16, -2.0, 16, 3.0, 2)
    with pytest.raises(ValueError, match="source must have shape"):
        lensing.render(jnp.ones((15, 16)), LENS, good)
    with pytest.raises(ValueError, match="source must have shape"):
        jax.jit(lensing.render, static_argnums=2)(jnp.ones((8, 8)), LENS, good)
    A, AT = lensing.lens_operator(LENS, good)
    with pytest.raises(ValueError, match="source must have shape"):
        jax.jit(A)(jnp.ones((8, 8)))
    with pytest.raises(ValueError, match="image must have shape"):
        jax.jit(AT)(jnp.ones((20, 20)))
    for sigma in (0.0, -1.0, np.where(np.eye(12) > 0, 0.0, 0.1)):
        with pytest.raises(ValueError, match="sigma_n"):
            lensing.simulate(key, src, LENS, good, sigma)
    with pytest.raises(ValueError, match="sigma_n"):
        lensing.simulate(key, src, LENS, good, np.ones((3, 3)))
    nan_lens = LENS._replace(e2=float("nan"))
    with pytest.raises(ValueError, match="e2"):
        lensing.lens_operator(nan_lens, good)
    with pytest.raises(ValueError, match="e2"):
        lensing.simulate(key, src, nan_lens, good, 0.1)
    with pytest.raises(ValueError, match="theta_e"):
        lensing.render(src, LENS._replace(theta_e=float("inf")), good)
