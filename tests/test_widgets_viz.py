import base64
import io
from dataclasses import replace

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")

from conftest import tiny_generator

from cxr_workbench.imaging.masks import Box, preset
from cxr_workbench.imaging.strips import strip_image
from cxr_workbench.method.optimize import LOConfig, optimize_trajectory, translate_along
from cxr_workbench.method.pca import compute_pca
from cxr_workbench.model.latents import reference_latents
from cxr_workbench.studies.figures import comparison_figure, save_figure, umap_embedding, umap_figure, umap_plotly
from cxr_workbench.ui.widgets import OptimizationRunner, PCBrowser, ROIDrawer

FAST = LOConfig(n=4, max_steps=12, min_steps=5, layers=(0, 1, 2))


@pytest.fixture(scope="module")
def G():
    return tiny_generator(z_dim=16, w_dim=16)


@pytest.fixture(scope="module")
def pca(G):
    return compute_pca(G, n_samples=1000)


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_pc_browser_slider_sign_and_use(G, pca, tmp_path):
    box = preset("heart", 16)
    b = PCBrowser(G, pca, reference_latents(G, [0])[0], box=box, n_sliders=4, direction_path=tmp_path / "u.pt")
    before = b.current_image.clone()
    b.sliders[0].value = 2.0  # moving a slider redraws
    assert (b.current_image - before).abs().max() > 0
    assert png(b.image.value).shape == (256, 256, 3)  # every generator's image is shown 256 px wide
    assert len(b.rows) == 10 and b.rows[0]["inside_share"] >= b.rows[-1]["inside_share"]
    assert "PCs local to the box" in b.ranking.value
    top = b.rows[0]
    torch.testing.assert_close(b.pick(disease="opacity"), top["brightens"] * pca.components[top["pc"]])
    b.pc.value, b.sign.value = 2, -1
    strip = b.strip_images.clone()
    u = b.use_direction()
    torch.testing.assert_close(u, -pca.components[2])
    assert torch.load(tmp_path / "u.pt", weights_only=True)["source"] == "PC 2 (sign -1)"
    b.layers.value = (0, 0)  # fewer layers -> a different strip
    assert (b.strip_images - strip).abs().max() > 0


def test_roi_drawer_sync_validation_and_json(G, tmp_path):
    d = ROIDrawer(G.synthesis(reference_latents(G, [0]))[0], json_path=tmp_path / "box.json")
    d.presets.value = "heart"
    assert d.box == preset("heart", 16) and d.scale == 16  # 16 px shown at 256 px
    assert d.canvas.bboxes[0]["x"] == d.box.x0 * 16
    d.fields["x1"].value = 15  # typing updates the box and the canvas
    assert d.box.x1 == 15 and d.canvas.bboxes[0]["width"] == (15 - d.box.x0) * 16
    # mouse drawing: the widget sends the new box at mouse down (no size yet), which must leave the
    # box being drawn alone, then at mouse up with its size
    before, drawn = d.box, dict(x=32, y=32, width=0, height=0, label="")
    d.canvas.bboxes = [*d.canvas.bboxes, drawn]
    assert d.box == before and d.canvas.bboxes[-1] == drawn
    d.canvas.bboxes = [*d.canvas.bboxes[:-1], dict(drawn, width=128, height=96)]
    assert (d.box.x0, d.box.y0, d.box.x1, d.box.y1) == (2, 2, 10, 8) and len(d.canvas.bboxes) == 1
    assert d.fields["x1"].value == 10
    good = d.box
    d.fields["x1"].value = 1  # x1 < x0: reported, not applied
    assert "empty or outside" in d.message.value and d.box == good
    d.set_box(good)
    d.save()
    d.set_preset("lung_lower_left")
    d.load()
    assert d.box == good


def test_large_films_are_shown_at_screen_size_and_boxes_stay_in_generator_pixels():
    image = torch.rand(1, 1024, 1024) * 2 - 1
    d = ROIDrawer(image)
    assert d.scale == 0.25 and Image.open(io.BytesIO(base64.b64decode(d._encode()))).size == (256, 256)
    d.set_preset("heart")
    assert d.box == preset("heart", 1024) and d.canvas.bboxes[0]["x"] == d.box.x0 / 4
    d.canvas.bboxes = [dict(x=50, y=60, width=100, height=80, label="roi")]  # a drag on the 256 px picture
    assert (d.box.x0, d.box.y0, d.box.x1, d.box.y1, d.box.resolution) == (200, 240, 600, 560, 1024)
    strip = strip_image([image[None].repeat(3, 1, 1, 1)], d.box, scale=0.125)  # area-averaged, box drawn
    assert strip.size == (3 * 128 + 2 * 2, 128)
    assert (np.asarray(strip)[:, :128] == [40, 220, 80]).all(-1).any()


def test_runner_side_by_side_and_stop(G, pca):
    box = preset("heart", 16)
    r = OptimizationRunner(G, reference_latents(G, [1]), box, u=pca.direction(0), config=FAST, update_every=2)
    r.compare.value = True
    r.sigma.value = 0.5
    res = r.run(block=True)
    assert set(res) == {"lo", "lo+dir", "linear"} and r.error is None
    assert res["lo+dir"].config.sigma == 0.5
    assert png(r.loss_plot.value).ndim == 3 and png(r.strip.value).shape[0] > 3 * 32
    r.compare.value = False
    r.stop_button.click()  # a stop pressed before the run does not stick ...
    r.run(block=True)
    assert r.results["lo+dir"].status != "stopped"
    r.max_steps.value = 100_000  # ... a stop during a (long) run ends it at the next update
    r.run(block=False)
    r.stop_button.click()
    assert r.wait(timeout=60)["lo+dir"].status == "stopped"
    r.theta.value = 200.0
    r.run(block=True)
    assert "theta_deg=200.0" in r.message.value


def test_figures_have_content(G, pca, tmp_path):
    box = Box(4, 4, 12, 12, 16)
    w = reference_latents(G, [0, 1])
    lo = optimize_trajectory(G, w, box, config=FAST, progress=False)
    lin = translate_along(G, w, pca.direction(0), FAST)
    img = np.asarray(strip_image([lo.sequence(0), lin.sequence(0)], box, scale=2))
    assert img.shape == (2 * 32 + 2, 5 * 32 + 4 * 2, 3)
    assert (img[:, :32] == [40, 220, 80]).all(-1).sum() > 20  # box outline on the first tile
    fig = comparison_figure({"Baseline LO": lo.sequence(0), "Linear": lin.sequence(0)}, box)
    assert len(fig.axes) == 4 * 5 and fig.axes[0].get_title(loc="left") == "Baseline LO"
    path = save_figure(fig, tmp_path / "fig.png")
    assert np.asarray(Image.open(path)).std() > 10
    save_figure(fig, tmp_path / "fig.pdf")
    assert (tmp_path / "fig.pdf").read_bytes()[:4] == b"%PDF"
    emb = umap_embedding({"lo": lo, "linear": lin})
    # each of the 2 references once, then 4 points per method and reference
    assert len(emb) == 2 + 2 * 2 * 4 and emb["x"].std() > 0
    assert (emb["method"] == "reference").sum() == 2 and set(emb["method"]) == {"reference", "lo", "linear"}
    lines = umap_figure(emb).axes[0].lines
    assert len(lines) == 2 * 2 + 1  # one per (method, reference), plus the stars
    assert lines[0].get_xdata()[0] == emb[(emb["method"] == "reference") & (emb["reference"] == 0)]["x"].item()
    other = replace(lin, w_ref=lin.w_ref + 1)
    with pytest.raises(ValueError, match="different reference 0"):
        umap_embedding({"lo": lo, "other": other})
    html = save_figure(umap_plotly(emb), tmp_path / "u.html").read_text()
    assert "plotly" in html and "ref 1" in html
    with pytest.raises(ValueError, match="expected .png"):
        save_figure(fig, tmp_path / "fig.gif")
