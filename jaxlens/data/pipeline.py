"""Deterministic, resumable batches with dihedral augmentation, and placing them on a mesh.

Everything is a pure function of (seed, step): training resumed at step k reads exactly
the batch an uninterrupted run would have read, with the same flips and rotations.

* Order: the examples are visited epoch by epoch; epoch e uses the permutation drawn
  from ``numpy.random.default_rng([seed, 0, e])``. Batch ``step`` holds the positions
  [step·B, (step+1)·B) of that endless sequence, so a batch may span two epochs and each
  epoch visits every example exactly once.
* Augmentation: each image gets one of the 8 symmetries of the square (4 rotations by
  90°, each with or without a flip), drawn from ``default_rng([seed, 1, step])``. These
  move pixels without interpolating them; other augmentations would change the prior.
* Several processes: every process computes the same global batch of ``batch_size``
  indices and augmentations, then reads only its contiguous slice of
  ``batch_size / process_count`` rows; `shard_batch` assembles the global array with
  ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_indices", "augmentation_codes", "dihedral", "read_images", "get_batch", "all_images",
           "shard_batch"]


def _check_int(name: str, value, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def batch_indices(step: int, *, seed: int, batch_size: int, n_examples: int) -> np.ndarray:
    """Example indices of global batch ``step``.

    Returns:
      int64 [batch_size], each in [0, n_examples).
    """
    step, seed = _check_int("step", step, 0), _check_int("seed", seed, 0)
    batch_size, n = _check_int("batch_size", batch_size, 1), _check_int("n_examples", n_examples, 1)
    pos = step * batch_size + np.arange(batch_size, dtype=np.int64)
    epochs, within = pos // n, pos % n
    out = np.empty(batch_size, np.int64)
    for e in np.unique(epochs):
        perm = np.random.default_rng([seed, 0, int(e)]).permutation(n)
        sel = epochs == e
        out[sel] = perm[within[sel]]
    return out


def augmentation_codes(step: int, *, seed: int, batch_size: int) -> np.ndarray:
    """Dihedral transform code in 0..7 for each image of global batch ``step`` (see `dihedral`)."""
    return np.random.default_rng([_check_int("seed", seed, 0), 1, _check_int("step", step, 0)]).integers(
        0, 8, batch_size)


def dihedral(image: np.ndarray, code: int) -> np.ndarray:
    """Symmetry ``code`` of the square on the first two axes of [H, W, ...]:
    rotate by 90°·(code % 4), then flip left-right if code >= 4."""
    out = np.rot90(image, code % 4, axes=(0, 1))
    return np.flip(out, axis=1) if code >= 4 else out


def read_images(source, indices) -> np.ndarray:
    """Images ``indices`` of a source as float32 [B, H, W, C].

    ``source`` is a TFDS data source (items ``{'image': ...}``), any sequence of such dicts
    or arrays, or an array [N, H, W(, C)].

    Raises:
      ValueError: non-finite pixels, or images of different shapes.
    """
    indices = [int(i) for i in indices]
    if isinstance(source, np.ndarray):
        items = list(source[indices])
    elif hasattr(source, "__getitems__"):
        items = source.__getitems__(indices)
    else:
        items = [source[i] for i in indices]
    images = [np.asarray(it["image"] if isinstance(it, dict) else it, np.float32) for it in items]
    images = [im[..., None] if im.ndim == 2 else im for im in images]
    if len({im.shape for im in images}) > 1:
        raise ValueError(f"images of different shapes in one batch: {sorted({im.shape for im in images})}")
    batch = np.stack(images)
    if not np.all(np.isfinite(batch)):
        bad = [i for i, im in zip(indices, images) if not np.all(np.isfinite(im))]
        raise ValueError(f"non-finite pixels in example(s) {bad[:10]}")
    return batch


def get_batch(source, step: int, *, seed: int, batch_size: int, augment: bool = True,
              process_index: int | None = None, process_count: int | None = None) -> np.ndarray:
    """This process's part of global batch ``step``.

    Args:
      source: see `read_images`; ``len(source)`` examples.
      step: training step (>= 0).
      seed: data seed (>= 0).
      batch_size: global batch size, divisible by the process count.
      augment: apply a random symmetry of the square to each image.
      process_index, process_count: default ``jax.process_index()``, ``jax.process_count()``.

    Returns:
      float32 [batch_size / process_count, H, W, C].
    """
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if batch_size % pc or not 0 <= pi < pc:
        raise ValueError(f"batch_size={batch_size} must divide over {pc} processes (process_index={pi})")
    idx = batch_indices(step, seed=seed, batch_size=batch_size, n_examples=len(source))
    codes = augmentation_codes(step, seed=seed, batch_size=batch_size)
    local = slice(pi * batch_size // pc, (pi + 1) * batch_size // pc)
    batch = read_images(source, idx[local])
    if augment:
        batch = np.stack([dihedral(im, c) for im, c in zip(batch, codes[local])])
    return np.ascontiguousarray(batch)


def all_images(source, *, chunk: int = 256) -> np.ndarray:
    """Every image of a source in order, float32 [N, H, W, C] (σ_max, statistics)."""
    n = len(source)
    return np.concatenate([read_images(source, range(i, min(i + chunk, n))) for i in range(0, n, chunk)])


def shard_batch(batch: np.ndarray, mesh: Mesh, *, axis: str = "data") -> jax.Array:
    """Place a host batch on ``NamedSharding(mesh, P(axis))``, split along its first axis.

    Args:
      batch: this process's rows, [B_local, ...]; with one process, the whole batch.
      mesh: a mesh with an ``axis`` axis.

    Returns:
      A global jax.Array [B_local · process_count, ...].
    """
    if axis not in mesh.shape:
        raise ValueError(f"mesh has axes {tuple(mesh.shape)}, not {axis!r}")
    global_rows = batch.shape[0] * jax.process_count()
    if global_rows % mesh.shape[axis]:
        raise ValueError(f"global batch of {global_rows} rows does not split over {mesh.shape[axis]} devices")
    return jax.make_array_from_process_local_data(NamedSharding(mesh, PartitionSpec(axis)), np.asarray(batch))
