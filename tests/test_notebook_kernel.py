"""examples/notebook.py executed as a notebook by a real Jupyter kernel (jupytext + nbclient +
ipykernel, the `notebook` extra, also in `test`): the figure a cell returns is shown as a PNG
in a fresh kernel, where nothing imported matplotlib.pyplot. The cells run up to the sweep,
which test_notebook runs (as a script) and which takes most of the time."""

from __future__ import annotations

from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.py"


def test_the_notebook_executes_in_a_kernel_and_shows_the_figure(tmp_path, monkeypatch):
    import jupytext
    import nbclient

    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own default, as a user has it
    notebook = jupytext.read(NOTEBOOK)
    sweep = next(i for i, cell in enumerate(notebook.cells) if "metarep.sweep(" in cell.source)
    notebook.cells = notebook.cells[:sweep]
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [(cell.source, out) for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for _, out in outputs if out.get("output_type") == "error"]
    shown = [source for source, out in outputs if "image/png" in out.get("data", {})]
    assert shown and "result.figure()" in shown[0]
    assert not any("matplotlib.pyplot" in cell.source for cell in notebook.cells)
