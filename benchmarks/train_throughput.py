"""Images per second of the data-parallel DSM training step, for the tiny, 64² and 256² configs.

  python benchmarks/train_throughput.py [--configs tiny,procedural_64,paper_probes_256] [--batch 0]

Times `jaxlens.train.make_train_step` (the step bin/train runs) over every local
device, after a warm-up, with `block_until_ready`, over several repeats, on random
images (no data set needed). `--batch 0` uses each config's batch size. For
reference, score_sde's README reports 0.20–0.56 s per step on 4×V100 at 256², batch 64.
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxlens.cli import common  # noqa: E402
from jaxlens.mesh import data_mesh  # noqa: E402
from jaxlens.nn import param_count  # noqa: E402
from jaxlens.sde import VESDE  # noqa: E402
from jaxlens.train import OptimizerSpec, create_train_state, make_train_step  # noqa: E402


def time_config(name: str, batch: int, repeats: int, dtype: str = "float32") -> dict:
    config = __import__(f"configs.{name}", fromlist=["get_config"]).get_config()
    config.model.dtype = dtype
    model = common.build_model(config)
    n, c = config.data.npix, config.data.channels
    batch = batch or config.training.batch_size
    mesh = data_mesh()
    batch -= batch % mesh.devices.size
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    state = jax.jit(lambda: create_train_state(jax.random.key(0), model, (n, n, c), OptimizerSpec()),
                    out_shardings=replicated)()
    step = make_train_step(mesh, sde=VESDE(1e-4, 100.0))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,procedural_64,paper_probes_256")
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dev = jax.devices()[0]
    print(f"{jax.device_count()} x {dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    print("| config | image | params | batch | s/step (median) | images/s | compile s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.configs.split(","):
        r = time_config(name, args.batch, args.repeats)
        print(f"| {r['config']} | {r['npix']}² | {r['params']:,} | {r['batch']} | {r['s_per_step']:.3f} "
              f"| {r['images_per_s']:.1f} | {r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
