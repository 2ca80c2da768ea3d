"""Prior quality and held-out DSM loss against training compute, for several `bin/train` runs.

  python -m experiments.training_curves --runs "score_sde=runs/a,EDM uniform t=runs/b"
      [--scored "score_sde=out/pq_a.json,EDM uniform t=out/pq_b.json"] [--images-per-s 18.6] [--batch 16]
      [--cores 2] [--figure out/training_curves.png] [--json out/training_curves.json]

Reads each work directory's `metrics.jsonl`: `val_dsm` at every checkpoint and the cheap prior-quality rows
`bin/train` logs every `training.quality_every` steps (KS distances of the morphology statistics and
prior-alone TARP, with their noise floors). --scored adds full `experiments.prior_quality` measurements
(500 samples against 500 galaxies, and their `val_dsm`) as larger markers. The x axis is CPU-hours at the uncontested training
throughput (--images-per-s at --batch on --cores), not the logged wall time, which is per resumed piece
and counts whatever shared the CPU; every recipe here runs the same network at the same batch, so equal
steps are equal compute.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jaxlens import io
from jaxlens.diagnostics.figures import save_figure

STATISTICS = ("flux", "r50", "concentration", "e")


def parse_pairs(text: str) -> list[tuple[str, str]]:
    pairs = [item.split("=", 1) for item in text.split(",") if item]
    if any(len(p) != 2 or not p[0] or not p[1] for p in pairs):
        raise SystemExit(f"expected label=path[,label=path...], got {text!r}")
    return [(label, path) for label, path in pairs]


def read_run(workdir: str) -> dict:
    """The checkpoints' val_dsm and the logged prior-quality rows of one run, by step."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: --runs takes bin/train work directories")
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"val_dsm": [(r["step"], r["val_dsm"]) for r in rows if "val_dsm" in r],
            "quality": [(r["step"], r["prior_quality"]) for r in rows if "prior_quality" in r]}


def read_scored(path: str) -> tuple[int, dict]:
    with open(path) as f:
        record = json.load(f)
    if "quality" not in record or record.get("prior_step") is None:
        raise SystemExit(f"{path} is not an experiments.prior_quality result of a checkpoint with a step")
    return int(record["prior_step"]), {**record["quality"], **record.get("validation", {})}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True)
    ap.add_argument("--scored", default="")
    ap.add_argument("--images-per-s", type=float, default=18.6)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--figure", default=os.path.join("out", "training_curves.png"))
    ap.add_argument("--json", default=os.path.join("out", "training_curves.json"))
    args = ap.parse_args()
    if not (args.images_per_s > 0 and args.batch > 0 and args.cores > 0):
        raise SystemExit("--images-per-s, --batch and --cores must be > 0")
    cpu_hours_per_step = args.batch / args.images_per_s * args.cores / 3600.0

    runs = {label: read_run(path) for label, path in parse_pairs(args.runs)}
    scored = {}
    for label, path in parse_pairs(args.scored):
        scored.setdefault(label, []).append(read_scored(path))
    for label, run in runs.items():
        last = run["val_dsm"][-1] if run["val_dsm"] else None
        print(f"{label}: {len(run['val_dsm'])} val_dsm rows (last {last}), {len(run['quality'])} quality rows")
    record = {"command": sys.argv, "cpu_hours_per_step": cpu_hours_per_step, "runs": runs, "scored": scored}
    print("wrote", io.write_results(args.json, record))
    _figure(args.figure, runs, scored, cpu_hours_per_step)


def _figure(path, runs, scored, per_step) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(STATISTICS), figsize=(3.0 * (1 + len(STATISTICS)), 3.0))
    colors = {label: f"C{i}" for i, label in enumerate(sorted(set(runs) | set(scored)))}
    for label, run in runs.items():
        if run["val_dsm"]:
            steps, values = zip(*run["val_dsm"])
            axes[0].plot([s * per_step for s in steps], values, "-o", ms=3, color=colors[label], label=label)
        for ax, name in zip(axes[1:], STATISTICS):
            if run["quality"]:
                steps, rows = zip(*run["quality"])
                ax.plot([s * per_step for s in steps], [q[f"ks_{name}"] for q in rows], ":s", ms=3,
                        color=colors[label])
                ax.plot([s * per_step for s in steps], [q["ks_floor"] for q in rows], "_", color="0.6")
    for label, points in scored.items():
        for k, (step, q) in enumerate(points):
            axes[0].plot(step * per_step, q.get("val_dsm", float("nan")), "o", ms=8, color=colors[label], mec="k",
                         label=f"{label}, 500 vs 500" if k == 0 else None)
        for ax, name in zip(axes[1:], STATISTICS):
            for step, q in points:
                ax.plot(step * per_step, q[f"ks_{name}"], "o", ms=8, color=colors[label], mec="k")
                ax.axhline(q["ks_floor"], color="0.6", lw=0.8, ls="--")
    axes[0].set(ylabel="val_dsm (held-out DSM loss)", yscale="log")
    axes[0].legend(fontsize=7)
    for ax, name in zip(axes[1:], STATISTICS):
        ax.set(ylabel=f"KS {name}", ylim=(0, None))
    for ax in axes:
        ax.set_xlabel("CPU-hours")
    fig.suptitle("small markers: logged at cheap settings (grey: their floor); large: 500 vs 500 (dashed: floor)",
                 fontsize=8)
    save_figure(fig, path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
