"""Every notebook runs top to bottom, headless, on its small setting, against the shipped model."""

import nbformat
import pytest
from conftest import NOTEBOOK_OUTPUTS, check_executed_notebook
from PIL import Image

from cxr_workbench.ui.notebooks import NOTEBOOK_DIR, execute_notebook, inject_parameters

# 00, 04 and 08 run in JupyterLab instead (tests/test_browser.py), checked there the same way.
SMALL = {
    "01_the_generator": dict(N_QUALITY=100),
    # the searched directions take minutes on a CPU (test_directions tests them): SeFa's closed form
    # runs the same scoreboard cells
    "02_pc_browser": dict(LOCAL=["sefa"]),
    "03_mask_and_edit": dict(MAX_STEPS=15),
    "05_pv_table": dict(SEEDS=[0, 1], SIGMAS=[0.3], MAX_STEPS=10),
    # 3 steps barely change a film: a label check would pass nothing (tests/test_augment.py tests it)
    "06_augmentation": dict(N_SAMPLES=4, KEEP_LAST=2, MAX_STEPS=3, VERIFY=False, N_NORMAL=16, N_DISEASE=[4],
                            N_AUG=4, N_VAL=8, N_TEST=8, EPOCHS=1, SEEDS=1),
    "07_invert_a_film": dict(STEPS=10, TUNE=10, MAX_STEPS=10),
}


def test_every_notebook_is_tested_and_clean():
    from test_browser import NOTEBOOKS
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert names == sorted({**SMALL, **NOTEBOOKS}) == sorted(NOTEBOOK_OUTPUTS)
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
    nb = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", params)
    check_executed_notebook(name, nb, out)


def test_quickstart_command_writes_the_figures_and_the_html(tmp_path, shared_cache, monkeypatch, capsys):
    """The README's main job (``make demo``): notebook 00 run headless by the CLI, its figures and
    an HTML page that shows them as images."""
    from cxr_workbench.ui.cli import main
    monkeypatch.setenv("CXR_WORKBENCH_CACHE", str(shared_cache))
    out = tmp_path / "quickstart"
    assert main(["quickstart", "--max-steps", "15", "--out", str(out)]) == 0
    assert "Open the executed notebook" in capsys.readouterr().out
    html = (out / "00_quickstart.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "&lt;Figure size" not in html
    for f in NOTEBOOK_OUTPUTS["00_quickstart"]:
        assert (out / f).stat().st_size > 0, f
    assert main(["quickstart", "--max-steps", "15", "--out", str(out)]) == 2  # the page is not overwritten


LARGE = {  # the notebooks that take any generator, at settings that test the plumbing, not the method
    "00_quickstart": dict(MAX_STEPS=2, DIRECTION="auto"),  # jacobian: 8 x (w_dim + 1) renderings
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
# suite keeps the editing notebook at 256 px (the quickstart makes the same calls), and 256 and
# 1024 px through the CLI's sample and edit.
@pytest.mark.parametrize("name, size", [("03_mask_and_edit", 256)])
def test_notebooks_take_a_large_generator(name, size, large_generators, tmp_path):
    out = tmp_path / "out"
    params = dict(LARGE[name], GENERATOR=str(large_generators[size]), OUT_DIR=str(out))
    if name == "02_pc_browser":
        params["DIRECTION_FILE"] = str(out / "u.pt")
    nb = execute_notebook(NOTEBOOK_DIR / f"{name}.ipynb", params)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0]["evalue"][:300] if errors else ""
    assert f"generator: {size} px" in "".join(o.get("text", "") for o in nb.cells[3].outputs)
    for f in NOTEBOOK_OUTPUTS[name]:
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
