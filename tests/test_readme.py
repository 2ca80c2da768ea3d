"""The README's Python examples run as written and print what the README says they print."""

import os
import re
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python_blocks(heading: str) -> list[str]:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _run(code: str) -> str:
    env = dict(os.environ, XLA_FLAGS="")  # one CPU device, as a user would run it
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, timeout=900, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]


def test_the_readme_has_three_python_examples_and_stays_short():
    assert len(_python_blocks("## Python API")) == 3
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 200


def test_runner_example_samples_the_shipped_prior():
    line = _run(_python_blocks("## Python API")[0])
    match = re.fullmatch(r"chi2_nu \[([^\]]+)\] error ([\d.]+)", line)
    assert match, line
    chi2, error = np.array(match[1].split(), float), float(match[2])
    # The README's numbers: two χ²_ν near 1.01, error near 0.2 (the chains are seeded).
    assert chi2.shape == (2,) and np.all((chi2 > 0.95) & (chi2 < 1.1)), chi2
    assert 0.1 < error < 0.25, error


def test_vmap_over_lenses_example():
    assert _run(_python_blocks("## Python API")[1]) == "(3, 2, 64, 64, 1)"


def test_grad_with_respect_to_the_lens_example():
    line = _run(_python_blocks("## Python API")[2])
    grad = eval(line)  # noqa: S307 - a dict literal printed by our own example
    assert sorted(grad) == sorted(("theta_e", "e1", "e2", "center_x", "center_y", "gamma1", "gamma2"))
    assert all(np.isfinite(v) for v in grad.values()) and any(v != 0 for v in grad.values())
