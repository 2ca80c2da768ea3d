"""bin/sample: posterior samples of a lensed source with a trained score prior.

  bin/sample                                   # shipped 64² prior, simulated held-out lens
  bin/sample --config=configs/procedural_64.py --checkpoint=DIR --out=DIR \
      [--observation=obs.fits --noise=0.05|noise.fits --psf=psf.fits --lens=lens.json] \
      [--config.sampling.n_chains=64 --config.sampling.n_steps=2000] [--resume | --overwrite]

Without --observation it simulates the held-out lens of the config and keeps the truth.
"""

from __future__ import annotations

import logging
import os

import jax
from absl import flags
from ml_collections import config_flags

from jaxlens.cli import common

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "procedural_64.py"), "Config file.", lock_config=True)
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", os.path.join(_REPO, "checkpoints", "procedural_64"),
    "Exported prior (prior.json + params/) or a bin/train workdir.")
_OUT = flags.DEFINE_string("out", os.path.join("out", "default"), "Output directory.")
_OBSERVATION = flags.DEFINE_string("observation", None, "Observed image (FITS).")
_NOISE = flags.DEFINE_string("noise", None, "Noise std: a number or a FITS map (default: config).")
_PSF = flags.DEFINE_string("psf", None, "PSF on the ray-tracing grid (FITS, odd-sized, sums to 1).")
_LENS = flags.DEFINE_string("lens", None, "Lens parameters (JSON with the 7 LensParams fields).")
_FIT_LENS = flags.DEFINE_bool("fit_lens", None, "Infer the lens with the source; --lens is the first guess "
                              "(default: config.fit_lens.enabled).")
_RESUME = flags.DEFINE_bool("resume", False, "Continue an interrupted run in --out.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the outputs of a previous run in --out.")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    common.setup_logging(logging.WARNING)
    common.maybe_initialize_distributed()
    common.exit_on_user_error(run, _CONFIG.value)


def run(config) -> dict:
    from jaxlens import io, reconstruct
    from jaxlens.prior import load_prior

    fit_lens = config.fit_lens.enabled if _FIT_LENS.value is None else _FIT_LENS.value
    # Every input is read and checked before --out is touched. A simulated problem is observed through
    # the config's lens; with --fit_lens, --lens is then the first guess, and the config's lens the truth.
    simulated_fit = fit_lens and not _OBSERVATION.value
    problem = common.problem_from_config(
        config, observation=_OBSERVATION.value, noise=_NOISE.value, psf=_PSF.value,
        lens=None if simulated_fit else _LENS.value)
    truth_lens = problem.lens if simulated_fit else None
    if simulated_fit and _LENS.value:
        problem = problem._replace(lens=io.read_lens(_LENS.value))
    prior = load_prior(_CHECKPOINT.value, dtype=common.compute_dtype(config))
    reconstruct.check_compatible(problem, prior)
    options = common.sampling_options(config)
    fit = common.fit_lens_options(config) if fit_lens else None
    out = io.prepare_out_dir(_OUT.value, resume=_RESUME.value, overwrite=_OVERWRITE.value)
    settings = {"config": config.to_dict(), "checkpoint": _CHECKPOINT.value,
                "observation": _OBSERVATION.value or "simulated", "lens": _LENS.value or "config"}
    if fit_lens:
        from jaxlens.fit_lens import reconstruct_joint

        summary = reconstruct_joint(problem, prior, options, fit, str(out), truth_lens=truth_lens,
                                    settings=settings)
    else:
        summary = reconstruct.reconstruct(problem, prior, options, str(out), tag=os.path.abspath(_CHECKPOINT.value),
                                          settings=settings)
    if jax.process_index() == 0:
        t = summary["timings_s"]
        n_kept = summary["n_chains"] - len(summary["diverged_chains"])
        print(f"wrote {out}: {n_kept} samples x {summary['n_steps']} steps on "
              f"{summary['devices']['count']} {summary['devices']['platform']} device(s)")
        print(f"time: setup {t['setup_s']}s, sampling (compile included) {t['sampling_s']}s, "
              f"outputs+figures {t['outputs_s']}s, total {t['total_s']}s")
        if "lens" in summary:
            lens = summary["lens"]
            print("lens: " + ", ".join(f"{k} {lens['mean'][k]:.4f} ± {lens['std'][k]:.4f} (R-hat {lens['rhat'][k]:.2f})"
                                       for k in lens["free"]))
        print(f"median chi2_nu {summary['chi2_nu_median']:.3f}"
              + (f", source relative error {summary['source_relative_error']:.3f}"
                 if "source_relative_error" in summary else ""))
    return summary
