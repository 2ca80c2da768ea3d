"""Orbax checkpoints of the train state, with an architecture check and fallback on damage."""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: damaged, or written for another architecture."""


def manager(workdir: str, *, keep: int = 3) -> ocp.CheckpointManager:
    """A CheckpointManager for `workdir/checkpoints`, keeping the last `keep` steps."""
    path = os.path.join(os.path.abspath(workdir), "checkpoints")
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(path, options=options, item_names=("state", "meta"))


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict) -> None:
    mngr.save(
        step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    )


def read_meta(mngr: ocp.CheckpointManager, step: int) -> dict:
    return mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]


def check_architecture(found: dict, expected: dict, *, where: str) -> None:
    """Raises CheckpointError naming the fields where a checkpoint's model differs."""
    # Both ways: a field only the checkpoint has (e.g. preconditioning) is a difference too.
    diffs = {k: (found.get(k), expected.get(k)) for k in {**found, **expected} if found.get(k) != expected.get(k)}
    if diffs:
        lines = ", ".join(f"{k}: checkpoint={a!r} config={b!r}" for k, (a, b) in sorted(diffs.items()))
        raise CheckpointError(f"{where} holds a checkpoint of another architecture ({lines})")


def restore_latest(
    mngr: ocp.CheckpointManager, abstract_state: Any, expected_meta: dict, *, where: str
) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint, falling back to older ones if damaged.

    Returns None when the directory holds no checkpoint at all. Never returns fresh
    weights when checkpoints exist but none can be read: that raises CheckpointError.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        return None
    errors = []
    for step in steps:
        try:
            meta = read_meta(mngr, step)
        except Exception as e:  # a truncated JSON or missing file: damaged
            errors.append(f"step {step}: {type(e).__name__}: {e}")
            log.warning("checkpoint %d is damaged (%s); trying an older one", step, e)
            continue
        check_architecture(meta.get("model", {}), expected_meta["model"], where=where)
        try:
            restored = mngr.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
            )["state"]
            _check_finite(restored)
        except Exception as e:
            errors.append(f"step {step}: {type(e).__name__}: {e}")
            log.warning("checkpoint %d is damaged (%s); trying an older one", step, e)
            continue
        return restored, meta
    raise CheckpointError(
        f"every checkpoint in {where} is damaged; refusing to start from random weights:\n  "
        + "\n  ".join(errors)
    )


def _check_finite(tree: Any) -> None:
    import numpy as np

    for leaf in jax.tree.leaves(tree):
        if hasattr(leaf, "dtype") and np.issubdtype(leaf.dtype, np.floating):
            if not bool(jax.numpy.all(jax.numpy.isfinite(leaf))):
                raise CheckpointError("non-finite values in restored parameters")
