import json

import numpy as np
import pandas as pd
import pytest
from conftest import tiny_generator
from PIL import Image

from cxr_workbench.model.checkpoints import save_generator
from cxr_workbench.ui.cli import main, seed_list


def test_parse_seeds():
    assert seed_list("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("5-2", "2-", "x"):
        with pytest.raises(Exception, match=f"seeds='{bad}'"):
            seed_list(bad)


def test_sample_random_init_and_checkpoint(tmp_path, capsys):
    assert main(["sample", "--random-init", "--seeds", "0-3", "--cols", "2", "--out", str(tmp_path / "a.png")]) == 0
    assert "RANDOM-INIT" in capsys.readouterr().out
    grid = np.asarray(Image.open(tmp_path / "a.png"))
    assert grid.shape == (128, 128) and grid.std() > 0
    save_generator(tmp_path / "g.pt", tiny_generator(mapping_layers=1))
    out = tmp_path / "b.png"
    assert main(["sample", "--checkpoint", str(tmp_path / "g.pt"), "--seeds", "0-2", "--out", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape == (16, 16 * 8)
    # never overwrite silently
    assert main(["sample", "--checkpoint", str(tmp_path / "g.pt"), "--seeds", "0", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


def test_sample_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"nope")
    assert main(["sample", "--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "o.png")]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err


def test_augment_then_classify_end_to_end(tmp_path, capsys):
    """The two commands of the augmentation loop on the shipped model, at toy sizes."""
    sets = []
    for disease in ("cardiomegaly", "opacity"):
        out = tmp_path / disease
        assert main(["augment", "--disease", disease, "--samples", "4", "--keep-last", "2", "--max-steps", "2",
                     "--batch", "2", "--out", str(out), "--no-progress"]) == 0
        assert f"4 {disease} samples -> {out}" in capsys.readouterr().out
        assert len(list((out / "images").glob("*.png"))) == 4
        sets.append(str(out))
    # a second call finds the set complete and adds nothing
    assert main(["augment", "--disease", "opacity", "--samples", "4", "--keep-last", "2", "--max-steps", "2",
                 "--out", sets[1], "--no-progress"]) == 0
    assert len(list((tmp_path / "opacity" / "images").glob("*.png"))) == 4
    capsys.readouterr()
    args = ["classify", "--sets", *sets, "--out", str(tmp_path / "cls"), "--n-normal", "16", "--n-disease", "4",
            "--n-aug", "4", "--n-val", "8", "--n-test", "8", "--epochs", "1", "--seeds", "2", "--no-progress"]
    assert main(args + ["--save-models"]) == 0
    out = capsys.readouterr().out
    assert "N vs C vs O" in out and "ours+rand" in out and "paired t-test" in out
    assert len(list((tmp_path / "cls" / "predictions").glob("*.csv"))) == 3 * 4 * 2
    assert len(list((tmp_path / "cls" / "models").glob("*.pt"))) == 3 * 4 * 2
    assert (tmp_path / "cls" / "table.txt").read_text().strip() in out
    prov = json.loads((tmp_path / "cls" / "provenance.json").read_text())
    assert prov["kind"] == "classify" and prov["request"]["overrides"]["epochs"] == 1
    assert prov["request"]["sets"] == [str((tmp_path / d).resolve()) for d in ("cardiomegaly", "opacity")]
    # a classifier trained by classify reads edits and sets in place of the oracle
    model = tmp_path / "cls" / "models" / "NCO_d4_real_seed0.pt"
    assert main(["edit", "--seed", "0", "--max-steps", "3", "--reader", str(model), "--out", str(tmp_path / "e"),
                 "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["reader"] == "classifier NCO_d4_real_seed0.pt"
    assert metrics["per_reference"][0]["severity"] == "p_cardiomegaly"
    assert -1 <= metrics["per_reference"][0]["severity_trend"] <= 1
    capsys.readouterr()
    # references given as latents: this one-epoch classifier reads every generated film as opacity, so
    # it could not pick normal references itself (said in one line, below)
    import torch

    from cxr_workbench.assets import load_default_generator
    from cxr_workbench.model.latents import reference_latents
    torch.save({"ws": reference_latents(load_default_generator(), [5])}, tmp_path / "lat.pt")
    assert main(["augment", "--disease", "opacity", "--samples", "2", "--keep-last", "2", "--max-steps", "2",
                 "--reader", str(model), "--latents", str(tmp_path / "lat.pt"),
                 "--out", str(tmp_path / "by_classifier"), "--no-progress"]) == 0
    assert "classifier NCO_d4_real_seed0.pt reads" in capsys.readouterr().out
    manifest = pd.read_csv(tmp_path / "by_classifier" / "manifest.csv")
    assert set(manifest["reader"]) == {"classifier NCO_d4_real_seed0.pt"} and manifest["ctr"].isna().all()
    assert manifest["severity"].between(0, 1).all() and manifest["read_as"].isin([True, False]).all()
    head = json.loads((tmp_path / "by_classifier" / "set.json").read_text())
    assert head["reader"] == "classifier NCO_d4_real_seed0.pt"
    # a varied, verified set with spread points, labels checked by that classifier
    torch.save({"ws": reference_latents(load_default_generator(), [5, 6])}, tmp_path / "lat2.pt")
    assert main(["augment", "--disease", "opacity", "--samples", "3", "--keep-last", "2", "--max-steps", "2",
                 "--points", "spread", "--vary-box", "--verify", "--reader", str(model),
                 "--latents", str(tmp_path / "lat2.pt"), "--out", str(tmp_path / "varied"), "--no-progress"]) == 0
    assert "3 opacity samples" in capsys.readouterr().out
    manifest = pd.read_csv(tmp_path / "varied" / "manifest.csv")
    assert manifest["in_set"].sum() == 3 and manifest.loc[manifest["in_set"], "read_as"].all()
    assert set(manifest["point_index"]) <= {7, 12} and manifest["u_source"].str.startswith("lung_").all()
    # one that cannot read the disease is refused in one line
    assert main(["augment", "--disease", "opacity", "--samples", "2", "--max-steps", "2", "--reader",
                 str(tmp_path / "cls" / "models" / "NC_d4_real_seed0.pt"), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert "does not read opacity (it reads ['cardiomegaly'])" in capsys.readouterr().err
    # too few augmented samples for the protocol asked: refused before the first run
    assert main(args[:-1] + ["--n-aug", "20", "--out", str(tmp_path / "cls2"), "--no-progress"]) == 2
    assert "has 4 samples; the run NCO_d4_ours_s0.3_seed0 needs 10 (n_aug=20)" in capsys.readouterr().err
    assert not list((tmp_path / "cls2" / "predictions").iterdir())
