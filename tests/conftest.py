"""Test session set-up: 8 simulated CPU devices, so sharding is tested everywhere.

XLA reads the flag once, when the backend starts, so it must be set before jax
is imported by any test module.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
