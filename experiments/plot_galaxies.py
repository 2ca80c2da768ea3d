"""Grid of 36 procedural galaxies (seeds 0-35) at 64², for the README.

  python -m experiments.plot_galaxies [--out docs/galaxies.png] [--npix 64] [--stretch asinh|linear]

Display only: the asinh stretch (Lupton et al. 1999) shows the faint disks, arms and
tails as astronomers usually look at galaxy images; the training data are linear.
"""

from __future__ import annotations

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from jaxlens.data.procedural import draw_params, procedural_galaxies  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/galaxies.png")
    ap.add_argument("--npix", type=int, default=64)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stretch", choices=("asinh", "linear"), default="asinh")
    args = ap.parse_args()

    seeds = range(args.start, args.start + 36)
    t0 = time.perf_counter()
    images = procedural_galaxies(seeds, args.npix)
    print(f"rendered 36 galaxies at {args.npix}² in {time.perf_counter() - t0:.2f} s")

    fig, axes = plt.subplots(6, 6, figsize=(9, 9.4))
    for ax, seed, img in zip(axes.flat, seeds, images):
        shown = np.arcsinh(img / 0.05) / np.arcsinh(1 / 0.05) if args.stretch == "asinh" else img
        ax.imshow(shown, origin="lower", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{seed}: {draw_params(np.random.default_rng(seed)).kind}", fontsize=7, pad=2)
        ax.set_axis_off()
    fig.suptitle(f"jaxlens procedural galaxies, {args.npix}² ({args.stretch} stretch)", fontsize=10)
    fig.tight_layout(pad=0.3, rect=(0, 0, 1, 0.97))
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
