"""Turning a config into the library's plain objects; shared by bin/train and bin/sample."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import ml_collections

log = logging.getLogger(__name__)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def maybe_initialize_distributed() -> None:
    """Starts JAX's multi-controller runtime under SLURM or with a coordinator address.

    Single-process runs (the common case) do nothing.
    """
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or (
        "SLURM_JOB_ID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ):
        jax.distributed.initialize()
        log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The NCSN++ constructor fields, as JSON-able values (also the checkpoint's architecture)."""
    m = config.model
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
    }


def architecture(config: ml_collections.ConfigDict) -> dict:
    """What a checkpoint must match: network fields plus image size and channels."""
    return {**model_kwargs(config), "image_size": int(config.data.npix),
            "channels": int(config.data.channels)}


def build_model(config: ml_collections.ConfigDict):
    """The NCSN++ of `config`, in its compute dtype."""
    if config.model.dtype not in _DTYPES:
        raise ValueError(f"model.dtype must be one of {sorted(_DTYPES)}, got {config.model.dtype!r}")
    from jaxlens.prior import model_from_architecture

    return model_from_architecture(architecture(config), dtype=_DTYPES[config.model.dtype])


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
