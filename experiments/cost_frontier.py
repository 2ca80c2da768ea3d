"""Accuracy against network evaluations on the Gaussian-mixture benchmark, for each sampler setting.

  python -m experiments.cost_frontier [--sims 20] [--chains 32] [--priors locations,scales]
      [--sigma-n 0.05,0.3] [--settings exact:50,tweedie:200:5,tweedie:50:20:0.03,tweedie:25:20:0.05:pc,
      tweedie:57:5:0.05:em:0.3-3,...]
      [--json out/cost_frontier.json] [--figure out/cost_frontier.png]

Each setting is `exact:N` (the reverse SDE with the exact diffused posterior score: the sampler's own
discretisation error at N) or `tweedie:N:cap[:drift_tol[:solver[:lo-hi]]]`, the solver one of `em`
(Euler–Maruyama, the default), `pc` (one Langevin corrector per step, score_sde's snr 0.16), `ode` and
`heun` (the probability-flow ODE, Euler and Heun: deterministic given the start), and `lo-hi` Tweedie's
`covariance_gradient_sigmas` (its gradient through the covariance too, where lo ≤ σ(t) ≤ hi). The
posteriors are exact (`experiments.mixture_calibration`), so accuracy is measured, not estimated: the variance ratio
Σ tr Cov(samples) / Σ tr Cov(exact) (1 is exact) and the mean error in Monte-Carlo units (1 is exact).
Network evaluations per sample are counted by the sampler as it runs (a score call, or a Jacobian
product of the Tweedie solve, each one; the mixture's score stands in for the network). The
figure plots both against the evaluations, one panel per (prior, σ_n).
"""

from __future__ import annotations

import argparse
import os
import sys

from jaxlens import io
from jaxlens.diagnostics.figures import save_figure
from jaxlens.sample import EulerMaruyama, PredictorCorrector, ProbabilityFlow
from experiments.mixture_calibration import run_setting

DEFAULT_SETTINGS = ("exact:25,exact:50,exact:100,tweedie:200:5,tweedie:100:5,tweedie:50:5,tweedie:50:10,"
                    "tweedie:100:20,tweedie:50:20,tweedie:50:20:0.03,tweedie:40:20:0.03,tweedie:75:20:0.03")


SOLVERS = {"em": EulerMaruyama(), "pc": PredictorCorrector(), "ode": ProbabilityFlow("euler"),
           "heun": ProbabilityFlow("heun")}


def parse_setting(text: str) -> dict:
    parts = text.split(":")
    if parts[0] == "exact" and len(parts) == 2:
        return {"mode": "exact", "n_steps": int(parts[1]), "cap": 0, "drift_tol": 0.0, "solver": "em", "cov": None}
    if (parts[0] == "tweedie" and len(parts) in (3, 4, 5, 6) and (len(parts) < 5 or parts[4] in SOLVERS)
            and (len(parts) < 6 or len(parts[5].split("-")) == 2)):
        return {"mode": "tweedie", "n_steps": int(parts[1]), "cap": int(parts[2]),
                "drift_tol": float(parts[3]) if len(parts) >= 4 else 0.0,
                "solver": parts[4] if len(parts) >= 5 else "em",
                "cov": tuple(float(v) for v in parts[5].split("-")) if len(parts) == 6 else None}
    raise SystemExit(f"bad setting {text!r}: use exact:N or tweedie:N:cap[:drift_tol[:solver[:lo-hi]]], "
                     f"solver one of {sorted(SOLVERS)}")


def label(s: dict) -> str:
    if s["mode"] == "exact":
        return f"exact score, N={s['n_steps']}"
    return (f"tweedie N={s['n_steps']} cap {s['cap']}" + (f" drift {s['drift_tol']:g}" if s["drift_tol"] else "")
            + (f" {s['solver']}" if s["solver"] != "em" else "")
            + (f" cov σ∈[{s['cov'][0]:g}, {s['cov'][1]:g}]" if s.get("cov") is not None else ""))


def plot(path: str, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = sorted({(r["prior"], r["sigma_n"]) for r in rows})
    fig, axes = plt.subplots(2, len(cells), figsize=(4 * len(cells), 6.5), squeeze=False, sharex=True)
    for j, (prior, sigma_n) in enumerate(cells):
        cell = [r for r in rows if (r["prior"], r["sigma_n"]) == (prior, sigma_n)]
        for i, (key, ideal, band) in enumerate((("var_ratio", 1.0, 0.03), ("mean_err", 1.0, None))):
            ax = axes[i, j]
            ax.axhline(ideal, color="k", lw=0.8)
            if band:
                ax.axhspan(ideal - band, ideal + band, color="0.9")
            ax.axvline(300, color="0.6", ls=":", lw=1)
            for r in cell:
                marker = "s" if r["mode"] == "exact" else ("o" if r["drift_tol"] else "^")
                ax.plot(r["evaluations_per_sample"], r[key], marker, label=label(r))
            ax.set_xscale("log")
            ax.set_title(f"{prior}, σ_n = {sigma_n:g}", fontsize=9)
            ax.set_ylabel("variance ratio" if i == 0 else "mean error (MC units)")
            if i == 1:
                ax.set_xlabel("network evaluations per sample")
    axes[0, -1].legend(fontsize=6, loc="best")
    save_figure(fig, path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sims", type=int, default=20)
    ap.add_argument("--chains", type=int, default=32)
    ap.add_argument("--priors", default="locations,scales")
    ap.add_argument("--sigma-n", default="0.05,0.3")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=os.path.join("out", "cost_frontier.json"))
    ap.add_argument("--figure", default=os.path.join("out", "cost_frontier.png"))
    args = ap.parse_args()
    settings = [parse_setting(s) for s in args.settings.split(",") if s]
    env = io.environment()
    print(f"# cost frontier, {env['date']}, {env['cpu']}, {env['cores']} cores, JAX {env['jax']}; "
          f"{args.sims} simulations x {args.chains} chains")
    print("| prior | σ_n | setting | evals / sample | var ratio | mean err | spread/skill | diverged |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for prior in args.priors.split(","):
        for sigma_n in (float(v) for v in args.sigma_n.split(",")):
            for s in settings:
                r = run_setting(prior, sigma_n, [s["mode"]], args.sims, args.chains, s["n_steps"], max(s["cap"], 1),
                                args.seed, drift_tol=s["drift_tol"], solver=SOLVERS[s["solver"]],
                                covariance_gradient_sigmas=s["cov"])[s["mode"]]
                row = {"prior": prior, "sigma_n": sigma_n, **s, **r}
                rows.append(row)
                print(f"| {prior} | {sigma_n:g} | {label(s)} | {r['evaluations_per_sample']:.0f} | "
                      f"{r['var_ratio']:.3f} | {r['mean_err']:.2f} | {r['spread_skill']:.3f} ± "
                      f"{r['spread_skill_err']:.3f} | {r['diverged']} |", flush=True)
    print("wrote", io.write_results(args.json, {"command": sys.argv, "args": vars(args), "rows": rows}))
    plot(args.figure, rows)
    print("wrote", args.figure)


if __name__ == "__main__":
    main()
