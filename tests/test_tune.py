"""Pivotal tuning, its weight delta, film-preserving edits and the residual (issue 36)."""
import pytest
import torch
from conftest import tiny_generator

from cxr_workbench.imaging.masks import Box
from cxr_workbench.method.film_edits import keep_film, residual_in_box, residual_warnings
from cxr_workbench.method.tune import TuneConfig, load_tuning, msssim, save_tuning, tune_generator
from cxr_workbench.model.checkpoints import generator_key


@pytest.fixture(scope="module")
def G():
    return tiny_generator(img_resolution=64)


@pytest.fixture(scope="module")
def films(G):
    """Two films the generator does not draw: a bright square and a vertical line on its renderings."""
    with torch.no_grad():
        base = G.synthesis(G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(1)), None))
    films = base.clone()
    films[0, :, 20:40, 20:40] = 0.9
    films[1, :, :, 30:32] = -0.9
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(2)), None)
    return films.clamp(-1, 1), ws


def test_msssim_is_one_for_the_same_image_and_falls_with_noise():
    a = torch.rand(2, 1, 64, 64) * 2 - 1
    torch.testing.assert_close(msssim(a, a), torch.ones(2))
    noisy = (a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    assert (msssim(a, noisy) < 0.95).all()
    with pytest.raises(ValueError, match="images of 16 px; MS-SSIM needs more than 32 px"):
        msssim(a[..., :16, :16], a[..., :16, :16])


def test_tuning_brings_the_pivots_to_their_films_and_leaves_g_alone(G, films):
    target, ws = films
    key = generator_key(G)
    r = tune_generator(G, target, ws, TuneConfig(steps=60, locality_weight=0), progress=False)
    assert generator_key(G) == key  # tuned on a copy
    assert (r.psnr > r.psnr_before + 3).all(), (r.psnr_before, r.psnr)
    assert r.history[-1] < r.history[0]
    assert not any(p.requires_grad for p in r.G.parameters())
    # the mapping network is not tuned: W, its PCA and the directions in it stay
    for a, b in zip(G.mapping.parameters(), r.G.mapping.parameters()):
        assert torch.equal(a, b)


def test_the_locality_regulariser_keeps_latents_away_from_the_pivots_as_they_were(G, films):
    target, ws = films
    far = G.mapping(torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(9)), None)
    with torch.no_grad():
        before = G.synthesis(far)
    change = {}
    for weight in (0.0, 1.0):
        r = tune_generator(G, target, ws, TuneConfig(steps=40, locality_weight=weight), progress=False)
        with torch.no_grad():
            change[weight] = float((r.G.synthesis(far) - before).abs().mean())
    assert change[1.0] < 0.8 * change[0.0], change


def test_a_tuning_file_rebuilds_the_tuned_generator_and_refuses_what_does_not_match(G, films, tmp_path):
    target, ws = films
    r = tune_generator(G, target, ws, TuneConfig(steps=5), progress=False)
    path, rebuilt = save_tuning(tmp_path / "tuned.pt", G, r.G, ws)
    loaded = load_tuning(path, G, ws)
    assert generator_key(loaded) == generator_key(rebuilt)
    with torch.no_grad():
        torch.testing.assert_close(loaded.synthesis(ws), r.G.synthesis(ws), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="was tuned from generator .*, not from this one"):
        load_tuning(path, tiny_generator(img_resolution=64, z_dim=8, w_dim=8, channel_max=8), ws)
    with pytest.raises(ValueError, match="tuned for other latents than these"):
        load_tuning(path, G, ws + 0.1)
    data = torch.load(path, weights_only=True)
    name = next(iter(data["delta"]))
    data["delta"][name] = data["delta"][name] + 1e-3
    torch.save(data, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="do not match their checksum; the file is damaged"):
        load_tuning(tmp_path / "damaged.pt", G, ws)
    torch.save({"u": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a tuning file"):
        load_tuning(tmp_path / "other.pt", G, ws)


def test_a_soft_mask_is_zero_outside_the_box_and_one_deep_inside():
    box = Box(10, 20, 40, 50, resolution=64)
    soft = box.soft_mask(4.0)
    hard = box.mask()
    assert torch.equal(soft[hard == 0], torch.zeros(int((hard == 0).sum())))
    assert torch.equal(soft[28:42, 18:32], torch.ones(14, 14))
    assert 0 < float(soft[20, 25]) < 1  # the edge row rises
    assert torch.equal(box.soft_mask(0), hard)


def test_a_film_preserving_edit_keeps_every_pixel_outside_the_box():
    box = Box(16, 16, 48, 48, resolution=64)
    g = torch.Generator().manual_seed(0)
    films = torch.rand(2, 1, 64, 64, generator=g) * 2 - 1
    seqs = torch.rand(2, 5, 1, 64, 64, generator=g) * 2 - 1
    kept = keep_film(films, seqs, box)
    outside = box.mask() == 0
    for t in range(5):
        assert torch.equal(kept[:, t][..., outside], films[..., outside])
    assert torch.equal(kept[:, 0], films)  # the first point is the film itself
    centre = (slice(None), slice(None), slice(None), slice(30, 34), slice(30, 34))
    expected = (films[:, None] + seqs - seqs[:, :1]).clamp(-1, 1)
    torch.testing.assert_close(kept[centre], expected[centre])
    with pytest.raises(ValueError, match="expected \\[N, C, H, W\\] and \\[N, T, C, H, W\\]"):
        keep_film(films[:1], seqs, box)


def test_the_residual_shows_a_line_the_generator_does_not_draw_and_warns_inside_the_box():
    box = Box(16, 16, 48, 48, resolution=64)
    recon = torch.zeros(2, 1, 64, 64)
    films = recon.clone()
    films[1, :, :, 30:34] = 1.0  # a line through the box, as a lead would be
    inside = residual_in_box(films, recon, box)
    assert float(inside[0]) == 0 and float(inside[1]) == pytest.approx(4 / 32)
    lines = residual_warnings(["clean.png", "lead.png"], inside)
    assert len(lines) == 1 and lines[0].startswith("lead.png: the reconstruction differs from the film inside the box")


def test_invert_tune_then_edit_and_augment_the_films_from_the_cli(tmp_path, capsys):
    """invert --tune writes tuned.pt into the set; edit --latents and augment --latents render with
    the tuned generator (directions found on the shipped one); --keep-film keeps the film outside
    the box; a tuning that does not belong to the latents is refused."""
    import json
    import shutil

    import numpy as np
    from PIL import Image

    from cxr_workbench.imaging.sources import demo_film
    from cxr_workbench.ui.cli import main
    Image.fromarray((demo_film("drr", 3, size=96) * 65535).astype(np.uint16)).save(tmp_path / "film.png")
    inv = tmp_path / "inv"
    assert main(["invert", "--image", str(tmp_path / "film.png"), "--steps", "20", "--tune", "20", "--out", str(inv),
                 "--no-progress"]) == 0
    row = json.loads((inv / "metrics.json").read_text())["per_image"][0]
    assert row["psnr_tuned"] > row["psnr"] and f"({row['psnr_tuned']:.1f} dB tuned)" in capsys.readouterr().out
    assert torch.load(inv / "latents.pt", weights_only=True)["tuned"] == "tuned.pt" and (inv / "tuned.pt").is_file()
    edit = tmp_path / "edit"
    assert main(["edit", "--latents", str(inv / "latents.pt"), "--keep-film", "--max-steps", "3", "--out", str(edit),
                 "--no-progress"]) == 0
    metrics = json.loads((edit / "metrics.json").read_text())
    assert "the film plus the edit's change" in metrics["sequence"] and "tuned" in metrics["sequence"]
    assert len(metrics["residual_in_box"]) == 1
    aug = tmp_path / "aug"
    assert main(["augment", "--latents", str(inv / "latents.pt"), "--disease", "cardiomegaly", "--samples", "1",
                 "--keep-last", "1", "--max-steps", "2", "--out", str(aug), "--no-progress"]) == 0
    header = json.loads((aug / "set.json").read_text())
    assert header["tuned_from"] != header["generator"]
    # a tuning beside other latents: refused in one line
    other = tmp_path / "other"
    assert main(["invert", "--image", str(tmp_path / "film.png"), "--steps", "5", "--seed", "1", "--out", str(other),
                 "--no-progress"]) == 0
    capsys.readouterr()
    data = torch.load(other / "latents.pt", weights_only=True)
    data["tuned"] = "tuned.pt"
    torch.save(data, other / "latents.pt")
    shutil.copy(inv / "tuned.pt", other / "tuned.pt")
    assert main(["edit", "--latents", str(other / "latents.pt"), "--out", str(tmp_path / "e2"), "--no-progress"]) == 2
    assert "tuned.pt was tuned for other latents than these" in capsys.readouterr().err
    # films that do not fit the generator: refused naming the file
    data.update(tuned=None, films=torch.zeros(1, 1, 32, 32))
    torch.save(data, other / "latents.pt")
    assert main(["edit", "--latents", str(other / "latents.pt"), "--keep-film", "--out", str(tmp_path / "e3"),
                 "--no-progress"]) == 2
    assert f"{other / 'latents.pt'}: its films: images have shape (1, 1, 32, 32)" in capsys.readouterr().err


def test_a_lead_the_generator_does_not_draw_shows_in_the_residual(tmp_path):
    """A line no film has (demo_film's lead) is missing from the reconstruction: the residual
    along it is several times the residual elsewhere."""
    import numpy as np
    from PIL import Image

    from cxr_workbench.assets import load_default_generator
    from cxr_workbench.imaging.datasets import load_films
    from cxr_workbench.imaging.sources import demo_film
    from cxr_workbench.method.film_edits import residual
    from cxr_workbench.method.invert import InvertConfig, invert
    plain, lead = demo_film("drr", 3, size=128), demo_film("drr", 3, size=128, lead=True)
    assert (lead[lead != plain] == 1.0).all() and (lead != plain).mean() > 0.002  # only the line differs
    for name, film in (("plain", plain), ("lead", lead)):
        Image.fromarray((film * 65535).astype(np.uint16)).save(tmp_path / f"{name}.png")
    films = load_films([tmp_path / "plain.png", tmp_path / "lead.png"], 64)
    G = load_default_generator()
    r = residual(films, invert(G, films, InvertConfig(steps=60), progress=False).images)[1, 0].abs()
    line = (films[1] - films[0])[0].abs() > 0.2  # where the lead is, at 64 px
    assert line.sum() > 20 and r[line].mean() > 3 * r[~line].mean(), (r[line].mean(), r[~line].mean())
