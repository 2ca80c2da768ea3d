"""A trained score network as a prior score `score_fn(x, t)`, and loading it from a checkpoint."""

from __future__ import annotations

import json
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jaxlens.sde import VESDE

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def network_score_fn(model: Any, params: Any, sde: VESDE) -> ScoreFn:
    """score(x, t) = ε_θ(x, σ(t)) / σ(t) for ONE state x [H, W, C] and a scalar t.

    The batch axis is added here, so `jax.vmap` over chains becomes one batched
    network call.
    """

    def score(x: jax.Array, t: jax.Array) -> jax.Array:
        sigma = sde.sigma(t)
        eps = model.apply({"params": params}, x[None], jnp.reshape(sigma, (1,)), train=False)[0]
        return (eps / sigma).astype(x.dtype)

    return score


PRIOR_META = "prior.json"


class LoadedPrior(NamedTuple):
    """A trained prior: network, EMA parameters, its SDE and its description."""

    model: Any
    params: Any
    sde: VESDE
    meta: dict

    def score_fn(self) -> ScoreFn:
        return network_score_fn(self.model, self.params, self.sde)


def export_prior(workdir: str, out_dir: str, *, extra: dict | None = None) -> str:
    """Writes the EMA parameters of the newest checkpoint in a training `workdir` to `out_dir`.

    The result holds only what sampling needs: `params/` (orbax) and `prior.json`
    (architecture, σ_min, σ_max, step, plus `extra`). It is what ships in
    `checkpoints/procedural_64/`.
    """
    import orbax.checkpoint as ocp

    params, meta = _ema_params(workdir)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with ocp.StandardCheckpointer() as saver:
        saver.save(os.path.join(out_dir, "params"), params, force=True)
    meta = {**meta, **(extra or {})}
    with open(os.path.join(out_dir, PRIOR_META), "w") as f:
        json.dump(meta, f, indent=2)
    return out_dir


def model_from_architecture(arch: dict, *, dtype=jnp.float32) -> Any:
    """Rebuilds the NCSN++ from the architecture dict stored with a checkpoint."""
    from jaxlens.nn import NCSNpp

    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()
              if k not in ("image_size", "channels")}
    return NCSNpp(**fields, dtype=dtype)


def load_prior(path: str, *, dtype=jnp.float32, step: int | None = None) -> LoadedPrior:
    """Loads an exported prior directory or the newest checkpoint of a training workdir.

    Args:
      path: a directory with `prior.json` + `params/` (exported), or a training workdir.
      dtype: compute dtype of the rebuilt network (parameters stay float32).
      step: for a training workdir, the checkpoint step to load (default: the newest).

    Returns:
      LoadedPrior with the EMA parameters.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint directory not found: {path}")
    if os.path.exists(os.path.join(path, PRIOR_META)):
        with open(os.path.join(path, PRIOR_META)) as f:
            meta = json.load(f)
        model = model_from_architecture(meta["model"], dtype=dtype)
        abstract = _abstract_params(model, meta)
        with ocp.StandardCheckpointer() as loader:
            params = loader.restore(os.path.join(path, "params"), abstract)
    elif os.path.isdir(os.path.join(path, "checkpoints")):
        params, meta = _ema_params(path, step)
        model = model_from_architecture(meta["model"], dtype=dtype)
    else:
        raise FileNotFoundError(f"{path} holds neither {PRIOR_META} nor a checkpoints/ folder")
    sde = VESDE(sigma_min=float(meta["sigma_min"]), sigma_max=float(meta["sigma_max"]))
    return LoadedPrior(model, params, sde, meta)


def _ema_params(workdir: str, step: int | None = None) -> tuple[Any, dict]:
    """EMA parameters and metadata (with `step`) of a training workdir's checkpoint (default: newest)."""
    import orbax.checkpoint as ocp

    from jaxlens.train import checkpoint as ckpt

    mngr = ckpt.manager(workdir)
    if step is None:
        step = mngr.latest_step()
    if step is None or step not in mngr.all_steps():
        raise FileNotFoundError(f"no checkpoint {'' if step is None else f'at step {step} '}in {workdir} "
                                f"(it holds steps {sorted(mngr.all_steps())})")
    meta = ckpt.read_meta(mngr, step)
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    return state["ema_params"], {**meta, "step": int(step)}


def _abstract_params(model: Any, meta: dict) -> Any:
    h, w, c = meta["image_shape"]
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((1, h, w, c)), jnp.ones((1,)), train=False)
    )
    return shapes["params"]
