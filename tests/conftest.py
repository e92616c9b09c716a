import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from PIL import Image

from cxr_workbench.model.stylegan2 import Generator

# `make test` runs one pytest-xdist worker per core, a test file to a worker (its module fixtures once):
# each worker, and every process it starts (the CLI, kernels, servers), computes on one thread, or two
# workers of two threads oversubscribe the cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    torch.set_num_threads(1)

# The suite is the same on every machine: hypothesis draws each fuzz test's examples from a seed of its
# own. `make fuzz` explores instead (HYPOTHESIS_PROFILE=explore): new examples each run, a find kept in
# .hypothesis/ and replayed until it passes; add it as an @example when mended.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep PCA caches out of the user's home during tests."""
    monkeypatch.setenv("CXR_WORKBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One cache of directions for the tests that find the same ones on the shipped generator
    (notebooks headless and in the browser, the apps, the README driver): the searches themselves
    are tested in test_directions, these tests need only their answers."""
    return tmp_path_factory.mktemp("shared-cache")


def tiny_generator(**kw) -> Generator:
    """A small random generator, the same for the same settings (16 px, 8-dim latents by default)."""
    torch.manual_seed(0)
    settings = {**dict(img_resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_max=16), **kw}
    return Generator(**settings).eval().requires_grad_(False)


# What each notebook writes into its OUT_DIR (checked after a headless run and after a run in JupyterLab)
NOTEBOOK_OUTPUTS = {
    "00_quickstart": ["samples.png", "comparison.png", "metrics.csv"],
    "01_the_generator": ["severity_distributions.png"],
    "02_pc_browser": ["pc_strips.png", "u.pt"],
    "03_mask_and_edit": ["figure3.png", "figure3.pdf", "box.json"],
    "04_umap_trajectories": ["umap.png", "umap.html"],
    "05_pv_table": ["pv_runs.csv", "sigma_ablation.png"],
    "06_augmentation": ["examples.png", "tables.csv", "protocol/results.csv"],
    "07_invert_a_film": ["reconstruction.png", "film_edits.png", "demo_film.dcm"],
    "08_reader_study": ["study.db", "table1.csv"],
}


def check_executed_notebook(name: str, nb, out: Path) -> str:
    """What a researcher sees in an executed notebook: no error, every cell that ends on a figure
    shows it as an image (never as text), the files it writes, and its HTML export without figure
    placeholders. Returns the HTML."""
    from nbconvert import HTMLExporter
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, (name, errors[0].get("evalue", "")[:300] if errors else "")
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        last = (cell.source.strip().splitlines() or [""])[-1].strip()
        texts = [str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs]
        assert not any("<Figure size" in t for t in texts), (name, cell.source[:80])
        if last == "fig":
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), (name, cell.source[:80])
    for f in NOTEBOOK_OUTPUTS[name]:
        assert (out / f).stat().st_size > 0, f
        if f.endswith(".png"):
            assert Image.open(out / f).size[0] > 100
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "<html" in html[:2000].lower() and "&lt;Figure size" not in html
    if name == "00_quickstart":  # the HTML `make demo` writes holds Fig. 1, the comparison, as an image
        assert html.count("data:image/png;base64,") >= 2
    return html
