"""bin/train: denoising score matching of an NCSN++ prior on a galaxy data set.

  bin/train --config=configs/procedural_64.py --workdir=runs/p64 [--config.training.steps=N]

Rerunning the same command resumes from the newest readable checkpoint in --workdir.
Multi-host: launch one process per host under SLURM (srun), or set
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID; jax.distributed
then spans the mesh over every device of every process.
"""

from __future__ import annotations

import logging
import os
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from jaxlens.cli import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and sample grids.",
                            required=True)
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)

log = logging.getLogger("jaxlens.train")


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {argv[1:]}")
    common.setup_logging(logging.INFO)
    common.maybe_initialize_distributed()
    common.exit_on_user_error(train_from_config, _CONFIG.value, os.path.expanduser(_WORKDIR.value))


def train_from_config(config, workdir: str, *, mesh=None):
    """Config → data, model, SDE and options; then `jaxlens.train.train` (on `mesh`, default all devices)."""
    from jaxlens import data, train
    from jaxlens.prior import model_from_architecture
    from jaxlens.sde import VESDE, sigma_max_from_data

    def open_split(split: str):
        return data.load_source(
            config.data.name, os.path.expanduser(config.data.data_dir), split=split,
            npix=config.data.npix, channels=config.data.channels,
            manual_dir=os.path.expanduser(config.data.manual_dir) or None,
            count=config.data.count,
            normalization=None if config.data.normalization == "auto" else config.data.normalization)

    t0 = time.perf_counter()
    source = open_split("train")
    log.info("data: %s, %d images of %dx%d (%.1fs)", config.data.name, len(source),
             config.data.npix, config.data.npix, time.perf_counter() - t0)

    sigma_max = common.parse_sigma_max(config.sde.sigma_max)
    sigma_data = common.parse_sigma_data(config.model.sigma_data)
    # "auto" values are measured on the training images, read once for both.
    images = data.all_images(source) if sigma_max is None or sigma_data is None else None
    if sigma_max is None:
        sigma_max = sigma_max_from_data(images)
        log.info("sigma_max from data (largest pairwise distance): %.4f", sigma_max)
    sde = VESDE(sigma_min=float(config.sde.sigma_min), sigma_max=sigma_max)
    if sigma_data is None:
        sigma_data = float(np.std(images))
        log.info("sigma_data from data (pixel standard deviation): %.4f", sigma_data)
    del images
    arch = common.architecture(config, sigma_data=sigma_data)

    t = config.training
    seed, batch_size, augment = config.seed, t.batch_size, config.data.augment

    def batch_fn(step: int) -> np.ndarray:
        return data.get_batch(source, step, seed=seed, batch_size=batch_size, augment=augment)

    shape = (config.data.npix, config.data.npix, config.data.channels)
    # The held-out split, which training never sees: validation loss and prior quality.
    quality_data = data.all_images(open_split("validation"))
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    return train.train(
        model=model_from_architecture(arch, dtype=common.compute_dtype(config)),
        model_meta=arch,
        image_shape=shape,
        batch_fn=batch_fn,
        sde=sde,
        optimizer=train.OptimizerSpec(learning_rate=t.learning_rate, warmup_steps=t.warmup_steps,
                                      grad_clip=t.grad_clip),
        options=train.TrainOptions(
            steps=t.steps, batch_size=batch_size, seed=seed,
            recipe=common.dsm_recipe(config, arch),
            ema_decay=t.ema_decay, checkpoint_every=t.checkpoint_every,
            keep_checkpoints=t.keep_checkpoints, log_every=t.log_every,
            grid_samples=t.grid_samples, grid_steps=t.grid_steps, quality_every=t.quality_every,
            quality_samples=t.quality_samples),
        workdir=workdir,
        mesh=mesh,
        quality_data=quality_data,
    )
