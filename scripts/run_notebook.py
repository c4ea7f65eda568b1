"""Run notebooks/analysis.ipynb headless on a sweep folder, as papermill would: SWEEP_DIR is
injected after the parameters cell, the notebook runs with nbclient and is written with its
outputs to <sweep>/analysis.ipynb; its figures and ablation.csv land in <sweep>/figures/.

    .venv/bin/python scripts/run_notebook.py multirun/<time>
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def execute_notebook(sweep_dir: Path, timeout: int = 600) -> nbformat.NotebookNode:
    """The notebook executed on `sweep_dir` (module docstring), with its outputs."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"SWEEP_DIR = {str(sweep_dir)!r}", metadata={"tags": ["injected-parameters"]}))  # fmt: skip
    NotebookClient(nb, kernel_name="python3", timeout=timeout,
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # fmt: skip
    return nb


def output_text(nb: nbformat.NotebookNode) -> str:
    """The text of every code cell's outputs."""
    return "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "")
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="a sweep folder, a run or a folder of sweeps")
    args = parser.parse_args()
    nb = execute_notebook(args.sweep.resolve())
    nbformat.write(nb, args.sweep / "analysis.ipynb")
    print(output_text(nb))
    print(f"written: {args.sweep / 'analysis.ipynb'}, figures in {args.sweep / 'figures'}")


if __name__ == "__main__":
    main()
