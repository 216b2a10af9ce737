"""notebooks/marathon.ipynb executes against the real-run fixture and shows every chart and table
(nbclient, a real Python kernel; no Docker)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "marathon.ipynb"
FIXTURE = ROOT / "tests" / "fixtures" / "results" / "fixture"


def test_notebook_runs_on_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("MARATHON_RUN_DIRS", str(FIXTURE))
    monkeypatch.setenv("MARATHON_REPORT_OUT", str(tmp_path / "report"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5  # marathon, gate survival, regressions, recovery, token audit
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "full passes [Wilson 95%]" in text and "## Claim boundary" in text
    assert (tmp_path / "report" / "report.md").is_file()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([__file__, "-q"]))
