"""Where the time of one posterior EM step goes, from a `jax.profiler` trace (issue "GPU speed").

  python -m benchmarks.profile_step [--config paper_probes_256] [--precision float32] [--batch 8]
      [--steps 2] [--likelihood eq19] [--trace-dir DIR] [--json results.json] [--top 12]

It builds the step `benchmarks/sampler_throughput.py` times (random NCSN++ parameters, the
config's lens, the chosen likelihood), warms it up, then records `--steps` EM steps of
`--batch` chains per device with `jax.profiler.trace`. Every device op in the trace is matched
to its HLO instruction in the compiled program, and the instruction's source path (its
`op_name` metadata: the Flax module and the primitive) puts it in a category: convolution,
attention, GroupNorm, swish, FIR resampling, the rest of the network, and the likelihood with
the EM update. Container ops (while loops, calls) are skipped so that nothing is counted twice.

It prints the wall time of a step (untraced) against its op time summed over the local devices
(on one GPU, the gap is idle device time), the time per step in each category, the top ops, the
share of op time that matched no instruction, and XLA's cost analysis of one network evaluation
(FLOPs, bytes accessed, and their ratio, the arithmetic intensity that a roofline compares with
the device's FLOP/byte).
The trace stays in --trace-dir for TensorBoard or Perfetto.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import glob
import gzip
import json
import os
import re
import tempfile

import jax

from jaxlens.cli.throughput import ThroughputProblem, median_time

# name = type opcode(...), where a tuple type is parenthesised (comments removed first).
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(?:\([^()]*\)|\S+)\s+([\w\-]+)\(")
_COMMENT = re.compile(r"/\*.*?\*/")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# Ops that only sequence others: their spans contain their children's.
_CONTAINERS = {"while", "conditional", "call", "async-start", "async-done", "async-update"}


def categorize(op_name: str) -> str:
    """The category of an HLO instruction, from its `op_name` metadata (module path / primitive).

    A fusion carries its root's metadata, so work fused into a later op counts under that op
    (GroupNorm's final multiply-add, fused into the swish after it, counts as swish).
    """
    path = op_name.lower()
    if not path:
        return "no source metadata"
    if "ncsnpp" not in path:
        return "likelihood + EM update"
    leaf = path.rsplit("/", 1)[-1]
    if "attn" in path:
        return "attention"
    if leaf.startswith("conv_general_dilated"):
        return "convolution"
    if leaf.startswith("dot_general"):
        return "dense (σ embedding, NIN)"
    if re.search(r"/norm\w*/", path):
        return "GroupNorm"
    if "silu" in path:
        return "swish"
    if any(k in path for k in ("_resample", "image_down", "pyramid_up", "pyramid_down", "jit(_pad)")):
        return "FIR resampling"
    return "other network ops"


def hlo_instructions(hlo_text: str) -> dict[str, tuple[str, str]]:
    """Instruction name → (opcode, op_name); op_name is "" where XLA left no source metadata."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(_COMMENT.sub("", line))
        if m:
            meta = _OP_NAME.search(line)
            out[m.group(1)] = (m.group(2), meta.group(1) if meta else "")
    return out


def _lookup(event: dict, table: dict) -> tuple[str, str] | None:
    """The HLO instruction a trace event ran, from its `hlo_op` argument."""
    key = (event.get("args") or {}).get("hlo_op")
    return table.get(key.lstrip("%")) if isinstance(key, str) else None


def _short(op_name: str) -> str:
    """The op's path from the network (or likelihood) down, without the jit/vmap/scan wrappers."""
    i = op_name.find("NCSNpp/")
    return op_name[i + len("NCSNpp/"):] if i >= 0 else op_name.split("closed_call/")[-1]


def attribute(events: list[dict], table: dict) -> tuple[dict, dict, float]:
    """Microseconds per category and per op_name, and the device-op time that matched nothing."""
    per_cat, per_op = collections.Counter(), collections.Counter()
    unmatched = 0.0
    for e in events:
        # XLA's profiler tags each op it runs with `hlo_op`; host spans (Python, the runtime) and
        # the CPU's short "end: <op>" markers carry no tag. The GPU case is untried so far: there
        # the unmatched share and the op time against the wall time are the checks.
        if e.get("ph") != "X" or "dur" not in e or "hlo_op" not in (e.get("args") or {}):
            continue
        hit = _lookup(e, table)
        if hit is None:
            unmatched += e["dur"]
            continue
        opcode, op_name = hit
        if opcode in _CONTAINERS:
            continue
        per_cat[categorize(op_name)] += e["dur"]
        per_op[_short(op_name)] += e["dur"]
    return per_cat, per_op, unmatched


def _load_trace(trace_dir: str) -> list[dict]:
    files = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not files:
        raise SystemExit(f"no perfetto trace under {trace_dir}")
    with gzip.open(files[-1]) as f:
        data = json.load(f)
    return data["traceEvents"] if isinstance(data, dict) else data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="paper_probes_256")
    ap.add_argument("--precision", default="float32", help="float32 or bfloat16")
    ap.add_argument("--batch", type=int, default=8, help="chains per device")
    ap.add_argument("--steps", type=int, default=2, help="EM steps recorded (one lax.scan)")
    ap.add_argument("--likelihood", default="eq19")
    ap.add_argument("--lanczos-cap", type=int, default=5)
    ap.add_argument("--trace-dir", default="", help="keep the trace here (default: a temporary folder)")
    ap.add_argument("--json", default="")
    ap.add_argument("--top", type=int, default=12, help="how many single ops to list")
    args = ap.parse_args()
    if args.batch < 1 or args.steps < 1:
        raise SystemExit("need --batch >= 1 and --steps >= 1")
    get = __import__(f"configs.{args.config}", fromlist=["get_config"]).get_config
    problem = ThroughputProblem(get(), args.precision, args.likelihood, args.lanczos_cap)
    run, keys, x = problem.step_fn(args.batch, args.steps)
    # One compilation: the program whose HLO names the ops is the one that runs and is traced.
    compiled = run.lower(keys, x).compile()
    table = hlo_instructions(compiled.as_text())
    wall = median_time(lambda: compiled(keys, x), 1)  # after a warm-up call

    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="jaxlens_trace_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        jax.block_until_ready(compiled(keys, x))
    per_cat, per_op, unmatched = attribute(_load_trace(trace_dir), table)

    flops, bytes_ = problem.flops_per_eval, problem.bytes_per_eval
    total = sum(per_cat.values())
    dev = jax.local_devices()[0]
    result = {
        "date": datetime.date.today().isoformat(), "device": dev.device_kind, "platform": jax.default_backend(),
        "jax": jax.__version__, "config": args.config, "precision": args.precision, "likelihood": args.likelihood,
        "chains_per_device": args.batch, "steps": args.steps, "gflop_per_eval": flops / 1e9,
        "gb_accessed_per_eval": bytes_ / 1e9, "flop_per_byte": flops / bytes_,
        "wall_ms_per_step": 1e3 * wall / args.steps, "op_ms_per_step": total / 1e3 / args.steps,
        "unmatched_share": unmatched / max(total + unmatched, 1e-9),
        "categories": {k: v / 1e3 / args.steps for k, v in per_cat.most_common()},
        "top_ops": [[k, v / 1e3 / args.steps] for k, v in per_op.most_common(args.top)],
    }
    print(f"{dev.device_kind} ({jax.default_backend()}), jax {jax.__version__}, {args.config}, {args.precision}, "
          f"{args.likelihood}, {args.batch} chains/device, {args.steps} steps traced in {trace_dir}\n")
    print(f"one network evaluation: {flops / 1e9:.1f} GFLOP, {bytes_ / 1e9:.2f} GB accessed, "
          f"{flops / bytes_:.0f} FLOP/byte\n")
    # Op time above the wall time means ops overlapped (CPU threads); below, the device sat idle.
    print(f"wall time {1e3 * wall / args.steps:.2f} ms per step (untraced), summed op time "
          f"{total / 1e3 / args.steps:.2f} ms per step\n")
    print("| category | ms per step | share of op time |\n|---|---|---|")
    for k, v in per_cat.most_common():
        print(f"| {k} | {v / 1e3 / args.steps:.2f} | {100 * v / total:.1f} % |")
    print(f"\nop time that matched no HLO instruction: {100 * result['unmatched_share']:.1f} %\n")
    print("| op (source path) | ms per step |\n|---|---|")
    for k, v in result["top_ops"]:
        print(f"| {k} | {v:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
