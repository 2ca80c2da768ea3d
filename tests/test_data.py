"""Tests for jaxlens.data: procedural galaxies, TFDS builders, normalisation, pipeline."""

import dataclasses
import importlib.util
import os
import sys
import zlib

import jax
import numpy as np
import pytest
from astropy.io import fits
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import integrate, special

from jaxlens import data
from jaxlens.data import builders

# ----------------------------------------------------------------------------- generator


@pytest.mark.parametrize("npix", [32, 64, 128])
def test_generator_shapes_values(npix):
    images = data.procedural_galaxies((0, 12), npix)
    assert images.shape == (12, npix, npix) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and images.min() >= 0
    peaks = images.max(axis=(1, 2))
    assert np.all((peaks >= 0.7 - 1e-6) & (peaks <= 1 + 1e-6))
    assert data.procedural_galaxy(3, npix, channel_axis=True).shape == (npix, npix, 1)


def test_generator_deterministic_and_distinct():
    a, b = data.procedural_galaxy(11, 64), data.procedural_galaxy(11, 64)
    np.testing.assert_array_equal(a, b)
    others = data.procedural_galaxies([12, 13, 14], 64)
    for o in others:
        assert np.abs(o - a).max() > 0.05


def test_generator_centred_and_fills_stamp():
    npix = 64
    images = data.procedural_galaxies((100, 60), npix).astype(np.float64)
    c = np.arange(npix) - (npix - 1) / 2
    flux = images.sum(axis=(1, 2))
    cy = (images.sum(2) * c).sum(1) / flux
    cx = (images.sum(1) * c).sum(1) / flux
    off = np.hypot(cx, cy) / npix
    assert np.median(off) < 0.03 and off.max() < 0.15
    # Half-light radius: a good fraction of the stamp, as in PROBES cutouts.
    r = np.hypot(c[None, :], c[:, None]) / npix
    order = np.argsort(r.ravel())
    cum = np.cumsum(images.reshape(len(images), -1)[:, order], axis=1) / flux[:, None]
    r_half = r.ravel()[order][np.argmax(cum >= 0.5, axis=1)]
    assert 0.03 < np.median(r_half) < 0.2


def test_generator_same_galaxy_at_any_npix():
    """Sizes are in stamp units: the 128² image block-averaged to 64² matches the 64² one."""
    for seed in (5, 21, 29, 40):
        hi = data.procedural_galaxy(seed, 128).astype(np.float64)
        lo = data.procedural_galaxy(seed, 64).astype(np.float64)
        hi = hi.reshape(64, 2, 64, 2).mean((1, 3))
        hi, lo = hi / hi.sum(), lo / lo.sum()
        assert np.abs(hi - lo).sum() < 0.03


def test_generator_kinds():
    kinds = {data.draw_params(np.random.default_rng(s)).kind for s in range(60)}
    assert kinds == set(data.KINDS)
    spiral = data.draw_params(np.random.default_rng(0), kind="spiral")
    assert spiral.n_arms in (2, 3, 4) and 12 <= abs(np.degrees(spiral.pitch)) <= 32
    merger = data.draw_params(np.random.default_rng(1), kind="merger")
    assert merger.companion is not None and len(merger.tail_flux) > 0
    with pytest.raises(ValueError, match="kind"):
        data.draw_params(np.random.default_rng(0), kind="quasar")
    with pytest.raises(ValueError, match="seed"):
        data.procedural_galaxy(-1, 32)


def _bulge_only(n, r_e):
    p = data.draw_params(np.random.default_rng(3), kind="elliptical")
    assert p.disk_flux == 0 and p.companion is None and len(p.clump_flux) == 0 and len(p.tail_flux) == 0
    return dataclasses.replace(p, center=(0.0, 0.0), q_bulge=1.0, sersic_n=n, r_e=r_e, bulge_flux=1.0,
                               dust_tau=0.0, lopsided=0.0)


@pytest.mark.parametrize("n", [1.0, 2.5, 4.0])
def test_sersic_profile_matches_closed_form(n):
    npix, r_e = 128, 0.1
    img = data.render(_bulge_only(n, r_e), npix, taper=False, normalize=False).astype(np.float64)
    # Closed form with the exact b_n (Γ(2n) = 2γ(2n, b_n)) and total flux 1 (stamp units).
    b = special.gammaincinv(2 * n, 0.5)
    i_e = 1.0 / (2 * np.pi * r_e**2 * n * np.exp(b) * b ** (-2 * n) * special.gamma(2 * n))
    c = (np.arange(npix) - (npix - 1) / 2) / npix
    r = np.hypot(c[None, :], c[:, None])
    ring = np.floor(r * npix).astype(int)  # one-pixel annuli
    for k in range(2, 45):
        sel = ring == k
        analytic = np.mean(i_e * np.exp(-b * ((r[sel] / r_e) ** (1 / n) - 1)))
        assert img[sel].mean() == pytest.approx(analytic, rel=0.02), k
    # Half of the light inside r_e (flux per pixel = SB × npix⁻²), up to pixelisation.
    inside = img[r < r_e].sum() / npix**2
    assert inside == pytest.approx(0.5, rel=0.03)


@pytest.mark.parametrize("npix,n,r_e,x0", [(64, 4.0, 0.015, 0.0), (32, 4.0, 0.02, 0.0), (63, 2.5, 0.015, 0.3 / 63)])
def test_compact_bulge_pixels_are_pixel_integrals(npix, n, r_e, x0):
    """Pixels at a cuspy bulge centre equal the closed form integrated over the pixel (the
    3×3 sub-sampling alone is 5-16% low there)."""
    p = dataclasses.replace(_bulge_only(n, r_e), center=(x0, 0.0))
    img = data.render(p, npix, taper=False, normalize=False).astype(np.float64)
    b = special.gammaincinv(2 * n, 0.5)
    i_e = 1.0 / (2 * np.pi * r_e**2 * n * np.exp(b) * b ** (-2 * n) * special.gamma(2 * n))
    h = 0.5 / npix
    m = npix // 2
    for i, j in [(m, m), (m - 1, m), (m, m + 1), (m + 2, m + 2)]:
        yc, xc = (i - (npix - 1) / 2) / npix, (j - (npix - 1) / 2) / npix
        val, _ = integrate.dblquad(lambda y, x: i_e * np.exp(-b * ((np.hypot(x - x0, y) / r_e) ** (1 / n) - 1)),
                                   xc - h, xc + h, yc - h, yc + h, epsabs=1e-12, epsrel=1e-9)
        assert img[i, j] == pytest.approx(val / (2 * h) ** 2, rel=0.01), (i, j)


def test_sersic_b_approximation():
    # Ciotti & Bertin's series is asymptotic in n: 3e-5 at n = 1, better above.
    for n in (1.0, 1.5, 2.5, 4.0, 5.5):
        assert data.sersic_b(n) == pytest.approx(special.gammaincinv(2 * n, 0.5), rel=3e-5)


# ----------------------------------------------------------------------------- normalisation


def test_normalization():
    img = np.array([[0.0, 1.0], [2.0, 5.0]])
    np.testing.assert_allclose(data.Normalization("peak").apply(img), img / 5)
    np.testing.assert_allclose(data.Normalization("sum", scale=2.0).apply(img), img / 4)
    np.testing.assert_allclose(data.Normalization("fixed", scale=2.0, clip=3.0).apply(img), np.minimum(img, 3) / 2)
    np.testing.assert_allclose(data.Normalization("none").apply(img), img)
    for spec in ("peak", "sum2", "fixed1.48_clip1.48", "none", "peak_pos"):
        assert data.Normalization.parse(spec).tag == spec
    with pytest.raises(ValueError, match="kind"):
        data.Normalization("max")
    with pytest.raises(ValueError, match="non-finite"):
        data.Normalization("peak").apply(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="<= 0"):
        data.Normalization("peak").apply(np.zeros((3, 3)))


# ----------------------------------------------------------------------------- builders


def test_procedural_builder_array_record_without_tensorflow(tmp_path):
    import tensorflow_datasets as tfds

    src = data.load_source("procedural_galaxies", str(tmp_path / "tfds"), npix=32, count=12, seed_offset=3)
    files = sorted(os.listdir(tmp_path / "tfds/procedural_galaxies/npix32_n12_s3/1.0.0"))
    assert any(f.startswith("procedural_galaxies-train.array_record") for f in files)
    assert len(src) == 12
    # Plain TFDS reads the same files by name.
    for split, start, count in (("train", 3, 12), ("validation", builders.VALIDATION_SEED_START + 3, 1)):
        ds = tfds.data_source("procedural_galaxies/npix32_n12_s3", data_dir=str(tmp_path / "tfds"), split=split)
        expected = data.procedural_galaxies((start, count), 32, channel_axis=True)
        assert len(ds) == count
        for k in range(count):
            assert ds[k]["id"].decode() == str(start + k)
            np.testing.assert_array_equal(ds[k]["image"], expected[k])
    assert builders.HELD_OUT_SEED_START > builders.VALIDATION_SEED_START + 12
    assert "tensorflow" not in sys.modules
    assert importlib.util.find_spec("tensorflow") is None


def _write(path, array):
    fits.PrimaryHDU(np.asarray(array, np.float32)).writeto(path)


def _blob(shape, row, col):
    """Symmetric 5×5 pattern centred on (row, col): its flux-weighted centroid is exact."""
    img = np.zeros(shape)
    k = np.array([1.0, 3.0, 6.0, 3.0, 1.0])
    img[row - 2: row + 3, col - 2: col + 3] = np.outer(k, k)
    return img


@pytest.fixture(scope="module")
def cutouts(tmp_path_factory):
    """Two folders: 2D cutouts of different sizes, and one band cube."""
    d = tmp_path_factory.mktemp("cutouts")
    a = _blob((81, 81), 30, 50)  # off-centre: the window runs off the array (zero padding)
    _write(d / "a.fits", a)
    _write(d / "c.fits.gz", np.full((20, 20), 3.0))  # smaller than npix: enlarged
    cubes = tmp_path_factory.mktemp("cube")
    cube = np.random.default_rng(0).uniform(0, 1, (3, 60, 60))  # (C, H, W) in FITS order
    cube[:, 20, 25] += 10.0
    _write(cubes / "b.fits", cube)
    return d, cubes, a, cube


def test_probes_builder_centring_cropping_resizing(tmp_path, cutouts):
    folder, _, a, _ = cutouts
    src = data.load_source("probes", str(tmp_path), npix=27, manual_dir=str(folder), validation_fraction=0.0)
    assert len(src) == 2 and [x["id"].decode() for x in src] == ["a.fits", "c.fits.gz"]
    # a: centroid (30, 50) → 81-pixel window rows -10..70, cols 10..90; 3× block average.
    win = np.pad(a, 40)[30:30 + 81, 50:50 + 81]
    ea = win.reshape(27, 3, 27, 3).mean((1, 3))
    np.testing.assert_allclose(src[0]["image"][..., 0], ea / ea.max(), rtol=1e-5, atol=1e-7)
    # c: a flat 20² image is centred already and stays flat when enlarged.
    np.testing.assert_allclose(src[1]["image"], np.ones((27, 27, 1)), rtol=1e-5)


def test_fits_folder_peak_centring_bands_area_resize(tmp_path, cutouts):
    folder, cubes, _, cube = cutouts
    src = data.load_source("fits_folder", str(tmp_path), npix=27, manual_dir=str(cubes), validation_fraction=0.0,
                           centre="peak", bands=(1,))
    # Peak (20, 25) → 60-pixel window rows -9..50, cols -4..55, band 1; then 60 → 27 by
    # area: replicate each pixel 9× and average 20×20 blocks (540 = 27·20).
    band = np.pad(cube[1], ((9, 0), (4, 0)))[:60, :60]
    eb = np.repeat(np.repeat(band, 9, 0), 9, 1).reshape(27, 20, 27, 20).mean((1, 3))
    np.testing.assert_allclose(src[0]["image"][..., 0], eb / eb.max(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="band"):  # 2D files have one band
        data.load_source("fits_folder", str(tmp_path / "x"), npix=27, manual_dir=str(folder),
                         validation_fraction=0.0, bands=(1,))


def test_fits_folder_splits_and_multiband(tmp_path, cutouts):
    folder = cutouts[0]
    cubes = tmp_path / "cubes"
    cubes.mkdir()
    for k in range(12):
        _write(cubes / f"g{k:02d}.fits", np.random.default_rng(k).uniform(0, 1, (3, 16, 16)))
    opts = dict(npix=8, channels=3, manual_dir=str(cubes), normalization="none", validation_fraction=0.4,
                centre="none")
    tr = data.load_source("fits_folder", str(tmp_path / "d"), **opts)
    va = data.load_source("fits_folder", str(tmp_path / "d"), split="validation", **opts)
    ids = {s: [x["id"].decode() for x in src] for s, src in (("train", tr), ("validation", va))}
    names = [f"g{k:02d}.fits" for k in range(12)]
    want_val = [f for f in names if zlib.crc32(f.encode()) / 2**32 < 0.4]
    assert ids["validation"] == want_val and ids["train"] == [f for f in names if f not in want_val]
    img = np.moveaxis(np.random.default_rng(int(ids["train"][0][1:3])).uniform(0, 1, (3, 16, 16)), 0, -1)
    np.testing.assert_allclose(tr[0]["image"], img.reshape(8, 2, 8, 2, 3).mean((1, 3)), rtol=1e-5)
    assert len(data.load_source("fits_folder", str(tmp_path / "d"), count=2, **opts)) == 2
    assert len(data.load_source("fits_folder", str(tmp_path / "d"), count=100, **opts)) == len(tr)
    # Another folder in the same data_dir is another data set.
    other = data.load_source("fits_folder", str(tmp_path / "d"), npix=8, manual_dir=str(folder),
                             validation_fraction=0.0)
    assert len(other) == 2 and len(tr) + len(va) == 12


def test_builder_errors(tmp_path, cutouts):
    folder = cutouts[0]
    with pytest.raises(ValueError, match="manual_dir"):
        data.load_source("probes", str(tmp_path), npix=16)
    with pytest.raises(ValueError, match="manual_dir"):
        data.load_source("probes", str(tmp_path), npix=16, manual_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="parent"):
        data.load_source("procedural_galaxies", str(tmp_path / "no" / "such"), npix=16, count=2)
    with pytest.raises(ValueError, match="unknown data set"):
        data.load_source("cosmos", str(tmp_path), npix=16)
    with pytest.raises(ValueError, match="npix=27"):  # 81² window, resizing not allowed
        data.load_source("fits_folder", str(tmp_path / "r"), npix=27, manual_dir=str(folder), allow_resize=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    img = np.ones((16, 16))
    img[3, 4] = np.nan
    _write(bad / "nan.fits", img)
    with pytest.raises(ValueError, match="non-finite"):
        data.load_source("fits_folder", str(tmp_path / "n"), npix=16, manual_dir=str(bad))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no FITS files"):
        data.load_source("fits_folder", str(tmp_path / "e"), npix=16, manual_dir=str(empty))


# ----------------------------------------------------------------------------- pipeline


def _dihedral_set(x):
    return [np.rot90(y, k, axes=(0, 1)) for y in (x, np.swapaxes(x, 0, 1)) for k in range(4)]


def test_batches_deterministic_and_epochs():
    source = np.random.default_rng(0).normal(size=(10, 6, 6, 2)).astype(np.float32)
    a = data.get_batch(source, 7, seed=3, batch_size=4)
    np.testing.assert_array_equal(a, data.get_batch(source, 7, seed=3, batch_size=4))
    assert not np.array_equal(a, data.get_batch(source, 8, seed=3, batch_size=4))
    assert not np.array_equal(a, data.get_batch(source, 7, seed=4, batch_size=4))
    order = np.concatenate([data.batch_indices(s, seed=3, batch_size=4, n_examples=10) for s in range(10)])
    for e in range(4):
        assert sorted(order[10 * e: 10 * e + 10]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])


def test_augmentation_is_dihedral():
    source = np.random.default_rng(1).normal(size=(5, 7, 7, 1)).astype(np.float32)
    codes_seen = set()
    for step in range(6):
        idx = data.batch_indices(step, seed=0, batch_size=5, n_examples=5)
        batch = data.get_batch(source, step, seed=0, batch_size=5)
        codes_seen |= set(data.augmentation_codes(step, seed=0, batch_size=5).tolist())
        for img, i in zip(batch, idx):
            assert sum(np.array_equal(img, t) for t in _dihedral_set(source[i])) >= 1
        plain = data.get_batch(source, step, seed=0, batch_size=5, augment=False)
        np.testing.assert_array_equal(plain, source[idx])
    assert len(codes_seen) >= 6


def test_process_slices_and_errors():
    source = np.random.default_rng(2).normal(size=(9, 4, 4, 1)).astype(np.float32)
    full = data.get_batch(source, 5, seed=1, batch_size=6, process_index=0, process_count=1)
    parts = [data.get_batch(source, 5, seed=1, batch_size=6, process_index=i, process_count=3) for i in range(3)]
    np.testing.assert_array_equal(np.concatenate(parts), full)
    with pytest.raises(ValueError, match="divide"):
        data.get_batch(source, 0, seed=1, batch_size=5, process_index=0, process_count=2)
    bad = source.copy()
    bad[4, 1, 1, 0] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        for step in range(3):
            data.get_batch(bad, step, seed=0, batch_size=9)
    with pytest.raises(ValueError, match="step"):
        data.get_batch(source, -1, seed=0, batch_size=2)


def test_shard_batch_over_8_devices():
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch = np.random.default_rng(3).normal(size=(16, 8, 8, 1)).astype(np.float32)
    arr = data.shard_batch(batch, mesh)
    assert arr.sharding == NamedSharding(mesh, PartitionSpec("data"))
    assert len(arr.addressable_shards) == 8
    assert all(s.data.shape == (2, 8, 8, 1) for s in arr.addressable_shards)
    np.testing.assert_array_equal(np.asarray(arr), batch)
    total = jax.jit(lambda x: x.sum())(arr)
    assert float(total) == pytest.approx(float(batch.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="split"):
        data.shard_batch(batch[:12], mesh)
