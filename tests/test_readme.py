"""The README's Python example runs as written and prints what the README says it prints."""

import os
import re
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_block(heading: str) -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, f"expected one python block under {heading!r}, found {len(blocks)}"
    return blocks[0]


def test_python_api_example_samples_the_shipped_prior():
    code = _python_block("## Python API")
    env = dict(os.environ, XLA_FLAGS="")  # one CPU device, as a user would run it
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=900,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    line = run.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"N = (\d+), χ²_ν = \[([^\]]+)\], error of the mean = ([\d.]+)", line)
    assert match, line
    n_steps, chi2, error = int(match[1]), np.array(match[2].split(), float), float(match[3])
    # The README's numbers: N = 882, four χ²_ν near 1.01, error near 0.18 (the chains are seeded).
    assert n_steps == 882
    assert chi2.shape == (4,) and np.all((chi2 > 0.95) & (chi2 < 1.1)), chi2
    assert 0.1 < error < 0.25, error
