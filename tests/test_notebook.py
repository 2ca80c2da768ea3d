"""The quickstart notebook runs top to bottom as a user would (from the repository root, one CPU device)."""

import os

import nbformat
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # the kernel is a new process: one CPU device, as in Colab
    nb = nbformat.read(os.path.join(REPO, "examples", "quickstart.ipynb"), as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    chi2 = [float(v) for v in text.split("chi2_nu per sample: [", 1)[1].split("]", 1)[0].split()]
    assert len(chi2) == 4 and all(0.9 < c < 1.2 for c in chi2), chi2
    assert text.count("d chi2 / d") == 7 and "nan" not in text.lower()
