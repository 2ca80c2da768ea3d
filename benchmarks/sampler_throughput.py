"""Throughput of the full posterior Euler–Maruyama step at paper scale (issue "GPU speed").

  python -m benchmarks.sampler_throughput [--config paper_probes_256] [--batches 8,32,128,256]
      [--precisions float32,bfloat16] [--steps 8] [--repeats 3] [--train-batch 32] [--json results.json]
      [--likelihood eq19] [--lanczos-cap 5] [--flops-only]

Run from the repository root (`-m`, so that `configs` is importable).

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

import jax

from jaxlens.cli.throughput import ThroughputProblem, time_train_config
from jaxlens.nn import param_count

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper_probes_256")
    ap.add_argument("--batches", default="8,32,128,256", help="chains per device (comma list)")
    ap.add_argument("--precisions", default="float32,bfloat16")
    ap.add_argument("--likelihood", default="eq19", help="eq19 (the paper's), eq12, tweedie or dps")
    ap.add_argument("--lanczos-cap", type=int, default=5, help="Lanczos cap of tweedie")
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
        problem = ThroughputProblem(get(), precision, args.likelihood, args.lanczos_cap)
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
            train.append({"precision": precision, **time_train_config(args.config, args.train_batch, args.repeats,
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
