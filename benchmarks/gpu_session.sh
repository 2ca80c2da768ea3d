#!/bin/bash
# One device call for the GPU-speed issue: every measurement, results under $OUT.
#
# The device image has jax, flax, optax, orbax and chex but not ml_collections; carry its wheel in
# .whl/ (listed in .git/info/exclude), e.g. here:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl ml_collections
# then run this script from the repository root with carry=[".whl"] and a timeout of 600 s.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
# The paper's step (eq. 19) in both precisions, then the tweedie step's cost in float32, then a profile,
# most important first. Each has its own timeout (580 s in all); a killed run's log keeps the rows it printed.
timeout 360 python3 -m benchmarks.sampler_throughput --batches 8,32,128,256 --json "$OUT/eq19.json" 2>&1 \
  | tee "$OUT/eq19.log"
timeout 100 python3 -m benchmarks.sampler_throughput --likelihood tweedie --precisions float32 --batches 32 \
  --train-batch 0 --json "$OUT/tweedie.json" 2>&1 | tee "$OUT/tweedie.log"
# Where the bfloat16 step's time goes (the trace itself stays behind: it is large).
timeout 120 python3 -m benchmarks.profile_step --precision bfloat16 --batch 32 --steps 2 \
  --trace-dir /tmp/trace --json "$OUT/profile_bf16.json" 2>&1 | tee "$OUT/profile_bf16.log"
