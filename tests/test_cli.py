"""bin/sample end to end on the shipped prior, and its refusals of bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "checkpoints", "procedural_64")
OUTPUTS = ["samples.fits", "samples.npz", "mean.fits", "std.fits", "observation.fits",
           "residual_lens.fits", "truth.fits", "residual_source.fits", "summary.json",
           "figure1.png", "figure3.png"]


def _sample(*args, timeout=900):
    env = dict(os.environ, XLA_FLAGS="")  # one CPU device: faster start
    return subprocess.run([sys.executable, os.path.join(REPO, "bin", "sample"), *args], env=env,
                          timeout=timeout, capture_output=True, text=True)


def test_shipped_prior_loads_and_matches_its_config():
    sys.path.insert(0, REPO)
    import jax

    from configs import procedural_64
    from jaxlens.cli import common
    from jaxlens.nn import param_count
    from jaxlens.prior import load_prior

    prior = load_prior(SHIPPED)
    config = procedural_64.get_config()
    # sigma_data is measured by bin/train ("auto"): the checkpoint's value, or none for an ε-network.
    assert prior.meta["model"] == common.architecture(config, sigma_data=prior.meta["model"].get("sigma_data", 0))
    assert prior.meta["image_shape"] == [64, 64, 1]
    n = sum(np.size(p) for p in jax.tree.leaves(prior.params))
    assert n == param_count(common.build_model(config, sigma_data=1.0), 64, 1)
    assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(prior.params))


def test_default_is_calibrated_and_paper_config_is_the_papers_eq19():
    sys.path.insert(0, REPO)
    from configs import paper_64, procedural_64
    from jaxlens.cli import common
    from jaxlens.sample import Eq19, Tweedie

    paper, default = paper_64.get_config().to_dict(), procedural_64.get_config().to_dict()
    changed = {k for k in default["sampling"] if paper["sampling"][k] != default["sampling"][k]}
    assert changed == {"likelihood", "n_steps"}
    paper.pop("sampling"), default.pop("sampling")
    assert paper == default  # the same prior, lens and data: both run on the shipped checkpoint
    # The default: Tweedie's own defaults (Lanczos cap 20, drift tolerance 0.05) at N = 57.
    options = common.sampling_options(procedural_64.get_config())
    assert (options.likelihood, options.n_steps) == (Tweedie(), 57)
    assert (Tweedie().lanczos_cap, Tweedie().drift_tol) == (20, 0.05)
    # The paper: eq. 19 at Technique 2's N (0: chosen per lens, with the eq. 19 stability bound).
    options = common.sampling_options(paper_64.get_config())
    assert (options.likelihood, options.n_steps, options.confidence) == (Eq19(), 0, 0.97)


def test_short_default_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    # The default: tweedie at N = 57.
    r = _sample(f"--out={out}", "--config.sampling.n_chains=2", "--config.sampling.chunk_size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    with fits.open(out / "samples.fits") as h:
        assert h[0].data.shape == (2, 64, 64)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_chains"] == 2 and summary["n_steps"] == 57 and len(summary["chi2_nu"]) == 2
    assert summary["settings"]["likelihood"] == "tweedie" and summary["settings"]["lanczos_cap"] == 20
    # Counted by the run: a linearisation and 1..20 Lanczos steps at each of the 57 steps.
    cost = summary["network_evaluations"]
    assert 2 * 57 <= cost["per_sample_min"] <= cost["per_sample_mean"] <= cost["per_sample_max"] <= 57 * 21
    assert cost["total"] == round(2 * cost["per_sample_mean"])
    assert summary["diverged_chains"] == [] and max(summary["chi2_nu"]) < 2
    assert summary["devices"]["count"] == 1 and summary["wall_time_s"] > 0
    assert "sampling (compile included)" in r.stdout
    # Chunks live in out/chunks, where --overwrite deletes them: a rerun recomputes instead of reloading.
    assert sorted(p.name for p in (out / "chunks").iterdir()) == ["chunk_00000.npz", "manifest.json"]
    r = _sample(f"--out={out}", "--overwrite", "--config.sampling.n_chains=2", "--config.sampling.chunk_size=2")
    assert r.returncode == 0, r.stderr[-3000:]
    again = json.loads((out / "summary.json").read_text())
    assert again["timings_s"]["sampling_s"] > 1.0  # 100 chain-steps with compilation: not a reload
    assert again["chi2_nu"] == summary["chi2_nu"]  # the same seeds: the same samples


@pytest.fixture()
def files(tmp_path):
    good = np.zeros((64, 64), np.float32)
    paths = {}
    for name, data in {"wrong_shape": np.zeros((50, 50), np.float32), "nan": good.copy(),
                       "psf_unnormalised": np.ones((5, 5)), "noise_zero": np.zeros((64, 64))}.items():
        if name == "nan":
            data[3, 4] = np.nan
        paths[name] = tmp_path / f"{name}.fits"
        fits.PrimaryHDU(data).writeto(paths[name])
    paths["good"] = tmp_path / "good.fits"
    fits.PrimaryHDU(good).writeto(paths["good"])
    return paths


def test_bad_input_exits_nonzero_and_leaves_out_untouched(tmp_path, files):
    out = tmp_path / "out"
    out.mkdir()
    sentinel = out / "keep.txt"
    sentinel.write_text("previous results")
    cases = {
        "observation of the wrong shape": [f"--observation={files['wrong_shape']}"],
        "NaN in an unmasked pixel": [f"--observation={files['nan']}"],
        "sigma_n <= 0": [f"--observation={files['good']}", "--noise=0"],
        "noise map with zeros": [f"--observation={files['good']}", f"--noise={files['noise_zero']}"],
        "PSF not normalised": [f"--psf={files['psf_unnormalised']}"],
        "checkpoint of another resolution": [f"--config={os.path.join(REPO, 'configs', 'tiny.py')}"],
        "bf16 network with the dps likelihood": ["--config.model.dtype=bfloat16",
                                                 "--config.sampling.likelihood=dps"],
        "misspelt config key": ["--config.sampling.n_chainz=2"],
        "unknown likelihood": ["--config.sampling.likelihood=eq20"],
        "non-empty --out": [],
    }
    fresh = tmp_path / "fresh"
    for why, args in cases.items():
        # Every case but the last targets an --out that does not exist, so only its own error can stop it.
        target = out if why == "non-empty --out" else fresh
        r = _sample(f"--out={target}", *args, timeout=300)
        assert r.returncode == 2, (why, r.returncode, r.stderr[-2000:])
        assert r.stderr.strip().splitlines()[-1].startswith("error:"), (why, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, (why, r.stderr[-2000:])
        assert not fresh.exists(), why
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"], why
        assert sentinel.read_text() == "previous results", why
