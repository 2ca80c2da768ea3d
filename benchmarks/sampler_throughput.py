"""Throughput of the full posterior Euler–Maruyama step at paper scale (issue "GPU speed").

  python benchmarks/sampler_throughput.py [--config paper_probes_256] [--batches 8,32,128,256]
      [--precisions float32,bfloat16] [--steps 8] [--repeats 3] [--train-batch 32] [--json results.json]
      [--likelihood eq19] [--cg-maxiter 5] [--flops-only]

One step is what `sample_posterior` runs: the NCSN++ prior score plus the paper's convolved
likelihood (eq. 19) through the config's lens operator (256² source → 128² image for the paper
config), one Euler–Maruyama update, for a batch of chains sharded over every local device. The
parameters are random: speed does not depend on training.

For each precision and chains-per-device batch it prints network evaluations per second (one
chain-step is one evaluation), the likelihood's share of a step (the likelihood term timed on its
own), the model FLOP rate (XLA's cost analysis of one network evaluation × evaluations/s), the
bytes one evaluation accesses by the same analysis (at batch 1) and the rate they imply, and the
peak device memory (accelerators only). Then the DSM training step in images/s. Every timing is
after a warm-up, with `block_until_ready`, the median of --repeats. A batch that does not fit is
reported as such and the sweep goes on. Results are printed as markdown and written to --json.

--flops-only stops after XLA's cost analysis of one network evaluation per precision: no timing,
so it runs on any CPU and checks that the network does the paper's ~530 GFLOP per image and no more.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from jaxlens.cli import common  # noqa: E402
from jaxlens.lensing import lens_operator  # noqa: E402
from jaxlens.mesh import data_mesh  # noqa: E402
from jaxlens.nn import init_params, param_count  # noqa: E402
from jaxlens.prior import network_score_fn  # noqa: E402
from jaxlens.sample import integrate, make_likelihood, posterior_score  # noqa: E402
from jaxlens.sde import VESDE  # noqa: E402
from train_throughput import time_config  # noqa: E402

PAPER_SIGMA_MAX = 380.0  # the paper's VE SDE at 256²; only the noise scale of the states


def _median_time(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cost(jitted, *args) -> dict:
    """XLA's cost analysis of the compiled call ('flops', 'bytes accessed', ...)."""
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return dict(cost or {})


def _peak_bytes() -> float:
    stats = [d.memory_stats() or {} for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s.get("peak_bytes_in_use") is not None]
    return float(max(peaks)) if peaks else float("nan")


class Problem:
    """A random-parameter prior, a lens and an observation for one config and precision."""

    def __init__(self, config, precision: str, likelihood: str = "eq19", cg_maxiter: int = 5):
        config.model.dtype = precision
        self.model = common.build_model(config)
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
        self.term = make_likelihood(likelihood, y, A, AT, sigma_n, cg_maxiter=cg_maxiter)
        self.score = network_score_fn(self.model, self.params, self.sde)
        self.mesh = data_mesh(jax.local_devices())
        # FLOPs grow linearly with the batch, so one image's count serves every batch size.
        net = jax.jit(jax.vmap(self.score, in_axes=(0, None)))
        cost = _cost(net, jax.ShapeDtypeStruct((1,) + self.shape, jnp.float32), jnp.float32(0.5))
        self.flops_per_eval = float(cost.get("flops", float("nan")))
        self.bytes_per_eval = float(cost.get("bytes accessed", float("nan")))

    def step_fn(self, per_device: int, steps: int):
        """A jitted call running `steps` EM steps of every chain, and its sharded inputs."""
        batch = per_device * self.mesh.devices.size
        sharded = NamedSharding(self.mesh, PartitionSpec("data"))
        post = posterior_score(self.score, self.term, self.sde)
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
            return jax.vmap(lambda xi: self.term(self.score, xi, jnp.float32(0.5), self.sde))(x)

        t_step = _median_time(lambda: run(keys, x), repeats) / steps
        t_lik = _median_time(lambda: likelihood(x), repeats)
        flops = self.flops_per_eval
        evals = batch / t_step
        return {"chains_per_device": per_device, "devices": n_dev, "s_per_step": t_step,
                "evals_per_s": evals, "evals_per_s_per_device": evals / n_dev,
                "likelihood_share": t_lik / t_step, "gflop_per_eval": flops / 1e9,
                "gb_per_eval": self.bytes_per_eval / 1e9, "tb_per_s": evals * self.bytes_per_eval / 1e12,
                "tflops": evals * flops / 1e12, "peak_gib": _peak_bytes() / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper_probes_256")
    ap.add_argument("--batches", default="8,32,128,256", help="chains per device (comma list)")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--likelihood", default="eq19", help="eq19 (the paper's), eq12, tweedie or dps")
    ap.add_argument("--cg-maxiter", type=int, default=5, help="CG cap of eq12 and tweedie")
    ap.add_argument("--steps", type=int, default=8, help="EM steps per timed call (one lax.scan)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-batch", type=int, default=32, help="global batch of the training step (0: skip)")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--flops-only", action="store_true", help="only the FLOPs of one evaluation per precision")
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not batches or min(batches) < 1 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("need chains per device >= 1, --steps >= 1 and --repeats >= 1")
    get = __import__(f"configs.{args.config}", fromlist=["get_config"]).get_config
    dev = jax.local_devices()[0]
    header = {"date": datetime.date.today().isoformat(), "device": dev.device_kind,
              "platform": jax.default_backend(), "local_devices": jax.local_device_count(),
              "jax": jax.__version__, "config": args.config, "likelihood": args.likelihood}
    print(json.dumps(header))
    rows = []
    for precision in precisions:
        problem = Problem(get(), precision, args.likelihood, args.cg_maxiter)
        header["params"] = param_count(problem.model, problem.shape[0], problem.shape[-1])
        if args.flops_only:
            rows.append({"precision": precision, "gflop_per_eval": problem.flops_per_eval / 1e9,
                         "gb_per_eval": problem.bytes_per_eval / 1e9})
            print(json.dumps(rows[-1]), flush=True)
            continue
        for b in batches:
            try:
                r = problem.measure(b, args.steps, args.repeats)
            except Exception as err:  # noqa: BLE001 — an out-of-memory batch ends the sweep for this precision
                if "RESOURCE_EXHAUSTED" not in str(err) and "out of memory" not in str(err).lower():
                    raise
                rows.append({"precision": precision, "chains_per_device": b, "error": "out of memory"})
                print(f"{precision} batch {b}: out of memory", flush=True)
                break
            rows.append({"precision": precision, **r})
            print(json.dumps(rows[-1]), flush=True)
    train = []
    if args.train_batch and not args.flops_only:
        for precision in precisions:
            train.append({"precision": precision, **time_config(args.config, args.train_batch, args.repeats,
                                                                   dtype=precision)})
            print(json.dumps(train[-1]), flush=True)

    print(f"\n{header['local_devices']} × {header['device']}, jax {header['jax']}, {args.config} "
          f"({header['params']:,} parameters), {header['date']}\n")
    print("| precision | chains/device | evals/s/device | likelihood share | GFLOP/eval | TFLOP/s | GB/eval | TB/s "
          "| peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "s_per_step" not in r:  # out of memory, or --flops-only
            gflop = f"{r['gflop_per_eval']:.4g}" if "gflop_per_eval" in r else ""
            gb = f"{r['gb_per_eval']:.3g}" if "gb_per_eval" in r else ""
            print(f"| {r['precision']} | {r.get('chains_per_device', '—')} | {r.get('error', 'not timed')} | "
                  f"| {gflop} | | {gb} | | |")
            continue
        print(f"| {r['precision']} | {r['chains_per_device']} | {r['evals_per_s_per_device']:.1f} | "
              f"{100 * r['likelihood_share']:.2f} % | {r['gflop_per_eval']:.3g} | {r['tflops']:.3g} | "
              f"{r['gb_per_eval']:.3g} | {r['tb_per_s']:.3g} | {r['peak_gib']:.1f} |")
    for t in train:
        print(f"training step, {t['precision']}: batch {t['batch']}, {t['images_per_s']:.1f} images/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**header, "sampler": rows, "train": train}, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
