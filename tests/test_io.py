"""Tests of jaxlens.io: FITS/JSON/NPZ reading with validation, atomic writing, output folders."""

import json
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from jaxlens import io

LENS = {"theta_e": 1.2, "e1": 0.1, "e2": -0.05, "center_x": 0.03, "center_y": -0.02, "gamma1": 0.02, "gamma2": 0.01}


def _fits(path, data, **kw):
    fits.PrimaryHDU(data, **kw).writeto(path)
    return path


# ------------------------------------------------------------------ read_image


def test_read_image_big_endian_to_native_float32(tmp_path):
    data = np.arange(12.0).reshape(3, 4).astype(">f8")
    img = io.read_image(_fits(tmp_path / "a.fits", data))
    assert img.dtype == np.float32 and img.dtype.isnative
    assert img.shape == (3, 4)  # [NAXIS2, NAXIS1] = [H, W]
    np.testing.assert_array_equal(img, data.astype(np.float32))


def test_read_image_applies_bscale_bzero(tmp_path):
    hdu = fits.PrimaryHDU(np.array([[0, 1], [2, 3]], dtype=np.int16))
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.writeto(tmp_path / "s.fits")
    np.testing.assert_allclose(io.read_image(tmp_path / "s.fits"), [[10, 10.5], [11, 11.5]])


def test_read_image_finds_first_image_extension_and_by_name(tmp_path):
    a, b = np.ones((4, 4)), np.full((5, 5), 2.0)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(a, name="SCI"), fits.ImageHDU(b, name="ERR")]).writeto(
        tmp_path / "m.fits"
    )
    np.testing.assert_array_equal(io.read_image(tmp_path / "m.fits"), a)
    np.testing.assert_array_equal(io.read_image(tmp_path / "m.fits", hdu="ERR"), b)
    with pytest.raises(ValueError, match="no HDU"):
        io.read_image(tmp_path / "m.fits", hdu="NOPE")


def test_read_image_drops_singleton_axes_and_returns_header(tmp_path):
    path = _fits(tmp_path / "c.fits", np.ones((1, 6, 5)))
    img, hdr = io.read_image(path, return_header=True)
    assert img.shape == (6, 5) and hdr["NAXIS1"] == 5


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_text("not fits"), "not a readable FITS"),
        (lambda p: fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
            [fits.Column(name="a", format="E", array=np.ones(3))])]).writeto(p), "no image data"),
        (lambda p: fits.PrimaryHDU(np.ones((2, 4, 4))).writeto(p), "2-D"),
        (lambda p: fits.PrimaryHDU(np.ones(7)).writeto(p), "2-D"),
    ],
)
def test_read_image_errors(tmp_path, setup, match):
    path = tmp_path / "x.fits"
    setup(path)
    with pytest.raises(ValueError, match=match):
        io.read_image(path, name="observation")


def test_read_image_nonfinite(tmp_path):
    data = np.ones((4, 4))
    data[1, 2] = np.nan
    data[0, 0] = np.inf
    path = _fits(tmp_path / "n.fits", data)
    with pytest.raises(ValueError, match="2 non-finite"):
        io.read_image(path)
    assert np.isnan(io.read_image(path, allow_nonfinite=True)[1, 2])


# ------------------------------------------------------------------ read_noise


@pytest.mark.parametrize("value, expected", [("0.05", 0.05), (" 1e-2 ", 0.01), (0.3, 0.3), (2, 2.0)])
def test_read_noise_numbers(value, expected):
    out = io.read_noise(value)
    assert isinstance(out, float) and out == pytest.approx(expected)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", -0.1, 0.0, True])
def test_read_noise_bad_numbers(value):
    with pytest.raises(ValueError):
        io.read_noise(value)


def test_read_noise_map_with_masked_pixels(tmp_path):
    sigma = np.full((4, 5), 0.1)
    sigma[2, 3] = np.inf
    out = io.read_noise(str(_fits(tmp_path / "s.fits", sigma)), shape=(4, 5))
    assert out.dtype == np.float32 and out.shape == (4, 5) and np.isinf(out[2, 3])
    with pytest.raises(ValueError, match="shape"):
        io.read_noise(tmp_path / "s.fits", shape=(5, 4))


@pytest.mark.parametrize("bad, match", [(0.0, "> 0"), (-1.0, "> 0"), (np.nan, "NaN"), (-np.inf, "-inf")])
def test_read_noise_map_errors(tmp_path, bad, match):
    sigma = np.full((3, 3), 0.1)
    sigma[1, 1] = bad
    path = _fits(tmp_path / "s.fits", sigma)
    with pytest.raises(ValueError, match=match):
        io.read_noise(path)
    with pytest.raises(ValueError, match="masks every pixel"):
        io.read_noise(np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match="not found"):
        io.read_noise(str(tmp_path / "missing.fits"))


# ------------------------------------------------------------------ read_psf


def _gauss_psf(n=7, s=1.2):
    c = np.arange(n) - n // 2
    g = np.exp(-0.5 * (c[:, None] ** 2 + c[None] ** 2) / s**2)
    return g / g.sum()


def test_read_psf_normalisation(tmp_path):
    psf = _gauss_psf()
    np.testing.assert_allclose(io.read_psf(_fits(tmp_path / "a.fits", psf)), psf, rtol=1e-6)
    near = io.read_psf(_fits(tmp_path / "b.fits", psf * 1.0005))  # within 1e-3: rescaled exactly
    assert near.sum() == pytest.approx(1.0, abs=1e-12)
    _fits(tmp_path / "c.fits", psf * 2.0)
    with pytest.raises(ValueError, match="normalize=True"):
        io.read_psf(tmp_path / "c.fits")
    np.testing.assert_allclose(io.read_psf(tmp_path / "c.fits", normalize=True), psf, rtol=1e-6)


@pytest.mark.parametrize(
    "psf, match",
    [(np.ones((4, 5)) / 20, "odd"), (np.ones((5, 4)) / 20, "odd"),
     (_gauss_psf() - 0.01, "negative"), (np.zeros((3, 3)), "sums to 0")],
)
def test_read_psf_errors(tmp_path, psf, match):
    with pytest.raises(ValueError, match=match):
        io.read_psf(_fits(tmp_path / "p.fits", psf))


# ------------------------------------------------------------------ lens JSON


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.pop("gamma2"), "missing keys \\['gamma2'\\]"),
        (lambda d: d.update(q=0.5), "unknown keys \\['q'\\]"),
        (lambda d: d.update(e1="0.1"), "e1 must be a finite number"),
        (lambda d: d.update(e1=True), "e1 must be a finite number"),
        (lambda d: d.update(theta_e=-1.0), "theta_e must be > 0"),
        (lambda d: d.update(e1=0.9, e2=0.9), "< 1"),
    ],
)
def test_read_lens_rejects(tmp_path, change, match):
    d = dict(LENS)
    change(d)
    (tmp_path / "lens.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match):
        io.read_lens(tmp_path / "lens.json")


def test_read_lens_bad_json_and_not_object(tmp_path):
    (tmp_path / "a.json").write_text("{theta_e: 1")
    with pytest.raises(ValueError, match="not valid JSON"):
        io.read_lens(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        io.read_lens(tmp_path / "b.json")


def test_write_lens_mapping_is_valid_json(tmp_path):
    io.write_lens(tmp_path / "l.json", LENS)
    assert json.loads((tmp_path / "l.json").read_text()) == LENS
    with pytest.raises(ValueError, match="missing"):
        io.write_lens(tmp_path / "m.json", {"theta_e": 1.0})
    assert not (tmp_path / "m.json").exists()


def test_lens_roundtrip_lensparams(tmp_path):
    lensing = pytest.importorskip("jaxlens.lensing")
    import jax.numpy as jnp

    lens = lensing.LensParams(**{k: jnp.float32(v) for k, v in LENS.items()})
    io.write_lens(tmp_path / "l.json", lens)
    back = io.read_lens(tmp_path / "l.json")
    assert isinstance(back, lensing.LensParams)
    for k in io.LENS_FIELDS:
        assert getattr(back, k) == pytest.approx(LENS[k], rel=1e-6)
    with pytest.raises(ValueError, match="one lens"):
        io.write_lens(tmp_path / "b.json", lensing.LensParams(theta_e=jnp.ones(3)))


# ------------------------------------------------------------------ headers and writing


def test_fits_header_keys():
    hdr = io.fits_header(
        {"n_steps": 1000, "checkpoint_path": "x" * 150, "sigma_n": 0.05, "exact": False,
         "chains": [4, 2], "note": None, "lr": float("nan")},
        bunit="erg/s/cm2/Hz/arcsec2",
    )
    assert hdr["N_STEPS"] == 1000 and hdr["SIGMA_N"] == 0.05 and hdr["EXACT"] is False
    assert hdr["HIERARCH checkpoint_path"] == "x" * 150  # HIERARCH + CONTINUE keeps it whole
    assert json.loads(hdr["CHAINS"]) == [4, 2] and hdr["NOTE"] == "None" and hdr["LR"] == "nan"
    assert hdr["BUNIT"] == "erg/s/cm2/Hz/arcsec2" and hdr["ORIGIN"].startswith("jaxlens")
    back = fits.Header.fromstring(hdr.tostring())  # the serialised header parses back
    assert back["HIERARCH checkpoint_path"] == "x" * 150


@pytest.mark.parametrize("key, match", [("NAXIS1", "structural"), ("BITPIX", "structural"),
                                        ("é", "ASCII"), ("a=b", "ASCII"), ("k" * 75, "does not fit")])
def test_fits_header_bad_keys(key, match):
    with pytest.raises(ValueError, match=match):
        io.fits_header({key: 1})


def test_fits_header_bad_value():
    with pytest.raises(ValueError, match="ASCII"):
        io.fits_header({"name": "galaxie\u00e9"})


@pytest.mark.parametrize("c", [1, 3])
def test_write_samples_layout_and_roundtrip(tmp_path, c):
    rng = np.random.default_rng(0)
    n, h, w = 5, 6, 6
    samples = rng.normal(size=(n, h, w, c)).astype(np.float32)
    fits_path, npz_path = io.write_samples(
        tmp_path / "out", samples, header={"n_steps": 10, "likelihood": "convolved"}, bunit="adu", fov=3.0
    )
    with fits.open(fits_path) as hdul:
        data, hdr = hdul[0].data, hdul[0].header
    if c == 1:
        assert data.shape == (n, h, w) and hdr["NAXIS3"] == n
        np.testing.assert_array_equal(data, samples[..., 0])
    else:
        assert data.shape == (n, c, h, w) and hdr["NAXIS4"] == n and hdr["NAXIS3"] == c
        np.testing.assert_array_equal(data, np.moveaxis(samples, -1, 1))
    assert hdr["NAXIS1"] == w and hdr["NSAMPLE"] == n and hdr["NCHAN"] == c and hdr["BUNIT"] == "adu"
    assert hdr["HIERARCH likelihood"] == "convolved"
    with np.load(npz_path) as z:
        np.testing.assert_array_equal(z["samples"], samples)
        assert json.loads(str(z["header"]))["n_steps"] == 10
    for p in (fits_path, npz_path):
        np.testing.assert_array_equal(io.read_samples(p), samples)
    assert sorted(os.listdir(tmp_path / "out")) == ["samples.fits", "samples.npz"]  # no temp files left


def test_write_map_wcs_matches_pixel_grid(tmp_path):
    """astropy.wcs must place pixel [i, j] at the jaxlens pixel centre (x_j, y_i)."""
    n, fov = 8, 4.0
    path = io.write_map(tmp_path / "m.fits", np.zeros((n, n)), {"kind": "mean"}, bunit="adu", fov=fov)
    wcs = WCS(fits.getheader(path))
    j, i = np.array([0, 3, 7]), np.array([7, 0, 2])
    x, y = wcs.pixel_to_world_values(j, i)  # astropy takes 0-based (x=j, y=i)
    centres = (np.arange(n) - (n - 1) / 2) * fov / n
    np.testing.assert_allclose(x, centres[j])
    np.testing.assert_allclose(y, centres[i])
    cube = io.write_map(tmp_path / "c.fits", np.zeros((4, 4, 2)))
    assert fits.getdata(cube).shape == (2, 4, 4)
    with pytest.raises(ValueError, match="\\[H, W\\]"):
        io.write_map(tmp_path / "d.fits", np.zeros(4))


def test_write_samples_validation(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        io.write_samples(tmp_path, np.full((2, 4, 4, 1), np.nan), header={})
    with pytest.raises(ValueError, match="\\[N, H, W, C\\]"):
        io.write_samples(tmp_path, np.zeros((4, 4)), header={})
    with pytest.raises(ValueError, match="square"):
        io.write_samples(tmp_path, np.zeros((2, 4, 6, 1)), header={}, fov=1.0)
    assert not any(tmp_path.iterdir())


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(RuntimeError):
        io.write_samples(tmp_path, np.zeros((2, 4, 4, 1)), header={})
    assert [p.name for p in tmp_path.iterdir()] == ["samples.fits"]  # the npz never appeared, no temp file


# ------------------------------------------------------------------ output folder


def test_prepare_out_dir(tmp_path):
    out = tmp_path / "run"
    assert io.prepare_out_dir(out, resume=False, overwrite=False) == out and out.is_dir()
    io.prepare_out_dir(out, resume=False, overwrite=False)  # empty: fine
    (out / "chunks").mkdir()
    np.savez(out / "chunks" / "chunk_00000.npz", samples=np.zeros((2, 4, 4, 1)))
    (out / "chunks" / "manifest.json").write_text("{}")
    (out / "samples.fits").write_text("old")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(io.OutputExistsError, match="--resume") as err:
        io.prepare_out_dir(out, resume=False, overwrite=False)
    assert isinstance(err.value, ValueError)
    assert (out / "samples.fits").read_text() == "old"
    io.prepare_out_dir(out, resume=True, overwrite=False)
    assert (out / "chunks" / "chunk_00000.npz").exists()
    io.prepare_out_dir(out, resume=False, overwrite=True)
    assert not (out / "samples.fits").exists()
    assert not (out / "chunks").exists()
    assert (out / "notes.txt").read_text() == "mine"  # only our own outputs are removed
    with pytest.raises(ValueError, match="exclude"):
        io.prepare_out_dir(out, resume=True, overwrite=True)
    with pytest.raises(ValueError, match="not a folder"):
        io.prepare_out_dir(out / "notes.txt", resume=False, overwrite=False)




def test_result_records_name_no_machine_path(tmp_path, monkeypatch):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(repo)
    out = tmp_path / "r.json"
    io.write_results(str(out), {"command": [os.path.join(repo, "experiments", "coverage.py"), "--lenses", "2",
                                            "--json", "a b.json"]})
    assert json.loads(out.read_text())["command"] == "python -m experiments.coverage --lenses 2 --json 'a b.json'"
    io.write_results(str(out), {"command": [str(tmp_path / "elsewhere" / "tool"), "--x"]})
    assert json.loads(out.read_text())["command"] == "tool --x"


def test_save_arrays_is_atomic(tmp_path):
    """A write that fails part-way leaves the previous cache whole, and no temporary file behind."""
    path = tmp_path / "cache" / "run.npz"
    io.save_arrays(path, done=np.arange(3))

    class Broken:
        def __array__(self, *args, **kwargs):
            raise RuntimeError("stopped mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        io.save_arrays(path, done=np.arange(5), more=Broken())
    with np.load(path) as cached:
        np.testing.assert_array_equal(cached["done"], np.arange(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.npz"]
