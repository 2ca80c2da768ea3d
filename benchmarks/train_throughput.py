"""Images per second of the data-parallel DSM training step, for the tiny, 64² and 256² configs.

  python -m benchmarks.train_throughput [--configs tiny,procedural_64,paper_probes_256] [--batch 0]

Times `jaxlens.train.make_train_step` (the step bin/train runs) over every local
device, after a warm-up, with `block_until_ready`, over several repeats, on random
images (no data set needed). `--batch 0` uses each config's batch size. For
reference, score_sde's README reports 0.20–0.56 s per step on 4×V100 at 256², batch 64.
"""

import argparse

import jax

from jaxlens.cli.throughput import time_train_config


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
        r = time_train_config(name, args.batch, args.repeats)
        print(f"| {r['config']} | {r['npix']}² | {r['params']:,} | {r['batch']} | {r['s_per_step']:.3f} "
              f"| {r['images_per_s']:.1f} | {r['compile_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
