"""The notebooks' side of the package: the one setup call each notebook starts with, and headless
runs (inject parameters after the cell tagged ``parameters``, as papermill does, execute with
nbclient, write the executed notebook as HTML)."""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import NamedTuple

import nbformat

from cxr_workbench.io import atomic_write

__all__ = ["NOTEBOOK_DIR", "Session", "show_figures_inline", "start", "inject_parameters", "execute_notebook"]

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"


class Session(NamedTuple):
    """What a notebook's ``start`` returns: the generator, oracle, PCA and output folder."""
    G: object        # the generator (the shipped one by default)
    oracle: object   # the shipped severity oracle, as a reader (readers.OracleReader: it reads any size)
    pca: object      # the PCA of W for G
    out: Path        # the notebook's output folder (created)


def show_figures_inline() -> bool:
    """Show matplotlib figures as PNG in this kernel's outputs, whatever the backend, and plotly
    figures also as self-contained HTML (for exported notebooks). The package's
    figures are made outside pyplot, and such a figure gets a PNG formatter only while the inline
    backend is active (not under Agg, or when a front end picked another): without this a cell
    shows ``<Figure size ...>``. Returns False outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    from IPython.core.pylabtools import select_figure_formats
    from matplotlib.figure import Figure
    select_figure_formats(shell, {"png"}, bbox_inches="tight")
    # The PNG is the figure; its repr would only repeat "<Figure size ...>" beside it.
    shell.display_formatter.formatters["text/plain"].for_type(Figure, lambda fig, p, cycle: p.text(""))
    # Plotly figures: JupyterLab draws the plotly mimetype; the HTML beside it (plotly.js inlined
    # once, nothing fetched) is what an exported notebook shows.
    import plotly.io as pio
    pio.renderers.default = "plotly_mimetype+notebook"
    return True


def start(out_dir, generator=None, quiet: bool = False) -> Session:
    """Load the generator (``generator``: a file in any format ``load_generator`` reads, or a shipped
    one's name, ``assets.SHIPPED``; None: the default), the shipped oracle of its films as a reader,
    and the PCA of W (computed once and cached for a generator that is not shipped); create the
    output folder, and show figures inline (``show_figures_inline``)."""
    from cxr_workbench.assets import generator_or_default, load_reader, pca_for
    from cxr_workbench.io import check_writable
    show_figures_inline()
    out = check_writable(out_dir)
    G = generator_or_default(generator)
    if not quiet:
        classes = f", {G.c_dim} classes" if G.c_dim else ""
        print(f"generator: {G.img_resolution} px, {G.num_ws} W+ layers of width {G.w_dim}{classes}; outputs in {out}")
    return Session(G, load_reader("oracle", G), pca_for(G), out)


def inject_parameters(nb, parameters: dict):
    """Insert a cell with ``name = value`` lines right after the ``parameters`` cell."""
    idx = next((i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if idx is None:
        raise ValueError("notebook has no cell tagged 'parameters'")
    known = {t.id for node in ast.parse(nb.cells[idx].source).body if isinstance(node, ast.Assign)
             for t in node.targets if isinstance(t, ast.Name)}
    unknown = set(parameters) - set(known)
    if unknown:
        raise ValueError(f"unknown notebook parameters {sorted(unknown)}; expected some of {sorted(known)}")
    src = "# injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
    cell = nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(idx + 1, cell)
    return nb


def execute_notebook(path, parameters: dict | None = None, html_out=None, timeout: int = 900,
                     overwrite: bool = True):
    """Execute a notebook (in its own folder) and return the executed notebook node."""
    from nbclient import NotebookClient
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if parameters:
        inject_parameters(nb, parameters)
    env_backend = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        if env_backend is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = env_backend
    if html_out is not None:
        from nbconvert import HTMLExporter
        body, _ = HTMLExporter().from_notebook_node(nb)
        atomic_write(html_out, lambda f: f.write(body), "w", overwrite)
    return nb
