"""The device mesh shared by training and sampling: one axis, `data`, over every device."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh


def data_mesh(devices=None) -> Mesh:
    """A one-axis mesh named `data` over `devices` (default: every device of every process).

    Training shards the batch along it and sampling shards the chains; with
    `jax.distributed` initialised it spans all hosts.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("data_mesh needs at least one device")
    return Mesh(np.asarray(devices), ("data",))
