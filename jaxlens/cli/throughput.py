"""Speed measurements for the benchmark scripts: the sampler's step and the training step of a config.

Timings follow one rule: a warm-up call (compilation), then `block_until_ready` around each of
several repeats, and the median. Parameters are random: speed does not depend on training.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from jaxlens.cli import common
from jaxlens.lensing import lens_operator
from jaxlens.mesh import data_mesh
from jaxlens.nn import init_params, param_count
from jaxlens.prior import network_score_fn
from jaxlens.sample import integrate, likelihood_from_name, observe, posterior_score
from jaxlens.sde import VESDE
from jaxlens.train import OptimizerSpec, create_train_state, make_train_step

__all__ = ["ThroughputProblem", "median_time", "peak_bytes", "seconds_per_state", "time_train_config", "xla_cost"]

PAPER_SIGMA_MAX = 380.0  # the paper's VE SDE at 256²; only the noise scale of the states


def seconds_per_state(fn, x, t, reps: int = 3) -> float:
    """Mean wall time per state of a jitted batched fn(x [B, ...], t), after a warm-up call."""
    fn(x, t).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn(x, t).block_until_ready()
    return (time.perf_counter() - t0) / (reps * x.shape[0])


def median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def xla_cost(jitted, *args) -> dict:
    """XLA's cost analysis of the compiled call ('flops', 'bytes accessed', ...)."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(cost or {})


def peak_bytes() -> float:
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use") is not None]
    return float(max(peaks)) if peaks else float("nan")


class ThroughputProblem:
    """A random-parameter prior, a lens and an observation for one config and precision."""

    def __init__(self, config, precision: str, likelihood: str = "eq19", lanczos_cap: int = 5):
        config.model.dtype = precision
        self.model = common.build_model(config, sigma_data=common.timing_sigma_data(config))
        n, c = config.data.npix, config.data.channels
        self.shape = (n, n, c)
        self.params = init_params(self.model, jax.random.key(0), n, c)
        sigma_max = common.parse_sigma_max(config.sde.sigma_max) or PAPER_SIGMA_MAX
        self.sde = VESDE(float(config.sde.sigma_min), float(sigma_max))
        geo = common.geometry(config)
        if geo.src_shape != (n, n):
            raise SystemExit(f"the config's source grid {geo.src_shape} differs from its images {n}x{n}")
        A, AT = lens_operator(common.lens_params(config), geo)
        source = jax.random.uniform(jax.random.key(1), self.shape)
        sigma_n = float(config.lens.sigma_n)
        clean = A(source)
        y = clean + sigma_n * jax.random.normal(jax.random.key(2), clean.shape)
        self.obs = observe(y, sigma_n, A=A, AT=AT)
        self.term = likelihood_from_name(likelihood, **({"lanczos_cap": lanczos_cap} if likelihood == "tweedie" else {}))
        self.score = network_score_fn(self.model, self.params, self.sde)
        self.mesh = data_mesh(jax.local_devices())
        # FLOPs grow linearly with the batch, so one image's count serves every batch size.
        net = jax.jit(jax.vmap(self.score, in_axes=(0, None)))
        cost = xla_cost(net, jax.ShapeDtypeStruct((1,) + self.shape, jnp.float32), jnp.float32(0.5))
        self.flops_per_eval = float(cost.get("flops", float("nan")))
        self.bytes_per_eval = float(cost.get("bytes accessed", float("nan")))

    def step_fn(self, per_device: int, steps: int):
        """A jitted call running `steps` EM steps of every chain, and its sharded inputs."""
        batch = per_device * self.mesh.devices.size
        sharded = NamedSharding(self.mesh, PartitionSpec("data"))
        post = posterior_score(self.score, self.term, self.obs, self.sde)
        n_total = 1000  # a step grid; the timed steps sit mid-way through it

        @jax.jit
        def run(keys, x):
            idx = n_total // 2 + jnp.arange(steps, dtype=jnp.int32)
            return jax.vmap(lambda k, xi: integrate(k, post, self.sde, xi, idx, n_total))(keys, x)

        keys = jax.device_put(jax.random.split(jax.random.key(3), batch), sharded)
        x = jax.device_put(jax.random.normal(jax.random.key(4), (batch,) + self.shape), sharded)
        return run, keys, x

    def measure(self, per_device: int, steps: int, repeats: int) -> dict:
        n_dev = self.mesh.devices.size
        batch = per_device * n_dev
        run, keys, x = self.step_fn(per_device, steps)

        @jax.jit
        def likelihood(x):
            # The likelihood term alone (with the Tweedie modes it includes their network products).
            return jax.vmap(lambda xi: self.term.score(self.score, self.obs, xi, jnp.float32(0.5), self.sde))(x)

        t_step = median_time(lambda: run(keys, x), repeats) / steps
        t_lik = median_time(lambda: likelihood(x), repeats)
        flops = self.flops_per_eval
        evals = batch / t_step
        return {"chains_per_device": per_device, "devices": n_dev, "s_per_step": t_step,
                "evals_per_s": evals, "evals_per_s_per_device": evals / n_dev,
                "likelihood_share": t_lik / t_step, "gflop_per_eval": flops / 1e9,
                "gb_per_eval": self.bytes_per_eval / 1e9, "tb_per_s": evals * self.bytes_per_eval / 1e12,
                "tflops": evals * flops / 1e12, "peak_gib": peak_bytes() / 2**30}


def time_train_config(name: str, batch: int, repeats: int, dtype: str = "float32") -> dict:
    """Images/s of the sharded DSM training step of `configs/<name>.py` (configs must be importable)."""
    config = __import__(f"configs.{name}", fromlist=["get_config"]).get_config()
    config.model.dtype = dtype
    sigma_data = common.timing_sigma_data(config)
    model = common.build_model(config, sigma_data=sigma_data)
    n, c = config.data.npix, config.data.channels
    batch = batch or config.training.batch_size
    mesh = data_mesh()
    batch -= batch % mesh.devices.size
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.jit(lambda: create_train_state(jax.random.key(0), model, (n, n, c), OptimizerSpec()),
                    out_shardings=replicated)()
    recipe = common.dsm_recipe(config, common.architecture(config, sigma_data=sigma_data))
    step = make_train_step(mesh, sde=VESDE(1e-4, 100.0), recipe=recipe)
    images = jax.random.uniform(jax.random.key(1), (batch, n, n, c))
    t0 = time.perf_counter()
    state, m = step(state, images, jax.random.key(2))
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        state, m = step(state, images, jax.random.key(3 + i))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"config": name, "npix": n, "params": param_count(model, n, c), "batch": batch,
            "s_per_step": med, "images_per_s": batch / med, "compile_s": compile_s}


