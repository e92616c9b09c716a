import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.method.invert import InvertConfig, invert, psnr
from cxr_workbench.model.latents import reference_latents, synthesize
from cxr_workbench.model.oracle import SeverityOracle


@pytest.fixture(scope="module")
def G():
    return tiny_generator(z_dim=16, w_dim=16)


def test_inversion_recovers_generated_images(G):
    w_true = reference_latents(G, [11, 12, 13])
    target = synthesize(G, w_true).clamp(-1, 1)
    start = synthesize(G, G.w_avg[None, None].expand(3, G.num_ws, -1))
    res = invert(G, target, InvertConfig(steps=80, restarts=2), progress=False)
    assert res.ws.shape == (3, G.num_ws, 16) and res.images.shape == target.shape
    assert (res.psnr > psnr(start, target) + 3).all(), (res.psnr, psnr(start, target))
    assert res.history[-1] < res.history[0] and (res.ssim > 0.5).all()
    torch.testing.assert_close(synthesize(G, res.ws), res.images)  # the latent alone reproduces it


def test_w_space_and_oracle_features(G):
    target = synthesize(G, reference_latents(G, [3])).clamp(-1, 1)
    oracle = SeverityOracle(resolution=16, width=4).eval().requires_grad_(False)
    res = invert(G, target, InvertConfig(space="w", steps=20, restarts=1), oracle=oracle, progress=False)
    assert (res.ws - res.ws[:, :1]).abs().max() == 0  # one w for every layer
    again = invert(G, target, InvertConfig(space="w", steps=20, restarts=1), oracle=oracle, progress=False)
    torch.testing.assert_close(again.ws, res.ws)  # seeded


@pytest.mark.parametrize("bad,match", [(dict(space="z"), "space='z'"), (dict(steps=0), "steps=0"),
                                       (dict(lr=float("nan")), "lr=nan"), (dict(restarts=0), "restarts=0")])
def test_bad_settings_and_images(G, bad, match):
    with pytest.raises(ValueError, match=match):
        invert(G, torch.zeros(1, 1, 16, 16), InvertConfig(**bad), progress=False)
    with pytest.raises(ValueError, match="expected \\[N, 1, 16, 16\\]"):
        invert(G, torch.zeros(1, 1, 32, 32), progress=False)
    with pytest.raises(ValueError, match="in \\[-1, 1\\]"):
        invert(G, torch.full((1, 1, 16, 16), 3.0), progress=False)


@pytest.fixture(scope="module")
def films(tmp_path_factory, G):
    """A JPEG (wider than tall) and a MONOCHROME1 DICOM of a phantom, and a checkpoint of G."""
    import numpy as np
    from PIL import Image
    from test_datasets import write_dicom

    from cxr_workbench.imaging import phantom
    from cxr_workbench.model.checkpoints import save_generator
    d = tmp_path_factory.mktemp("films")
    img, _ = phantom.render(phantom.sample_params(np.random.default_rng(5), "normal"), 48)
    wide = np.zeros((48, 80), np.float32)
    wide[:, 16:64] = img
    Image.fromarray((wide * 255).astype(np.uint8)).convert("RGB").save(d / "film.jpg", quality=95)
    write_dicom(d / "film.dcm", ((1 - img) * 4095).astype(np.uint16), photometric="MONOCHROME1")
    Image.fromarray(np.tile(np.arange(10, dtype=np.uint8) * 20, (10, 1))).save(d / "tiny.png")
    save_generator(d / "g.pt", G)
    return d


def test_invert_and_edit_films_from_the_cli(films, tmp_path, monkeypatch):
    import json

    from cxr_workbench.imaging.datasets import load_films
    from cxr_workbench.model import oracle
    from cxr_workbench.ui.cli import main
    jpg, dcm = load_films([films / "film.jpg", films / "film.dcm"], 16)
    assert (jpg - dcm).abs().mean() < 0.1  # MONOCHROME1 inverted; the JPEG cropped, not squeezed
    out = tmp_path / "inv"
    assert main(["invert", "--checkpoint", str(films / "g.pt"), "--image", str(films / "film.jpg"),
                 str(films / "film.dcm"), "--steps", "10", "--out", str(out), "--no-progress"]) == 0
    rows = json.loads((out / "metrics.json").read_text())["per_image"]
    assert len(rows) == 2 and all(r["psnr"] > 0 for r in rows)
    assert torch.load(out / "latents.pt", weights_only=True)["ws"].shape == (2, 6, 16)
    edit = tmp_path / "edit"
    loads = []
    monkeypatch.setattr(oracle, "load_oracle", lambda path, _load=oracle.load_oracle: loads.append(path) or _load(path))
    assert main(["edit", "--checkpoint", str(films / "g.pt"), "--image", str(films / "film.dcm"), "--box", "heart",
                 "--invert-steps", "10", "--max-steps", "5", "--layers", "0-3", "--direction", "pc:0",
                 "--out", str(edit), "--no-progress"]) == 0
    metrics = json.loads((edit / "metrics.json").read_text())
    assert metrics["inversion"][0]["psnr"] > 0 and "starts each row with the film" in metrics["sequence"]
    assert len(loads) == 1  # the shipped oracle reads the edit and checks the inversion: loaded once


def test_films_too_small_or_missing_are_refused(films, tmp_path, capsys):
    from cxr_workbench.ui.cli import main
    base = ["invert", "--checkpoint", str(films / "g.pt"), "--steps", "2", "--no-progress"]
    assert main(base + ["--image", str(films / "tiny.png"), "--out", str(tmp_path / "a")]) == 2
    assert "tiny.png: 10x10 pixels is smaller than the model's 16 px" in capsys.readouterr().err
    assert main(base + ["--image", str(films / "tiny.png"), "--upsample", "--out", str(tmp_path / "b")]) == 0
    assert main(base + ["--image", str(films / "nope.png"), "--out", str(tmp_path / "c")]) == 2
    assert "nope.png" in capsys.readouterr().err and not (tmp_path / "c" / "metrics.json").exists()
