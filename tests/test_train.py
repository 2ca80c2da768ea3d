"""DSM training: loss closed forms, data-parallel equivalence, resumption and bad input."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlens.sde import VESDE
from jaxlens.train import (
    CheckpointError,
    DSMRecipe,
    OptimizerSpec,
    create_train_state,
    data_mesh,
    dsm_loss,
    make_train_step,
    validation_loss,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import tiny  # noqa: E402


def test_dsm_loss_of_zero_network_is_dimension():
    # ε_θ ≡ 0 gives E||z||² = H·W·C.
    sde = VESDE(0.01, 10.0)
    x0 = jnp.ones((512, 4, 4, 2))
    loss = dsm_loss(None, lambda p, x, s, **kw: jnp.zeros_like(x), jax.random.key(0), x0, sde)
    assert abs(float(loss) - 32.0) < 32.0 * 5 / np.sqrt(512 * 32) * 3


def test_dsm_loss_of_oracle_denoiser_is_zero():
    # For a point-mass data set at x*, the optimal ε is −(x_t − x*)/σ, and the loss is 0.
    sde = VESDE(0.01, 10.0)
    x_star = jnp.linspace(-1, 1, 16).reshape(1, 4, 4, 1)
    x0 = jnp.broadcast_to(x_star, (8, 4, 4, 1))
    oracle = lambda p, x, s, **kw: -(x - x_star) / s[:, None, None, None]
    loss = dsm_loss(None, oracle, jax.random.key(1), x0, sde)
    assert float(loss) < 1e-6


def _gaussian_eps(sigma_data):
    """ε of the exact score of N(0, σ_d² I) data: σ·(−x/(σ² + σ_d²)); what a zero-F EDM network gives."""
    return lambda p, x, s, **kw: -s[:, None, None, None] * x / (s[:, None, None, None] ** 2 + sigma_data**2)


@pytest.mark.parametrize("levels", ["uniform_t", "lognormal"])
def test_edm_weighted_loss_of_the_exact_gaussian_score_is_dimension(levels):
    # With EDM's weight (σ² + σ_d²)/σ_d² the preconditioned target has unit variance at every σ, so the
    # exact score of Gaussian data costs E = H·W·C whatever noise levels are drawn.
    sd, sde = 0.3, VESDE(1e-3, 20.0)
    x0 = sd * jax.random.normal(jax.random.key(0), (1024, 4, 4, 2))
    recipe = DSMRecipe(noise_levels=levels, sigma_data=sd)
    loss = float(dsm_loss(None, _gaussian_eps(sd), jax.random.key(1), x0, sde, recipe=recipe))
    assert loss == pytest.approx(32.0, rel=4 * np.sqrt(2 / (1024 * 32)) * 3)


def test_lognormal_levels_centre_on_sigma_data_and_stay_in_range():
    sde = VESDE(1e-4, 10.0)
    recipe = DSMRecipe(noise_levels="lognormal", sigma_data=0.05, p_mean=0.5, p_std=1.0)
    t = recipe.sample_times(jax.random.key(0), 20000, sde)
    assert float(t.min()) >= recipe.t_min and float(t.max()) <= 1.0
    assert float(jnp.median(jnp.log(sde.sigma(t)))) == pytest.approx(np.log(0.05) + 0.5, abs=0.03)


@pytest.mark.parametrize("kwargs, match", [
    ({"noise_levels": "cosine"}, "noise_levels"),
    ({"noise_levels": "lognormal"}, "sigma_data > 0"),
    ({"sigma_data": -1.0}, "sigma_data"),
    ({"t_min": 1.0}, "t_min"),
])
def test_bad_recipe_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DSMRecipe(**kwargs)


def test_validation_loss_of_the_exact_gaussian_score_matches_its_closed_form():
    # For N(0, σ_d² I) data and its exact score, E||σ s + z||² = H·W·C · σ_d²/(σ² + σ_d²) at each t.
    sd, sde, n_times = 0.5, VESDE(1e-2, 20.0), 6
    images = sd * jax.random.normal(jax.random.key(0), (2048, 4, 4, 1))
    score = lambda x, t: -x / (sde.sigma(t) ** 2 + sd**2)
    got = validation_loss(score, images, sde, jax.random.key(1), n_times=n_times, t_min=0.0)
    ts = (np.arange(n_times) + 0.5) / n_times
    want = 16 * sd**2 / (np.asarray(sde.sigma(ts)) ** 2 + sd**2)
    assert got["val_dsm"] == pytest.approx(want.mean(), rel=0.02)
    assert got["val_dsm_low"] == pytest.approx(want[:2].mean(), rel=0.02)
    assert got["val_dsm_high"] == pytest.approx(want[4:].mean(), rel=0.05)


def test_dsm_loss_rejects_unbatched_images():
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        dsm_loss(None, None, jax.random.key(0), jnp.ones((4, 4, 1)), VESDE(0.01, 1.0))


def _tiny_model():
    from jaxlens.cli import common

    return common.build_model(tiny.get_config())


def test_one_and_eight_devices_give_the_same_step():
    assert jax.device_count() == 8, "conftest should provide 8 CPU devices"
    model = _tiny_model()
    sde = VESDE(0.01, 20.0)
    batch = jax.random.uniform(jax.random.key(3), (8, 16, 16, 1))
    key = jax.random.key(4)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = data_mesh(devices)
        state = create_train_state(jax.random.key(5), model, (16, 16, 1), OptimizerSpec(warmup_steps=1))
        state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        step = make_train_step(mesh, sde=sde)
        new_state, metrics = step(state, batch, key)
        results.append((float(metrics["loss"]), jax.tree.map(np.asarray, new_state.params)))
    (loss1, p1), (loss8, p8) = results
    np.testing.assert_allclose(loss1, loss8, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _train_cmd(workdir, data_dir, *extra):
    return [sys.executable, os.path.join(REPO, "bin", "train"),
            f"--config={os.path.join(REPO, 'configs', 'tiny.py')}", f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}", *extra]


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return {r["step"]: r["loss"] for r in map(json.loads, f) if "loss" in r}


def _env():
    env = dict(os.environ)
    env["XLA_FLAGS"] = ""  # one CPU device in the subprocesses: faster start
    return env


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    data_dir = tmp_path / "data"
    full, killed = tmp_path / "full", tmp_path / "killed"
    steps = ["--config.training.steps=8", "--config.training.grid_samples=0", "--config.training.quality_every=0"]
    subprocess.run(_train_cmd(full, data_dir, *steps), check=True, env=_env(), timeout=600)

    proc = subprocess.Popen(_train_cmd(killed, data_dir, *steps, "--config.training.checkpoint_every=3"),
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckdir = killed / "checkpoints"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if ckdir.exists() and any(p.name.isdigit() and int(p.name) >= 3 for p in ckdir.iterdir()):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(_train_cmd(killed, data_dir, *steps, "--config.training.checkpoint_every=3"),
                             env=_env(), timeout=600, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from step" in resumed.stderr
    a, b = _losses(full), _losses(killed)
    assert sorted(b) == list(range(1, 9))
    for k in range(1, 9):
        assert a[k] == pytest.approx(b[k], rel=1e-6), (k, a[k], b[k])


def _run_in_process(config, workdir):
    from jaxlens.cli.train import train_from_config

    # One device: these tests are about checkpoints, not sharding, and compile faster.
    return train_from_config(config, str(workdir), mesh=data_mesh(jax.devices()[:1]))


def _tiny(data_dir, **training):
    c = tiny.get_config()
    c.data.data_dir = str(data_dir)
    c.training.grid_samples = 0
    for k, v in training.items():
        setattr(c.training, k, v)
    return c


def _tiny_edm(data_dir, **training):
    c = _tiny(data_dir, noise_levels="lognormal", **training)
    c.model.sigma_data = "auto"
    return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-step tiny run with checkpoints at steps 2 and 4 and a prior-quality row at step 3 (tiny's
    quality_every), trained once for the module, with the EDM-style recipe (the other tests train
    score_sde's)."""
    root = tmp_path_factory.mktemp("trained")
    _run_in_process(_tiny_edm(root / "data", steps=4, checkpoint_every=2), root / "run")
    return root


def _copy(trained, tmp_path):
    shutil.copytree(trained / "run", tmp_path / "run")
    return tmp_path / "run"


def _truncate_files(folder):
    files = [p for p in folder.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert files
    for p in files:
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size // 3)


def test_prior_quality_is_logged_beside_the_loss(trained):
    with open(trained / "run" / "metrics.jsonl") as f:
        rows = [r for r in map(json.loads, f) if "prior_quality" in r]
    assert [r["step"] for r in rows] == [3, 4]  # every quality_every steps, and at the end
    q = rows[-1]["prior_quality"]
    assert q["n_samples"] + q["non_finite"] == 8 and q["n_data"] >= 2
    for name in ("flux", "r50", "concentration", "e"):
        assert 0.0 <= q[f"ks_{name}"] <= 1.0
    assert 0.0 < q["ks_floor"] and 0.0 <= q["tarp_max_dev"] <= 1.0 and 0.0 <= q["tarp_floor"] <= 1.0


def test_validation_loss_is_logged_at_checkpoints_and_the_recipe_is_recorded(trained):
    with open(trained / "run" / "metrics.jsonl") as f:
        rows = [r for r in map(json.loads, f) if "val_dsm" in r]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(np.isfinite(r["val_dsm"]) and r["val_dsm"] > 0 for r in rows)
    from jaxlens.prior import load_prior

    prior = load_prior(str(trained / "run"))
    assert 0 < prior.meta["model"]["sigma_data"] < 1  # measured on the tiny data set
    assert prior.model.sigma_data == prior.meta["model"]["sigma_data"]


def test_training_curves_reads_a_real_run(trained, tmp_path):
    """The study plots what bin/train logged: val_dsm at the checkpoints, quality where it was measured."""
    out = tmp_path / "curves.json"
    r = subprocess.run([sys.executable, "-m", "experiments.training_curves", f"--runs=tiny={trained / 'run'}",
                        "--images-per-s=8", "--batch=4", "--cores=2", f"--json={out}",
                        f"--figure={tmp_path / 'curves.png'}"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["cpu_hours_per_step"] == pytest.approx(4 / 8 * 2 / 3600)
    run = record["runs"]["tiny"]
    assert [s for s, _ in run["val_dsm"]] == [2, 4] and [s for s, _ in run["quality"]] == [3, 4]
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    bad = subprocess.run([sys.executable, "-m", "experiments.training_curves", f"--runs=tiny={tmp_path}"],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert bad.returncode != 0 and "metrics.jsonl" in bad.stderr


def test_damaged_latest_checkpoint_falls_back_to_previous(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _truncate_files(workdir / "checkpoints" / "4")
    state = _run_in_process(_tiny_edm(trained / "data", steps=5, checkpoint_every=2), workdir)
    assert int(state.step) == 5
    losses = _losses(workdir)
    assert sorted(losses) == [1, 2, 3, 4, 5]  # steps 3-4 were recomputed from step 2
    assert losses[3] == pytest.approx(_losses(trained / "run")[3], rel=1e-6)


def test_all_checkpoints_damaged_is_an_error(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    _truncate_files(workdir / "checkpoints")
    with pytest.raises(CheckpointError, match="refusing to start from random weights"):
        _run_in_process(_tiny_edm(trained / "data", steps=6, checkpoint_every=2), workdir)


def test_workdir_with_other_architecture_is_refused(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    c = _tiny(trained / "data", steps=6)
    c.model.nf = 16
    with pytest.raises(CheckpointError, match="another architecture.*nf"):
        _run_in_process(c, workdir)
    # The same network without the run's preconditioning reads the parameters differently: refused too.
    with pytest.raises(CheckpointError, match="another architecture.*sigma_data"):
        _run_in_process(_tiny(trained / "data", steps=6), workdir)


def test_bad_cli_input_exits_nonzero(tmp_path):
    data_dir = tmp_path / "data"
    cases = {
        "unknown config key": ["--config.training.stepz=3"],
        "missing data directory": ["--config.data.name=fits_folder",
                                   f"--config.data.manual_dir={tmp_path / 'nope'}"],
    }
    for why, extra in cases.items():
        r = subprocess.run(_train_cmd(tmp_path / "w", data_dir, *extra), env=_env(), timeout=300,
                           capture_output=True, text=True)
        assert r.returncode != 0, why
        assert "Traceback" not in r.stderr, (why, r.stderr[-2000:])
