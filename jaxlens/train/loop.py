"""The training loop: resumable, logged, checkpointed.

Determinism across preemption: the batch and the PRNG key of step k are pure
functions of (seed, k), so a run restored from the checkpoint at step j reproduces
steps j+1, ... of an uninterrupted run exactly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm.auto import tqdm

from jaxlens.sde import VESDE
from jaxlens.train import checkpoint as ckpt
from jaxlens.train.state import OptimizerSpec, TrainState, create_train_state
from jaxlens.mesh import data_mesh
from jaxlens.train.dsm import DSMRecipe, validation_key, validation_loss
from jaxlens.train.step import make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Loop settings (everything that is not model, data or optimiser).

    At every checkpoint the loop logs `validation_loss` (score_sde's DSM objective, the same measure for
    any recipe) on up to `val_images` held-out images with fixed noise. Every `quality_every` steps (0: never) the loop draws `quality_samples` prior samples with the EMA
    weights (`grid_steps` Euler–Maruyama steps) and logs `diagnostics.prior_quality` against the
    held-out `quality_data` to metrics.jsonl, so a run shows quality, not only loss.
    """

    steps: int
    batch_size: int
    seed: int = 0
    recipe: DSMRecipe = DSMRecipe()
    ema_decay: float = 0.999
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    grid_samples: int = 16
    grid_steps: int = 200
    quality_every: int = 0
    quality_samples: int = 64
    val_images: int = 32
    progress: bool = True


def train(
    *,
    model: Any,
    model_meta: dict,
    image_shape: tuple[int, int, int],
    batch_fn: Callable[[int], np.ndarray],
    sde: VESDE,
    optimizer: OptimizerSpec,
    options: TrainOptions,
    workdir: str,
    mesh: Mesh | None = None,
    quality_data: np.ndarray | None = None,
) -> TrainState:
    """Trains `model` by DSM, resuming from the newest readable checkpoint in `workdir`.

    Args:
      model: a Flax module with `__call__(x, sigma, *, train)` returning ε_θ.
      model_meta: JSON-able description of the architecture; a checkpoint whose
        description differs is refused.
      image_shape: (H, W, C) of one training image.
      batch_fn: step -> this process's slice of the global batch [B / processes, H, W, C],
        a pure function of the step.
      sde: the VE SDE (σ_max already resolved).
      optimizer: optimiser settings.
      options: loop settings.
      workdir: where checkpoints, `metrics.jsonl` and sample grids go.
      mesh: a mesh with a `data` axis; default: all devices.
      quality_data: [M, H, W, C] held-out images for the validation-loss and prior-quality rows
        (needed when options.quality_every > 0; without them no validation rows are logged).

    Returns:
      The final train state.
    """
    if options.steps < 0 or options.batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {options}")
    mesh = data_mesh() if mesh is None else mesh
    n_dev = mesh.devices.size
    if options.quality_every > 0 and (quality_data is None or len(quality_data) < 2):
        raise ValueError("quality_every > 0 needs held-out quality_data (at least 2 images)")
    if options.batch_size % n_dev:
        raise ValueError(f"batch_size {options.batch_size} is not divisible by {n_dev} devices")
    os.makedirs(workdir, exist_ok=True)
    meta = {"model": model_meta, "image_shape": list(image_shape), "sigma_min": sde.sigma_min,
            "sigma_max": sde.sigma_max}

    key = jax.random.key(options.seed)
    init_key, step_key, grid_key = jax.random.split(key, 3)
    val_key = validation_key(options.seed)
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("data"))

    def init():
        return create_train_state(init_key, model, image_shape, optimizer, ema_decay=options.ema_decay)

    state = jax.jit(init, out_shardings=replicated)()
    mngr = ckpt.manager(workdir, keep=options.keep_checkpoints)
    restored = ckpt.restore_latest(mngr, state, meta, where=workdir)
    if restored is not None:
        state, _ = restored
        log.info("resumed from step %d", int(state.step))
    start = int(state.step)

    step_fn = make_train_step(mesh, sde=sde, recipe=options.recipe)
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    _truncate_log(metrics_path, start)
    bar = tqdm(total=options.steps, initial=start, desc="train", disable=not options.progress,
               dynamic_ncols=True)
    t0 = time.perf_counter()
    with open(metrics_path, "a") as log_file:

        def log_row(row: dict) -> None:
            if jax.process_index() == 0:
                log_file.write(json.dumps({**row, "elapsed_s": round(time.perf_counter() - t0, 3)}) + "\n")
                log_file.flush()

        for step in range(start, options.steps):
            # batch_fn gives this process's slice of the global batch.
            batch = jax.make_array_from_process_local_data(sharded, np.asarray(batch_fn(step), np.float32))
            state, metrics = step_fn(state, batch, jax.random.fold_in(step_key, step))
            done = step + 1
            if done % options.log_every == 0 or done == options.steps:
                loss = float(metrics["loss"])
                if not np.isfinite(loss):
                    raise FloatingPointError(f"loss became non-finite at step {done}")
                log_row({"step": done, "loss": loss, "grad_norm": float(metrics["grad_norm"])})
                bar.set_postfix(loss=f"{loss:.4g}")
            bar.update(1)
            if done % options.checkpoint_every == 0 or done == options.steps:
                ckpt.save(mngr, done, state, meta)
                if options.grid_samples > 0:
                    _sample_grid(state, model, sde, image_shape, options, grid_key, workdir, done)
                if quality_data is not None and options.val_images > 0:
                    log_row({"step": done, **_validation(state, model, sde, options, val_key, quality_data)})
            if options.quality_every > 0 and (done % options.quality_every == 0 or done == options.steps):
                log_row({"step": done, "prior_quality": _prior_quality(state, model, sde, image_shape, options,
                                                                       grid_key, quality_data)})
    bar.close()
    mngr.wait_until_finished()
    mngr.close()
    return state


def _truncate_log(path: str, step: int) -> None:
    """Drops log rows past the resumed step, so a resumed run's log reads as one run."""
    if not os.path.exists(path) or jax.process_index() != 0:
        return
    with open(path) as f:
        rows = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(path, "w") as f:
        f.writelines(rows)


def _sample_grid(state, model, sde, image_shape, options, key, workdir, step) -> None:
    """Writes a PNG grid of prior samples from the EMA weights."""
    from jaxlens.diagnostics.figures import image_grid
    from jaxlens.prior import network_score_fn
    from jaxlens.sample import sample_prior

    score = network_score_fn(model, state.ema_params, sde)
    samples = sample_prior(key, score, sde, image_shape, options.grid_samples, options.grid_steps,
                           progress=False)
    if jax.process_index() == 0:
        ncols = int(np.ceil(np.sqrt(options.grid_samples)))
        image_grid(os.path.join(workdir, f"samples_{step:08d}.png"), np.asarray(samples)[..., 0],
                   ncols=ncols)


def _validation(state, model, sde, options, key, data) -> dict:
    """`validation_loss` of the EMA weights on the first `val_images` held-out images."""
    from jaxlens.prior import network_score_fn

    score = network_score_fn(model, state.ema_params, sde)
    images = jnp.asarray(data[: options.val_images])
    out = validation_loss(score, images, sde, key, t_min=options.recipe.t_min)
    return {k: round(v, 3) for k, v in out.items()}


def _prior_quality(state, model, sde, image_shape, options, key, data) -> dict:
    """`diagnostics.prior_quality` of fresh EMA-weight prior samples against the held-out data."""
    from jaxlens.diagnostics import prior_quality
    from jaxlens.prior import network_score_fn
    from jaxlens.sample import sample_prior

    score = network_score_fn(model, state.ema_params, sde)
    k_samples, k_tarp = jax.random.split(jax.random.fold_in(key, 1))
    samples = sample_prior(k_samples, score, sde, image_shape, options.quality_samples, options.grid_steps,
                           progress=False)
    return {k: round(v, 4) if isinstance(v, float) else v
            for k, v in prior_quality(samples, data, key=k_tarp).items()}
