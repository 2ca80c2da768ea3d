"""Turning a config into the library's plain objects; shared by bin/train and bin/sample."""

from __future__ import annotations

import logging
import math
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections

log = logging.getLogger(__name__)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def setup_logging(level: int) -> None:
    """Our messages at `level`; orbax and other absl loggers only from WARNING."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)
    logging.getLogger("jaxlens").setLevel(level)
    absl_logging.get_absl_handler().setLevel(logging.DEBUG)


def maybe_initialize_distributed() -> None:
    """Starts JAX's multi-controller runtime under SLURM or with a coordinator address.

    Single-process runs (the common case) do nothing.
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or (
        "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ):
        jax.distributed.initialize()
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def model_kwargs(config: ml_collections.ConfigDict, *, sigma_data: float | None = None) -> dict:
    """The NCSN++ constructor fields, as JSON-able values (also the checkpoint's architecture).

    `sigma_data` resolves `model.sigma_data = "auto"` (bin/train measures it on the training data).
    Without preconditioning the field is left out, so such checkpoints read as before it existed.
    """
    m = config.model
    value = parse_sigma_data(m.sigma_data) if sigma_data is None else float(sigma_data)
    if value is None:
        raise ValueError("model.sigma_data='auto' is measured on the training data: pass sigma_data")
    precondition = {"sigma_data": float(value)} if value > 0 else {}
    return {
        "nf": int(m.nf),
        "ch_mult": [int(v) for v in m.ch_mult],
        "num_res_blocks": int(m.num_res_blocks),
        "attn_resolutions": [int(v) for v in m.attn_resolutions],
        "dropout": float(m.dropout),
        "fir": bool(m.fir),
        "fir_kernel": [int(v) for v in m.fir_kernel],
        "skip_rescale": bool(m.skip_rescale),
        "fourier_scale": float(m.fourier_scale),
        "init_scale": float(m.init_scale),
        **precondition,
    }


def architecture(config: ml_collections.ConfigDict, *, sigma_data: float | None = None) -> dict:
    """What a checkpoint must match: network fields plus image size and channels."""
    return {**model_kwargs(config, sigma_data=sigma_data), "image_size": int(config.data.npix),
            "channels": int(config.data.channels)}


def build_model(config: ml_collections.ConfigDict, *, sigma_data: float | None = None):
    """The NCSN++ of `config`, in its compute dtype."""
    from jaxlens.prior import model_from_architecture

    return model_from_architecture(architecture(config, sigma_data=sigma_data), dtype=compute_dtype(config))


def parse_sigma_data(value) -> float | None:
    """model.sigma_data: 'none' -> 0 (no preconditioning), 'auto' -> None (measure), else a number >= 0."""
    text = str(value).strip().lower()
    if text in ("none", "auto"):
        return 0.0 if text == "none" else None
    try:
        out = float(text)
    except ValueError:
        raise ValueError(f"model.sigma_data must be 'none', 'auto' or a number, got {value!r}") from None
    if not (out >= 0 and math.isfinite(out)):
        raise ValueError(f"model.sigma_data must be >= 0, got {out}")
    return out


def dsm_recipe(config: ml_collections.ConfigDict, arch: dict):
    """The training loss's `DSMRecipe`: the config's noise levels, the architecture's sigma_data."""
    from jaxlens.train import DSMRecipe

    t = config.training
    return DSMRecipe(noise_levels=t.noise_levels, t_min=float(t.t_min), p_mean=float(t.p_mean),
                     p_std=float(t.p_std), sigma_data=arch.get("sigma_data", 0.0))


def timing_sigma_data(config: ml_collections.ConfigDict) -> float | None:
    """For timing without data: 'auto' becomes 1 (any positive sigma_data costs the same)."""
    return 1.0 if parse_sigma_data(config.model.sigma_data) is None else None


def parse_sigma_max(value) -> float | None:
    """'auto' -> None (compute from data); a number or numeric string -> float."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"sde.sigma_max must be 'auto' or a number, got {value!r}") from None
    if not out > 0:
        raise ValueError(f"sde.sigma_max must be > 0, got {out}")
    return out


def exit_on_user_error(fn, *args, **kwargs):
    """Runs fn; a user error (bad input, bad checkpoint, a step count at which every chain
    diverged) exits with status 2 and one clear line.

    Programming errors still raise with a traceback.
    """
    from jaxlens.reconstruct import DivergedError
    from jaxlens.train.checkpoint import CheckpointError

    try:
        return fn(*args, **kwargs)
    except (ValueError, FileNotFoundError, NotADirectoryError, CheckpointError, DivergedError) as e:
        log.debug("user error", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def compute_dtype(config: ml_collections.ConfigDict):
    if config.model.dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {config.model.dtype!r}")
    return _DTYPES[config.model.dtype]


def geometry(config: ml_collections.ConfigDict, psf=None):
    from jaxlens.lensing import Geometry

    l = config.lens
    return Geometry(src_npix=config.data.npix, src_fov=l.src_fov, fine_npix=l.fine_npix,
                    img_fov=l.img_fov, pool=l.pool, psf=psf)


def lens_params(config: ml_collections.ConfigDict):
    from jaxlens.lensing import LensParams

    return LensParams(*(float(config.lens[k]) for k in LensParams._fields))


def likelihood(config: ml_collections.ConfigDict):
    """The likelihood term named by `sampling.likelihood`, with those of its fields the config sets."""
    import dataclasses

    from jaxlens.sample import LIKELIHOODS, likelihood_from_name

    s = config.sampling
    if s.likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown sampling.likelihood {s.likelihood!r}; choose one of {tuple(LIKELIHOODS)}")
    fields = (f.name for f in dataclasses.fields(LIKELIHOODS[s.likelihood]))
    return likelihood_from_name(s.likelihood, **{k: s[k] for k in fields if k in s})


def sampling_options(config: ml_collections.ConfigDict):
    from jaxlens.reconstruct import SamplingOptions

    s = config.sampling
    if config.model.dtype == "bfloat16" and s.likelihood == "dps":
        # dps differentiates the prior through x + σ² s(x), which cancels x at large σ, so bf16
        # rounding of s is multiplied by σ²; unlike tweedie (tests/test_precision.py) it has no
        # bf16 check, since it diverges in float32 already.
        raise ValueError("sampling.likelihood='dps' differentiates the prior and needs model.dtype='float32'; "
                         "bfloat16 is supported with 'eq19', 'eq12' and 'tweedie'")
    return SamplingOptions(
        n_chains=s.n_chains, n_steps=s.n_steps, confidence=s.confidence, likelihood=likelihood(config),
        solver=s.solver, snr=s.snr, denoise=s.denoise, chunk_size=s.chunk_size, seed=s.seed)


def fit_lens_options(config: ml_collections.ConfigDict):
    from jaxlens.fit_lens import FitLensOptions

    f = config.fit_lens
    return FitLensOptions(theta_e_std=f.theta_e_std, e_std=f.e_std, center_std=f.center_std,
                          gamma_std=f.gamma_std, leapfrog_steps=int(f.leapfrog_steps), step_size=f.step_size,
                          refresh_cycles=f.refresh_cycles, refresh_t=f.refresh_t, n_steps=int(f.n_steps))


def problem_from_config(config, *, observation=None, noise=None, psf=None, lens=None):
    """The observation to reconstruct: read from files, or simulated from the config.

    Simulation uses the held-out procedural galaxy `config.lens.source_seed`, the
    config's lens (or --lens) and σ_n (or --noise, a number).
    """
    import numpy as np

    from jaxlens import io
    from jaxlens.data import procedural_galaxy
    from jaxlens.lensing import check_lens
    from jaxlens.reconstruct import Problem, simulated_problem

    geo = geometry(config, psf=io.read_psf(psf) if psf else None)
    lens_p = io.read_lens(lens) if lens else lens_params(config)
    check_lens(lens_p)
    n_obs = geo.fine_npix // geo.pool
    if observation:
        y = io.read_image(observation, name="observation")
        if y.shape != (n_obs, n_obs):
            raise ValueError(f"observation {observation} is {y.shape[0]}x{y.shape[1]} but the geometry "
                             f"observes {n_obs}x{n_obs} pixels (fine_npix / pool)")
        sigma = io.read_noise(noise if noise is not None else config.lens.sigma_n, shape=y.shape)
        return Problem(y[..., None], sigma, lens_p, geo)
    sigma = io.read_noise(noise if noise is not None else config.lens.sigma_n)
    if np.ndim(sigma) != 0:
        raise ValueError("a simulated observation needs a scalar --noise")
    source = procedural_galaxy(int(config.lens.source_seed), config.data.npix)
    return simulated_problem(jax.random.key(config.seed), source, lens_p, geo, float(sigma))


def _flag_error(e: Exception) -> SystemExit:
    message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def import_cli(name: str):
    """Imports a CLI module, whose `DEFINE_config_file` already applies the `--config.*` overrides.

    ml_collections reads the overrides from sys.argv when the flag is defined, so a misspelt key
    (`--config.sampling.n_chainz=2`) fails at import: one clear line and exit status 2 here.
    """
    import importlib

    try:
        return importlib.import_module(name)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise _flag_error(e) from None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing where a bad `--config.*` override is one clear line and exit status 2.

    ml_collections raises AttributeError/KeyError/TypeError for an unknown key or a
    value of the wrong type while the flags are parsed, before `main` runs.
    """
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
        raise _flag_error(e) from None
