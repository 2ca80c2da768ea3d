"""Tests of jaxlens.diagnostics against closed forms and scipy."""

import jax
import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats

from jaxlens import diagnostics as dg

# ------------------------------------------------------------------ χ², residuals, moments


def test_reduced_chi2_matches_definition_with_mask_and_inf_sigma():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(3, 6, 5))
    sigma = rng.uniform(0.5, 2.0, size=(6, 5))
    sigma[0, 0] = np.inf
    mask = np.zeros((6, 5), bool)
    mask[2, :] = True
    used = np.isfinite(sigma) & ~mask
    expected = np.array([np.sum((ri[used] / sigma[used]) ** 2) / (used.sum() - 2) for ri in r])
    np.testing.assert_allclose(dg.reduced_chi2(r, sigma, mask=mask, n_params=2), expected, rtol=1e-12)
    single = dg.reduced_chi2(r[0], 1.5)
    assert single.shape == () and single == pytest.approx(np.mean(r[0] ** 2) / 1.5**2)


def test_reduced_chi2_follows_chi2_distribution():
    """ν χ²_ν of pure-noise residuals is χ²(ν) distributed (scipy as the oracle)."""
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.1, 1.0, size=(8, 8, 1))
    r = rng.normal(size=(400, 8, 8, 1)) * sigma
    nu = 64
    chi = dg.reduced_chi2(r, sigma)
    assert stats.kstest(chi * nu, "chi2", args=(nu,)).pvalue > 0.01
    assert abs(chi.mean() - 1) < 4 * np.sqrt(2 / nu / 400)


@pytest.mark.parametrize(
    "args, kw, match",
    [
        ((np.zeros((2, 4, 4)), 0.0), {}, "> 0"),
        ((np.zeros((2, 4, 4)), np.ones((3, 3))), {}, "broadcast"),
        ((np.zeros((2, 4, 4)), 1.0), {"mask": np.ones((4, 4))}, "boolean"),
        ((np.zeros((2, 4, 4)), 1.0), {"mask": np.ones((4, 4), bool)}, "degrees of freedom"),
        ((np.zeros((2, 4, 4)), 1.0), {"n_params": 16}, "degrees of freedom"),
        ((np.zeros(4), 1.0), {}, "residual must be"),
        ((np.full((1, 4, 4), np.nan), 1.0), {}, "non-finite"),
    ],
)
def test_reduced_chi2_errors(args, kw, match):
    with pytest.raises(ValueError, match=match):
        dg.reduced_chi2(*args, **kw)


def test_residual_snr_and_moments():
    y = np.array([[1.0, 2.0], [3.0, 4.0]])
    sigma = np.array([[0.5, np.inf], [1.0, 2.0]])
    np.testing.assert_allclose(dg.residual_snr(y, np.zeros((3, 2, 2)), sigma)[1], [[2.0, 0.0], [3.0, 2.0]])
    x = np.random.default_rng(2).normal(size=(7, 3, 3, 2))
    mean, std = dg.posterior_moments(x)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x.std(0, ddof=1), rtol=1e-6)
    with pytest.raises(ValueError, match="two samples"):
        dg.posterior_moments(x[:1])


def test_diverged_chains_flags_non_finite_and_far_off_chains_only():
    chi2 = np.array([1.01, 0.99, 1.02, 37.0, np.nan, 1.0])
    x = np.zeros((6, 3, 3))
    x[2, 1, 1] = np.inf
    np.testing.assert_array_equal(dg.diverged_chains(chi2, x), [0, 0, 1, 1, 1, 0])
    # Every chain fitting equally badly (a wrong noise level) is not a divergence...
    assert not dg.diverged_chains(np.array([7.9, 8.2, 8.0, 8.1])).any()
    # ...but one chain at twice the typical misfit is, and one bad chain of two is caught.
    np.testing.assert_array_equal(dg.diverged_chains(np.array([7.9, 8.2, 8.0, 16.5])), [0, 0, 0, 1])
    np.testing.assert_array_equal(dg.diverged_chains(np.array([1.0, 900.0])), [0, 1])
    # Below χ²_ν = 1 the threshold stays at factor × 1: over-fitting chains are not compared with each other.
    assert not dg.diverged_chains(np.array([0.3, 0.5, 1.9])).any()
    np.testing.assert_array_equal(dg.diverged_chains(np.array([0.3, 0.5, 1.9]), factor=1.5), [0, 0, 1])
    assert dg.diverged_chains(np.full(3, np.nan)).all()
    with pytest.raises(ValueError, match="do not match"):
        dg.diverged_chains(chi2, x[:5])
    with pytest.raises(ValueError, match="factor > 1"):
        dg.diverged_chains(chi2, factor=1.0)


# ------------------------------------------------------------------ magnification


def _sis(x, y, theta_e=1.0):
    r = np.hypot(x, y)
    r = np.where(r == 0, 1e-12, r)
    return x - theta_e * x / r, y - theta_e * y / r


def _sis_source_mu(n, fov, theta_e=1.0, sub=10):
    """Pixel-averaged total magnification of a point source behind an SIS (closed form)."""
    c = (np.arange(n * sub) - (n * sub - 1) / 2) * fov / (n * sub)
    b = np.hypot(*np.meshgrid(c, c))
    mu = np.where(b < theta_e, 2 * theta_e / b, 1 + theta_e / b)
    return mu.reshape(n, sub, n, sub).mean((1, 3))


def _radius(n, fov):
    c = (np.arange(n) - (n - 1) / 2) * fov / n
    return np.hypot(*np.meshgrid(c, c))


def test_magnification_from_rays_sis_closed_form():
    n, fov = 20, 2.0
    mu = dg.magnification_from_rays(_sis, src_npix=n, src_fov=fov, img_npix=900, img_fov=6.0)
    sel = _radius(n, fov) > 0.25  # the 1/β cusp is not resolved by any finite ray grid
    np.testing.assert_allclose(mu[sel], _sis_source_mu(n, fov)[sel], rtol=0.02)


def test_magnification_from_rays_pure_shear():
    g1, g2 = 0.1, 0.05

    def shear(x, y):
        return x - (g1 * x + g2 * y), y - (g2 * x - g1 * y)

    mu = dg.magnification_from_rays(shear, src_npix=10, src_fov=1.0, img_npix=400, img_fov=3.0)
    expected = 1 / (1 - g1**2 - g2**2)
    assert mu.mean() == pytest.approx(expected, rel=2e-3)
    np.testing.assert_allclose(mu, expected, rtol=2e-3)  # cloud-in-cell deposit: no lattice aliasing


def test_magnification_region_with_lensing():
    lensing = pytest.importorskip("jaxlens.lensing")
    n, fov = 20, 2.0
    geometry = lensing.Geometry(src_npix=n, src_fov=fov, fine_npix=300, img_fov=6.0, pool=3)
    mu, mask = dg.magnification_region(lensing.LensParams(theta_e=1.0), geometry, threshold=5.0, oversample=3)
    exact = _sis_source_mu(n, fov)
    sel = _radius(n, fov) > 0.25
    np.testing.assert_allclose(mu[sel], exact[sel], rtol=0.02)
    clear = np.abs(exact - 5.0) > 0.5  # away from the threshold contour
    np.testing.assert_array_equal(mask[clear], exact[clear] >= 5.0)
    assert mask.sum() > 0 and (~mask).sum() > 0


def test_region_std():
    s = np.ones((4, 4))
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    s[mask] = 0.25
    st = dg.region_std(s, mask)
    assert (st.inside_mean, st.outside_mean, st.n_inside, st.n_outside) == (0.25, 1.0, 4, 12)
    assert st.ratio == pytest.approx(0.25)
    outside = ~mask
    outside[3, 3] = False
    assert dg.region_std(s[..., None], mask, outside=outside).n_outside == 11
    with pytest.raises(ValueError):
        dg.region_std(s, mask.astype(int))


# ------------------------------------------------------------------ TARP


def _gaussian_sims(rng, k, n_sims=1000, n_samples=100, dim=8):
    """Truth and samples from N(mu, sigma²); samples use k·sigma (k = 1 is the true posterior)."""
    mu = rng.uniform(-5, 5, (n_sims, dim))
    sigma = np.exp(rng.uniform(-2, 0, (n_sims, dim)))
    truth = mu + sigma * rng.normal(size=mu.shape)
    samples = mu[:, None] + k * sigma[:, None] * rng.normal(size=(n_sims, n_samples, dim))
    return samples.astype(np.float32), truth.astype(np.float32)


@pytest.mark.parametrize("k", [1.0, 0.5, 2.0])
def test_spread_skill_matches_its_closed_form(k):
    """Samples spread k times the posterior around its mean: spread/skill = 2k²/(k² + 1)."""
    samples, truth = _gaussian_sims(np.random.default_rng(1), k, n_sims=400, n_samples=20)
    ratio, std = dg.spread_skill(samples, truth)
    assert 0 < std < 0.05
    assert abs(ratio - 2 * k**2 / (k**2 + 1)) < 4 * std


@pytest.mark.parametrize("k", [0.5, 2.0])
def test_spread_and_skill_per_simulation_match_their_expectations(k):
    """Samples k·σ around the mean, truth σ around it: E spread = 2k² Σσ², E skill = (1 + k²) Σσ²."""
    rng = np.random.default_rng(2)
    n_sims, n, sigma = 4000, 10, np.exp(rng.uniform(-2, 0, 16))
    mu = rng.uniform(-5, 5, (n_sims, 16))
    truth = mu + sigma * rng.normal(size=mu.shape)
    samples = mu[:, None] + k * sigma * rng.normal(size=(n_sims, n, 16))
    spread, skill = dg.spread_and_skill(samples, truth)
    assert spread.shape == skill.shape == (n_sims,)
    total = np.sum(sigma**2)
    assert spread.mean() == pytest.approx(2 * k**2 * total, rel=0.03)
    assert skill.mean() == pytest.approx((1 + k**2) * total, rel=0.03)
    # With the truth at the samples' own mean, skill is (n − 1)/(2n) of the spread, per simulation exactly.
    spread, skill = dg.spread_and_skill(samples, samples.mean(1))
    np.testing.assert_allclose(skill, spread * (n - 1) / (2 * n), rtol=1e-10)


def test_spread_skill_rejects_a_single_sample():
    with pytest.raises(ValueError):
        dg.spread_skill(np.zeros((5, 1, 4)), np.zeros((5, 4)))


@pytest.fixture(scope="module")
def tarp_curves():
    rng = np.random.default_rng(0)
    return {k: dg.tarp_coverage(*_gaussian_sims(rng, k), key=k_i, n_alpha=50)
            for k_i, k in enumerate((1.0, 0.5, 2.0))}


def test_tarp_calibrated(tarp_curves):
    alpha, ecp = tarp_curves[1.0]
    assert ecp[0] == 0 and ecp[-1] == 1 and np.all(np.diff(ecp) >= 0)
    # f is exactly uniform for the true posterior, so the sup deviation follows KS:
    # 1.63/√n is its 99% quantile.
    assert dg.max_calibration_error(alpha, ecp) < 1.63 / np.sqrt(1000)


def test_tarp_direction(tarp_curves):
    alpha, under = tarp_curves[0.5]  # under-dispersed: over-confident
    _, over = tarp_curves[2.0]
    i = np.searchsorted(alpha, 0.8)
    assert dg.max_calibration_error(alpha, under) > 0.1 and dg.max_calibration_error(alpha, over) > 0.1
    assert under[i] < alpha[i] - 0.05 and over[i] > alpha[i] + 0.05
    assert dg.coverage_bias(alpha, under) < -0.02 and dg.coverage_bias(alpha, over) > 0.02
    # ½ − mean f for 1000 uniform f: std 0.289/√1000 ≈ 0.009; allow 3σ.
    assert abs(dg.coverage_bias(*tarp_curves[1.0])) < 0.027


def test_tarp_statistic_counts_closer_samples():
    """floor((n+1) f) is the number of samples closer to the reference than the truth (numpy oracle)."""
    rng = np.random.default_rng(3)
    samples, truth = _gaussian_sims(rng, 1.0, n_sims=1000, n_samples=100)
    refs = rng.uniform(0, 1, truth.shape).astype(np.float32)
    f = np.asarray(dg.tarp_statistic(samples, truth, key=jax.random.key(0), references=refs))
    lo, hi = truth.min(0), truth.max(0)
    s, t = (samples - lo) / (hi - lo), (truth - lo) / (hi - lo)
    k = np.sum(np.linalg.norm(s - refs[:, None], axis=-1) < np.linalg.norm(t - refs, axis=-1)[:, None], axis=1)
    np.testing.assert_array_equal(np.floor(f * 101 + 1e-4).astype(int), k)
    f_int = np.asarray(dg.tarp_statistic(samples, truth, key=0, references=refs))
    np.testing.assert_array_equal(f, f_int)  # an int seed is jax.random.key(seed)


def test_tarp_bootstrap_std_matches_binomial():
    rng = np.random.default_rng(4)
    samples, truth = _gaussian_sims(rng, 1.0, n_sims=1000, n_samples=100)
    alpha, mean, std = dg.tarp_bootstrap(samples, truth, key=1, n_alpha=10, n_bootstrap=200)
    i = 5  # α = 0.5
    assert std[i] == pytest.approx(np.sqrt(0.25 / 1000), rel=0.25)
    assert abs(mean[i] - 0.5) < 4 * std[i]


def test_tarp_several_references_shrink_scatter():
    """Few simulations in many dimensions (the image case): averaging over reference draws keeps the
    curve unbiased, narrows its bootstrap band, and still separates a too-wide posterior."""
    rng = np.random.default_rng(5)
    calibrated = _gaussian_sims(rng, 1.0, n_sims=100, n_samples=4, dim=512)
    wide = _gaussian_sims(rng, 2.0, n_sims=100, n_samples=4, dim=512)
    _, _, std1 = dg.tarp_bootstrap(*calibrated, key=2, n_alpha=10, n_bootstrap=200)
    alpha, mean, std32 = dg.tarp_bootstrap(*calibrated, key=2, n_alpha=10, n_bootstrap=200, n_references=32)
    assert std32[5] < 0.6 * std1[5]
    assert dg.max_calibration_error(alpha, mean) < 1.63 / np.sqrt(100)
    a, ecp = dg.tarp_coverage(*calibrated, key=3, n_alpha=10, n_references=32)
    np.testing.assert_allclose(ecp, mean, atol=4 * std32.max())
    _, over = dg.tarp_coverage(*wide, key=3, n_alpha=10, n_references=32)
    assert dg.coverage_bias(a, over) > 0.1
    with pytest.raises(ValueError, match="n_references"):
        dg.tarp_coverage(*calibrated, key=3, n_references=0)


def test_tarp_errors():
    s, t = np.zeros((10, 5, 3)), np.zeros((10, 3))
    with pytest.raises(ValueError, match="truths"):
        dg.tarp_coverage(s, t[:, :2], key=0)
    with pytest.raises(ValueError, match="samples"):
        dg.tarp_coverage(s[:, :, 0], t, key=0)
    with pytest.raises(ValueError, match="typed key"):
        dg.tarp_coverage(s, t, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="equal length"):
        dg.max_calibration_error(np.linspace(0, 1, 5), np.linspace(0, 1, 4))


# ------------------------------------------------------------------ morphology


def _gaussian(n, sx, sy, phi=0.0, x0=0.0, y0=0.0):
    c = np.arange(n) - (n - 1) / 2
    x, y = np.meshgrid(c - x0, c - y0)
    xr = np.cos(phi) * x + np.sin(phi) * y
    yr = -np.sin(phi) * x + np.cos(phi) * y
    return np.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2))


def test_morphology_round_gaussian_closed_forms():
    s = 6.0
    img = _gaussian(64, s, s, x0=0.3, y0=-0.2)
    xc, yc = dg.centroid(img)
    assert (xc, yc) == (pytest.approx(31.8, abs=1e-6), pytest.approx(31.3, abs=1e-6))
    assert dg.total_flux(img) == pytest.approx(2 * np.pi * s**2, rel=1e-6)
    # r_f = σ √(−2 ln(1 − f)) for a circular Gaussian.
    assert dg.half_light_radius(img) == pytest.approx(s * np.sqrt(2 * np.log(2)), rel=0.01)
    assert dg.flux_radius(img, 0.9) == pytest.approx(s * np.sqrt(-2 * np.log(0.1)), rel=0.01)
    assert dg.concentration(img) == pytest.approx(2.5 * np.log10(np.log(5) / np.log(1.25)), abs=0.04)


@pytest.mark.parametrize("q, phi", [(0.5, 0.4), (0.8, -1.0), (1.0, 0.0)])
def test_ellipticity_closed_form(q, phi):
    e1, e2 = dg.ellipticity(_gaussian(64, 6.0, 6.0 * q, phi))
    c = (1 - q) / (1 + q)
    assert e1 == pytest.approx(c * np.cos(2 * phi), abs=1e-4)
    assert e2 == pytest.approx(c * np.sin(2 * phi), abs=1e-4)


def test_morphology_batch_and_degenerate():
    imgs = np.stack([_gaussian(32, 3.0, 3.0), _gaussian(32, 4.0, 2.0), np.zeros((32, 32))])
    m = dg.morphology(imgs.reshape(3, 1, 32, 32))
    assert m.r50.shape == (3, 1)
    assert np.isfinite(m.r50[:2]).all() and np.isnan(m.r50[2, 0]) and np.isnan(m.e[2, 0])
    np.testing.assert_allclose(m.r50[:, 0], dg.half_light_radius(imgs))
    with pytest.raises(ValueError, match="fraction"):
        dg.flux_radius(imgs, 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        dg.total_flux(np.full((4, 4), np.nan))


@pytest.mark.parametrize("n_a, n_b, ints", [(50, 80, False), (200, 200, True), (1, 7, False)])
def test_ks_distance_matches_scipy(n_a, n_b, ints):
    rng = np.random.default_rng(n_a)
    a, b = rng.normal(size=n_a), rng.normal(0.3, 1.2, size=n_b)
    if ints:  # ties
        a, b = np.round(a * 2), np.round(b * 2)
    assert dg.ks_distance(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    with pytest.raises(ValueError):
        dg.ks_distance(a, [np.nan])


def test_morphology_ks_populations():
    rng = np.random.default_rng(5)
    small = np.stack([_gaussian(32, s, s) for s in rng.uniform(2.0, 2.5, 20)])
    large = np.stack([_gaussian(32, s, s) for s in rng.uniform(4.0, 4.5, 20)])
    ks = dg.morphology_ks(small, large)
    assert ks["r50"] == 1.0 and ks["flux"] == 1.0
    assert dg.morphology_ks(small, small)["r50"] == 0.0


# ------------------------------------------------------------------ figures (light)


def _png_size(path):
    return imread(path).shape[:2]


def test_figure1_and_shape_errors(tmp_path):
    rng = np.random.default_rng(6)
    kw = dict(truth_source=rng.random((8, 8)), observation=rng.random((6, 6, 1)),
              samples=rng.random((3, 8, 8, 1)), lens_images_of_samples=rng.random((3, 6, 6, 1)),
              sigma_n=0.1, truth_lensed=rng.random((6, 6)), src_fov=2.0, img_fov=3.0)
    path = dg.figure1(tmp_path / "f1.png", figsize=(9.0, 3.0), dpi=40, **kw)
    assert _png_size(path) == (120, 360)
    # Observed data: no truth, so its two source-plane panels stay empty (white), the others are drawn.
    real = dg.figure1(tmp_path / "real.png", figsize=(9.0, 3.0), dpi=40, **{**kw, "truth_source": None,
                                                                         "truth_lensed": None})
    img = imread(real)[..., :3]
    top_left, top_right, top_mid = img[10:50, 5:50], img[10:50, -55:-10], img[10:50, 70:120]
    assert np.all(top_left > 0.99) and np.all(top_right > 0.99) and not np.all(top_mid > 0.99)
    with pytest.raises(ValueError, match="do not match truth_source"):
        dg.figure1(tmp_path / "x.png", **{**kw, "samples": rng.random((3, 7, 8, 1))})
    with pytest.raises(ValueError, match="N ≥ 2"):
        dg.figure1(tmp_path / "x.png", **{**kw, "lens_images_of_samples": rng.random((2, 6, 6, 1))})
    assert not (tmp_path / "x.png").exists()


def test_grids_coverage_and_noise_sweep(tmp_path):
    rng = np.random.default_rng(7)
    s = rng.random((5, 8, 8, 1))
    assert _png_size(dg.figure3(tmp_path / "f3.png", s, np.ones(5), ncols=3, figsize=(3, 2), dpi=50)) == (100, 150)
    with pytest.raises(ValueError, match="chi2"):
        dg.figure3(tmp_path / "x.png", s, np.ones(4))
    path = dg.image_grid(tmp_path / "g.pdf", s[..., 0], 2, titles=list("abcde"))
    assert path.read_bytes()[:4] == b"%PDF"
    with pytest.raises(ValueError, match="titles"):
        dg.image_grid(tmp_path / "x.png", s, 2, titles=["a"])
    a = np.linspace(0, 1, 11)
    path = dg.coverage_plot(tmp_path / "c.png", {"ok": (a, a), "boot": (a, a**1.2, np.full(11, 0.02))},
                            figsize=(3, 3), dpi=40)
    assert _png_size(path) == (120, 120)
    with pytest.raises(ValueError, match="curve"):
        dg.coverage_plot(tmp_path / "x.png", {"bad": (a, a[:5])})
    path = dg.noise_sweep_figure(tmp_path / "n.png", truth_source=s[0], observations=rng.random((3, 6, 6)),
                                 samples=s[:3], noise_levels=[0.01, 0.1, 1.0], truth_lensed=rng.random((6, 6)),
                                 figsize=(4, 2), dpi=40)
    assert _png_size(path) == (80, 160)
    with pytest.raises(ValueError, match="per noise level"):
        dg.noise_sweep_figure(tmp_path / "x.png", truth_source=s[0], observations=rng.random((2, 6, 6)),
                              samples=s[:3], noise_levels=[0.01, 0.1, 1.0])
    assert not (tmp_path / "x.png").exists()


def test_prior_quality_sees_no_gap_between_two_draws_of_the_data_and_a_large_one_against_noise():
    from jaxlens.data import VALIDATION_SEED_START, procedural_galaxies

    data = procedural_galaxies((VALIDATION_SEED_START, 120), 32)
    same = dg.prior_quality(procedural_galaxies((VALIDATION_SEED_START + 5000, 180), 32), data,
                            key=jax.random.key(0))
    # Two samples of one distribution: every KS distance within its 95 % critical value (a margin for 6 tests).
    assert all(same[f"ks_{n}"] < 1.3 * same["ks_floor"] for n in ("flux", "r50", "concentration", "e"))
    assert same["tarp_max_dev"] < 0.3 and same["n_samples"] == 180 and same["n_data"] == 120
    blobs = np.random.default_rng(1).normal(0.2, 0.2, (180, 32, 32))
    blobs[0, 3, 3] = np.nan  # a non-finite draw is dropped and counted
    far = dg.prior_quality(blobs, data, key=jax.random.key(0))
    assert far["non_finite"] == 1 and far["n_samples"] == 179
    assert min(far[f"ks_{n}"] for n in ("flux", "r50", "concentration")) > 3 * far["ks_floor"]
    with pytest.raises(ValueError, match="finite prior samples"):
        dg.prior_quality(blobs[:2], data, key=jax.random.key(0), samples_per_truth=2)


def test_tarp_summary_on_images_with_an_empty_background():
    """Image posteriors: a source in the middle, a background where the truths are nearly 0 (faint wings) and
    the samples carry a little noise. The summary (plain distances) finds the calibrated posterior within its
    own noise floor and the too-wide one; the TARP paper's per-pixel normalisation by the truths' range blows
    the background noise up and calls even the calibrated posterior under-confident."""
    rng = np.random.default_rng(6)
    n_sims, n_samples, dim, source = 200, 4, 256, 64
    mu = np.zeros((n_sims, dim))
    mu[:, :source] = rng.uniform(-5, 5, (n_sims, source))
    sigma = np.full(dim, 1e-3)
    sigma[:source] = 1.0
    background = np.arange(dim) >= source
    truth = mu + np.where(background, 1e-5 * rng.random(mu.shape), sigma * rng.normal(size=mu.shape))
    exact = mu[:, None] + sigma * rng.normal(size=(n_sims, n_samples, dim))
    wide = mu[:, None] + 2 * sigma * rng.normal(size=(n_sims, n_samples, dim))
    good = dg.tarp_summary(exact, truth, key=0, n_references=16, n_bootstrap=50)
    bad = dg.tarp_summary(wide, truth, key=0, n_references=16, n_bootstrap=50)
    assert good["max_dev"] < good["floor_dev"] + 3 * good["max_dev_std"]
    assert bad["max_dev"] > 0.2 and bad["signed_area"] > 0.1
    alpha, normalised = dg.tarp_coverage(exact[:, 1:], truth, key=0, n_references=16)
    assert dg.coverage_bias(alpha, normalised) > 0.3
    with pytest.raises(ValueError, match="S >= 3"):
        dg.tarp_summary(exact[:, :2], truth, key=0)
