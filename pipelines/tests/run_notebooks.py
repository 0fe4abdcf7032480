"""Executes every notebook of notebooks/ against the lake named on the command line.

Used by the CLI tests: a cell that raises fails the run, and the error is printed.
"""
import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

lake = Path(sys.argv[1]).resolve()
folder = Path(__file__).resolve().parent.parent.parent / "notebooks"
os.environ["MAESTRO_LAKE"] = str(lake)
notebooks = sorted(folder.glob("*.ipynb"))
assert notebooks, f"no notebook in {folder}"
for path in notebooks:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}).execute()
    outputs = sum(len(cell.get("outputs", [])) for cell in notebook.cells if cell.cell_type == "code")
    print(f"{path.name}: {len(notebook.cells)} cells executed, {outputs} outputs")
