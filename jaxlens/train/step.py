"""One data-parallel DSM training step.

The step itself is a pure function of (state, batch, key). Parallelism lives in
`make_train_step`: jit with the batch sharded along the mesh's `data` axis and the
state replicated, so XLA inserts the gradient all-reduce. The noise is drawn for
the global batch from one key, so the result does not depend on the device count.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxlens.sde import VESDE
from jaxlens.train.dsm import DSMRecipe, dsm_loss
from jaxlens.train.state import TrainState


def train_step(
    state: TrainState, batch: jax.Array, key: jax.Array, *, sde: VESDE, recipe: DSMRecipe = DSMRecipe()
) -> tuple[TrainState, dict[str, jax.Array]]:
    """DSM loss, gradients, optimiser update and EMA update.

    Args:
      state: the train state.
      batch: [B, H, W, C] clean images (the global batch).
      key: PRNG key for this step (times, noise, dropout).
      sde: the VE SDE.
      recipe: the loss's noise levels and weighting.

    Returns:
      (new_state, metrics) with `loss` and `grad_norm`.
    """

    def loss_fn(params):
        return dsm_loss(
            params,
            lambda p, x, s, **kw: state.apply_fn({"params": p}, x, s, **kw),
            key,
            batch,
            sde,
            recipe=recipe,
        )

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    new_state = state.apply_gradients(grads=grads)
    return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def make_train_step(
    mesh: Mesh, *, sde: VESDE, recipe: DSMRecipe = DSMRecipe()
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict]]:
    """Jitted `train_step` with a batch sharded over `mesh` and a replicated, donated state."""
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P("data"))
    return jax.jit(
        functools.partial(train_step, sde=sde, recipe=recipe),
        in_shardings=(replicated, sharded, replicated),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )
