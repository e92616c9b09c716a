"""Output sets that replay (issue 35, item 4): provenance.json in every set, `replay` runs it again."""
import json
import shutil

import torch

from cxr_workbench.ui.cli import main


def test_an_edit_replays_and_a_changed_set_or_generator_does_not(tmp_path, capsys):
    out = tmp_path / "edit"
    assert main(["edit", "--seed", "0-1", "--max-steps", "4", "--out", str(out), "--no-progress"]) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["kind"] == "edit" and prov["request"]["seeds"] == [0, 1]
    assert prov["generator"]["name"] == "generator.pt" and len(prov["generator"]["sha256"]) == 64
    assert prov["direction"]["source"].startswith("auto: PC") and prov["versions"]["torch"] == torch.__version__
    assert prov["command"] is None  # run in this process, not from the cxr-workbench script
    capsys.readouterr()
    assert main(["replay", str(out), "--no-progress"]) == 0
    assert "the edit replays: it matches a fresh run within" in capsys.readouterr().out
    # the set changed after it was made: the replay says which file, exit 2
    data = torch.load(out / "latents.pt", weights_only=True)
    data["points"] = data["points"] + 0.01
    torch.save(data, out / "latents.pt")
    assert main(["replay", str(out), "--no-progress"]) == 2
    line = capsys.readouterr().out.strip()
    assert "does NOT replay: latents.pt: points differs by up to 0.01" in line and "\n" not in line
    # a generator that changed since: refused before running
    gen = tmp_path / "g.pt"
    shutil.copy(prov["generator"]["path"], gen)
    prov["generator"]["path"] = prov["request"]["checkpoint"] = str(gen)
    (out / "provenance.json").write_text(json.dumps(prov))
    with open(gen, "ab") as f:
        f.write(b"\0")
    assert main(["replay", str(out), "--no-progress"]) == 2
    assert f"generator {gen}: changed since the set was made" in capsys.readouterr().out


def test_sets_and_films_replay_and_a_folder_without_provenance_is_refused(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from cxr_workbench.imaging.sources import demo_film
    aug = tmp_path / "aug"
    assert main(["augment", "--disease", "cardiomegaly", "--samples", "2", "--keep-last", "2", "--max-steps", "2",
                 "--out", str(aug), "--no-progress"]) == 0
    assert json.loads((aug / "provenance.json").read_text())["request"]["samples"] == 2
    Image.fromarray((demo_film("drr", 3, size=96) * 255).astype(np.uint8)).save(tmp_path / "film.png")
    inv = tmp_path / "inv"
    assert main(["invert", "--image", str(tmp_path / "film.png"), "--steps", "5", "--tune", "3", "--out", str(inv),
                 "--no-progress"]) == 0
    capsys.readouterr()
    for folder, kind in ((aug, "augment"), (inv, "invert")):
        assert main(["replay", str(folder), "--no-progress"]) == 0
        assert f"the {kind} replays" in capsys.readouterr().out
    assert main(["replay", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{tmp_path} holds no provenance.json" in err and "\n" not in err
