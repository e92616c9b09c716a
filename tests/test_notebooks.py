"""Every notebook runs top to bottom, headless, on its small setting, against the shipped model."""

import nbformat
import pytest
from PIL import Image

from cxr_workbench.ui.notebooks import NOTEBOOK_DIR, execute_notebook, inject_parameters

SMALL = {
    "00_quickstart": dict(MAX_STEPS=15),
    "01_the_generator": dict(N_QUALITY=100),
    "02_pc_browser": dict(LOCAL=["local"]),  # local+ searches for minutes on a CPU
    "03_mask_and_edit": dict(MAX_STEPS=15),
    "04_umap_trajectories": dict(SEEDS=[0, 1], MAX_STEPS=10),
    "05_pv_table": dict(SEEDS=[0, 1], SIGMAS=[0.3], MAX_STEPS=10),
    # 3 steps barely change a film: a label check would pass nothing (tests/test_augment.py tests it)
    "06_augmentation": dict(N_SAMPLES=4, KEEP_LAST=2, MAX_STEPS=3, VERIFY=False, N_NORMAL=16, N_DISEASE=[4],
                            N_AUG=4, N_VAL=8, N_TEST=8, EPOCHS=1, SEEDS=1),
    "07_invert_a_film": dict(STEPS=10, TUNE=10, MAX_STEPS=10),
    "08_reader_study": dict(N_REAL=3, N_EDITED=2, MAX_STEPS=5),
}
FIGURES = {
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


def test_every_notebook_is_tested_and_clean():
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert names == sorted(SMALL)
    for name in names:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), name
        assert "Runtime on 2 CPUs:" in nb.cells[0].source, f"{name}: its header says how long it runs"
        assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code"), \
            f"{name} has outputs; strip them before committing"


def test_unknown_parameter_is_refused():
    nb = nbformat.read(NOTEBOOK_DIR / "00_quickstart.ipynb", as_version=4)
    with pytest.raises(ValueError, match="SEEED"):
        inject_parameters(nb, {"SEEED": 1})


@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path, shared_cache, monkeypatch):
    monkeypatch.setenv("CXR_WORKBENCH_CACHE", str(shared_cache))
    out = tmp_path / "out"
    params = dict(SMALL[name], OUT_DIR=str(out))
    if name == "02_pc_browser":
        params["DIRECTION_FILE"] = str(out / "u.pt")
    nb = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", params,
                          html_out=tmp_path / f"{name}.html")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # What a researcher sees: every cell that ends on a figure shows it as an image, never as text.
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        last = (cell.source.strip().splitlines() or [""])[-1].strip()
        texts = [str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for o in cell.outputs]
        assert not any("<Figure size" in t for t in texts), (name, cell.source[:80])
        if last == "fig":
            assert any("image/png" in o.get("data", {}) for o in cell.outputs), (name, cell.source[:80])
    for f in FIGURES[name]:
        assert (out / f).stat().st_size > 0, f
        if f.endswith(".png"):
            assert Image.open(out / f).size[0] > 100
    html = (tmp_path / f"{name}.html").read_text()
    assert "<html" in html[:2000].lower() and "&lt;Figure size" not in html
    if name == "04_umap_trajectories":  # the interactive UMAP is in the HTML too, plotly.js inlined
        assert "Plotly.newPlot" in html and 'src="https://cdn.plot.ly' not in html
    if name == "00_quickstart":  # the HTML `make demo` writes holds Fig. 1, the comparison, as an image
        assert html.count("data:image/png;base64,") >= 2


LARGE = {  # the notebooks that take any generator, at settings that test the plumbing, not the method
    "00_quickstart": dict(MAX_STEPS=2),
    "01_the_generator": dict(N_QUALITY=16),
    "02_pc_browser": dict(LOCAL=[]),
    "03_mask_and_edit": dict(MAX_STEPS=2),
}


@pytest.fixture(scope="module")
def large_generators(tmp_path_factory):
    """Random 256 and 1024 px generators, as narrow as possible (4 channels a layer): real sizes,
    CPU-cheap."""
    import torch

    from cxr_workbench.model.checkpoints import save_generator
    from cxr_workbench.model.stylegan2 import Generator
    d = tmp_path_factory.mktemp("large")
    torch.manual_seed(0)
    return {size: save_generator(d / f"g{size}.pt", Generator(img_resolution=size, z_dim=8, w_dim=8, mapping_layers=2,
                                                              channel_base=4 * size, channel_max=4))
            for size in (256, 1024)}


# All four ran and passed at 256 and 1024 px when this was written (at 1024 px 00 and 03 take over
# two minutes each on 2 CPUs: the PC ranking and LO runs of 12 images of a million pixels); the
# suite keeps the two main flows at 256 px, and 1024 px through the CLI's sample and edit.
@pytest.mark.parametrize("name, size", [("00_quickstart", 256), ("03_mask_and_edit", 256)])
def test_notebooks_take_a_large_generator(name, size, large_generators, tmp_path):
    out = tmp_path / "out"
    params = dict(LARGE[name], GENERATOR=str(large_generators[size]), OUT_DIR=str(out))
    if name == "02_pc_browser":
        params["DIRECTION_FILE"] = str(out / "u.pt")
    nb = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", params)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]["evalue"][:300] if errors else ""
    assert f"generator: {size} px" in "".join(o.get("text", "") for o in nb.cells[3].outputs)
    for f in FIGURES[name]:
        assert (out / f).stat().st_size > 0, f
    if name == "03_mask_and_edit":  # the box stays in the generator's pixels
        import json
        assert json.loads((out / "box.json").read_text())["resolution"] == size


@pytest.mark.parametrize("size", [256, 1024])
def test_cli_takes_a_large_generator(size, large_generators, tmp_path, capsys):
    import json

    from cxr_workbench.ui.cli import main
    g = str(large_generators[size])
    assert main(["sample", "--checkpoint", g, "--seeds", "0-3", "--out", str(tmp_path / "grid.png")]) == 0
    assert Image.open(tmp_path / "grid.png").size == (8 * size, size)  # at the generator's own size
    assert main(["edit", "--checkpoint", g, "--seed", "0", "--direction", "pc:0", "--max-steps", "1", "--min-steps",
                 "0", "--out", str(tmp_path / "edit"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "edit" / "metrics.json").read_text())
    assert metrics["box"]["resolution"] == size and len(metrics["per_reference"]) == 1
    assert metrics["per_reference"][0]["severity"] == "ctr"  # the 64 px oracle reads it through its own view
    assert Image.open(tmp_path / "edit" / "strip.png").size[1] == 192  # 192 px tiles, whatever the size
