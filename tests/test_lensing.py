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


def test_sie_and_shear_separately(x64):
    rng = np.random.default_rng(2)
    x = rng.uniform(-3, 3, 500)
    y = rng.uniform(-3, 3, 500)
    sie, shear = LensModel(["SIE"]), LensModel(["SHEAR"])
    for lens in _random_lenses(rng, 9):
        kw = _lens_kwargs(lens)
        ref = sie.alpha(x, y, [kw[0]])
        got = lensing.sie_deflection(x, y, lens.theta_e, lens.e1, lens.e2, lens.center_x, lens.center_y)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-12)
        ref = shear.alpha(x, y, [kw[1]])
        got = lensing.shear_deflection(x, y, lens.gamma1, lens.gamma2)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


def test_sis_closed_form_and_einstein_ring(x64):
    # Round lens: α = θ_E r̂ exactly.
    x = jnp.array([1.0, -0.3, 2.0])
    y = jnp.array([0.0, 0.4, -2.0])
    ax, ay = lensing.sie_deflection(x, y, 1.5, 0.0, 0.0)
    r = np.hypot(x, y)
    np.testing.assert_allclose(ax, 1.5 * x / r, rtol=1e-14)
    np.testing.assert_allclose(ay, 1.5 * y / r, rtol=1e-14)


def test_deflection_float32_by_default():
    x = jnp.linspace(-1, 1, 7, dtype=jnp.float32)
    ax, ay = lensing.deflection(x, x, LENS)
    assert ax.dtype == jnp.float32 and ay.dtype == jnp.float32
    with jax.enable_x64(True):
        ax64, _ = lensing.deflection(np.linspace(-1, 1, 7), np.linspace(-1, 1, 7), LENS)
        assert ax64.dtype == jnp.float64
    np.testing.assert_allclose(ax, ax64, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("e", [(0.0, 0.0), (1e-9, -2e-9), (0.2, 0.1)])
def test_gradients_finite_at_centre_and_round(x64, e):
    def total(params, x, y):
        ax, ay = lensing.deflection(x, y, params)
        return jnp.sum(ax**2 + ay)

    lens = LensParams(1.0, e[0], e[1], 0.1, -0.2, 0.01, 0.02)
    # Points: exactly the lens centre, near it, and generic.
    x = jnp.array([0.1, 0.1 + 1e-12, 1.0])
    y = jnp.array([-0.2, -0.2, 0.5])
    g_lens, g_x, g_y = jax.grad(total, argnums=(0, 1, 2))(lens, x, y)
    for leaf in jax.tree_util.tree_leaves((g_lens, g_x, g_y)):
        assert np.all(np.isfinite(leaf))
    for dtype in (np.float32, np.float64):
        with jax.enable_x64(dtype == np.float64):
            val = jax.grad(lambda t: total(lens._replace(e1=t), x.astype(dtype), y.astype(dtype)))(
                jnp.asarray(e[0], dtype)
            )
            assert np.isfinite(val)


def test_gradient_at_round_lens_matches_finite_difference(x64):
    # κ is smooth in (e1, e2) at c = 0, so the derivative there must be the
    # two-sided difference quotient, not zero and not NaN.
    x = jnp.linspace(-2, 2, 9)
    y = jnp.linspace(1.5, -1, 9)

    def f(e1, e2):
        ax, ay = lensing.sie_deflection(x, y, 1.3, e1, e2)
        return jnp.sum(ax * x + 2 * ay)

    h = 1e-5
    grad = jax.grad(f, argnums=(0, 1))(0.0, 0.0)
    fd = ((f(h, 0.0) - f(-h, 0.0)) / (2 * h), (f(0.0, h) - f(0.0, -h)) / (2 * h))
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    assert abs(grad[0]) > 1e-3


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


def test_lens_operator_equals_render_and_channels(x64):
    rng = np.random.default_rng(5)
    geometry = Geometry(32, 2.0, 48, 4.0, 3, psf=_gaussian_psf(5, 0.8))
    A, AT = lensing.lens_operator(LENS, geometry)
    src = rng.normal(size=(32, 32, 3))
    got = jax.jit(A)(src)
    assert got.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_allclose(got[..., c], lensing.render(src[..., c], LENS, geometry), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(A(src[..., c]), got[..., c], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lensing.render(src, LENS, geometry), got, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("psf", [None, "gauss"])
@pytest.mark.parametrize("channels", [None, 2])
def test_adjoint_identity(x64, psf, channels):
    rng = np.random.default_rng(6)
    geometry = Geometry(40, 2.0, 60, 4.0, 2, psf=_gaussian_psf(5, 1.0) if psf else None)
    A, AT = lensing.lens_operator(LENS, geometry)
    extra = () if channels is None else (channels,)
    x = rng.normal(size=(40, 40) + extra)
    y = rng.normal(size=(30, 30) + extra)
    lhs = np.vdot(jax.jit(A)(x), y)
    aty = jax.jit(AT)(y)
    assert aty.shape == x.shape
    rhs = np.vdot(x, aty)
    assert abs(lhs - rhs) <= 1e-6 * abs(lhs)


# ----------------------------------------------------------------------------- gradients


def test_chi2_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(7)
    geometry = Geometry(24, 2.4, 32, 4.0, 2, psf=_gaussian_psf(3, 0.7))
    source = jnp.asarray(_smooth_source(24, rng))
    y = lensing.render(source, LENS, geometry) + 0.01 * rng.normal(size=(16, 16))

    @jax.jit
    def chi2(src, lens):
        return jnp.sum((y - lensing.render(src, lens, geometry)) ** 2)

    g_src, g_lens = jax.jit(jax.grad(chi2, argnums=(0, 1)))(source, LENS)
    lens = jax.tree_util.tree_map(jnp.asarray, LENS)  # one compilation for every step
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


def test_render_gradient_finite_for_round_lens_on_grid_centre():
    # A round lens centred exactly on a ray-traced pixel centre (odd grid).
    geometry = Geometry(16, 2.0, 15, 3.0, 1)
    lens = LensParams(0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    source = jnp.ones((16, 16))
    grads = jax.grad(lambda l, s: jnp.sum(lensing.render(s, l, geometry) ** 2), argnums=(0, 1))(lens, source)
    for leaf in jax.tree_util.tree_leaves(grads):
        assert np.all(np.isfinite(leaf))


# ----------------------------------------------------------------------------- transformations


def test_jit_vmap_over_sources_equals_loop():
    rng = np.random.default_rng(8)
    geometry = Geometry(20, 2.0, 24, 3.0, 2)
    batch = jnp.asarray(rng.normal(size=(3, 20, 20, 2)), jnp.float32)
    A, AT = lensing.lens_operator(LENS, geometry)
    out = jax.jit(jax.vmap(A))(batch)
    back = jax.jit(jax.vmap(AT))(out)
    rendered = jax.jit(jax.vmap(lensing.render, in_axes=(0, None, None)), static_argnums=2)(batch, LENS, geometry)
    for b in range(3):
        np.testing.assert_allclose(out[b], A(batch[b]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(back[b], AT(out[b]), rtol=1e-5, atol=1e-6)
        # jit may fuse the float32 ray tracing differently from eager mode.
        np.testing.assert_allclose(rendered[b], lensing.render(batch[b], LENS, geometry), atol=2e-5)
    assert out.dtype == jnp.float32

    # Inside lax.scan, as the sampler uses them.
    def body(x, _):
        return x + 0.1 * AT(A(x)), None

    scanned, _ = jax.jit(lambda x: jax.lax.scan(body, x, None, length=3))(batch[0])
    x = batch[0]
    for _ in range(3):
        x = x + 0.1 * AT(A(x))
    np.testing.assert_allclose(scanned, x, rtol=1e-5, atol=1e-5)


def test_vmap_over_lenses():
    geometry = Geometry(16, 2.0, 16, 3.0, 2)
    lenses = jax.tree_util.tree_map(lambda v: jnp.full((2,), v, jnp.float32), LENS)
    lenses = lenses._replace(theta_e=jnp.array([0.9, 1.1], jnp.float32))
    source = jnp.ones((16, 16))
    out = jax.jit(jax.vmap(lensing.render, in_axes=(None, 0, None)), static_argnums=2)(source, lenses, geometry)
    for b in range(2):
        lens_b = jax.tree_util.tree_map(lambda v: v[b], lenses)
        np.testing.assert_allclose(out[b], lensing.render(source, lens_b, geometry), atol=2e-6)


# ----------------------------------------------------------------------------- simulate and diagnostics


def test_simulate_noise_statistics(x64):
    geometry = Geometry(32, 2.0, 64, 4.0, 1)
    source = _smooth_source(32, np.random.default_rng(9))
    clean = lensing.render(source, LENS, geometry)
    y = lensing.simulate(jax.random.key(0), source, LENS, geometry, 0.5)
    resid = np.asarray(y - clean)
    assert abs(resid.std() - 0.5) < 0.02 and abs(resid.mean()) < 0.02
    sigma_map = np.full((64, 64), 0.1)
    sigma_map[:32] = 2.0
    y = lensing.simulate(jax.random.key(1), source, LENS, geometry, sigma_map)
    resid = np.asarray(y - clean)
    assert abs(resid[:32].std() - 2.0) < 0.08 and abs(resid[32:].std() - 0.1) < 0.004


def test_aat_diagnostics_closed_forms(x64):
    # No lens and identical grids: A = I. With pooling by 2: AAᵀ = I/4.
    no_lens = LensParams(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    d = lensing.aat_diagnostics(no_lens, Geometry(8, 2.0, 8, 2.0, 1))
    np.testing.assert_allclose(d.diag, 1.0, rtol=1e-12)
    assert d.offdiag_nonzero_fraction == 0.0
    d = lensing.aat_diagnostics(no_lens, Geometry(8, 2.0, 8, 2.0, 2))
    np.testing.assert_allclose(d.diag, 0.25, rtol=1e-12)
    assert d.offdiag_nonzero_fraction == 0.0
    # A real lens: diagonal in (0, 1], some off-diagonal coupling; check against dense A.
    geometry = Geometry(10, 2.0, 12, 3.0, 2, psf=_gaussian_psf(3, 0.7))
    d = lensing.aat_diagnostics(LENS, geometry)
    assert np.all(d.diag <= 1 + 1e-12) and np.all(d.diag >= 0)
    A, _ = lensing.lens_operator(LENS, geometry)
    dense = np.stack([np.ravel(A(e.reshape(10, 10))) for e in np.eye(100)], axis=1)
    aat = dense @ dense.T
    np.testing.assert_allclose(d.diag.ravel(), np.diag(aat), rtol=1e-12, atol=1e-15)
    off = aat[~np.eye(36, dtype=bool)]
    assert d.offdiag_nonzero_fraction == pytest.approx(np.count_nonzero(off) / off.size)
    assert 0 < d.offdiag_nonzero_fraction < 1


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise():
    good = Geometry(16, 2.0, 16, 3.0, 2)
    src = jnp.ones((16, 16))
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
        jax.jit(AT)(jnp.ones((16, 16)))
    for sigma in (0.0, -1.0, np.array([[0.1, 0.0]] * 4).repeat(2, axis=1)):
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
