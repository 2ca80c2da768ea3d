"""Train state: optax optimiser (Adam, linear warm-up, global-norm clipping) plus an EMA."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """Adam with linear warm-up and global-norm clipping (score_sde's recipe)."""

    learning_rate: float = 2e-4
    warmup_steps: int = 5000
    grad_clip: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


def make_optimizer(spec: OptimizerSpec) -> optax.GradientTransformation:
    """Builds the optax chain described by `spec`."""
    if spec.learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {spec.learning_rate}")
    schedule = optax.linear_schedule(
        init_value=0.0, end_value=spec.learning_rate, transition_steps=max(spec.warmup_steps, 1)
    )
    parts = []
    if spec.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(spec.grad_clip))
    parts.append(
        optax.adamw(schedule, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay)
    )
    return optax.chain(*parts)


class TrainState(train_state.TrainState):
    """Flax TrainState with an exponential moving average of the parameters.

    Sampling uses `ema_params`.
    """

    ema_params: Any = None
    ema_decay: float = flax.struct.field(pytree_node=False, default=0.999)

    def apply_gradients(self, *, grads, **kwargs):
        new = super().apply_gradients(grads=grads, **kwargs)
        ema = optax.incremental_update(new.params, self.ema_params, 1.0 - self.ema_decay)
        return new.replace(ema_params=ema)


def create_train_state(
    key: jax.Array,
    model: Any,
    image_shape: tuple[int, int, int],
    optimizer: OptimizerSpec,
    *,
    ema_decay: float = 0.999,
) -> TrainState:
    """Initialises parameters for images of shape [H, W, C] and the optimiser state."""
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    x = jnp.zeros((1, *image_shape), jnp.float32)
    params = model.init(key, x, jnp.ones((1,)), train=False)["params"]
    return TrainState.create(
        apply_fn=model.apply,
        params=params,
        tx=make_optimizer(optimizer),
        ema_params=jax.tree.map(jnp.copy, params),
        ema_decay=ema_decay,
    )
