"""The paper's figures in one command (issue 35, item 5): PNG, PDF and SVG with their provenance."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxr_workbench.ui.cli import main


def test_fig3_is_written_in_three_formats_with_its_provenance_and_replays(tmp_path, capsys):
    out = tmp_path / "fig3"
    assert main(["figure", "fig3", "--max-steps", "3", "--out", str(out), "--no-progress"]) == 0
    png = np.asarray(Image.open(out / "fig3.png").convert("L"), dtype=float)
    assert png.shape[1] > png.shape[0] and png.std() > 20  # five rows of 13 films, not a blank page
    assert (out / "fig3.pdf").read_bytes().startswith(b"%PDF") and b"<svg" in (out / "fig3.svg").read_bytes()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["kind"] == "figure" and prov["request"]["name"] == "fig3" and prov["request"]["max_steps"] == 3
    capsys.readouterr()
    assert main(["replay", str(out), "--no-progress"]) == 0
    assert "the figure replays" in capsys.readouterr().out
    assert main(["figure", "fig3", "--max-steps", "3", "--out", str(out), "--no-progress"]) == 2  # no overwrite
    assert "pass --overwrite" in capsys.readouterr().err


def test_table2_keeps_its_numbers_beside_the_rendered_table(tmp_path, capsys):
    out = tmp_path / "t2"
    assert main(["figure", "table2", "--seed", "100-101", "--sigma", "1.0", "--max-steps", "3", "--out", str(out),
                 "--no-progress"]) == 0
    df = pd.read_csv(out / "table2.csv")
    assert set(df["disease"]) == {"cardiomegaly", "opacity"} and set(df["method"]) == {"lo", "lo+dir"}
    assert len(df) == 2 * 2 * 2 and df["PV"].notna().all()
    assert Image.open(out / "table2.png").size[0] > 100
    with pytest.raises(SystemExit) as e:  # argparse's own check: one line, exit 2
        main(["figure", "table2", "--sigma", "0", "--out", str(tmp_path / "bad"), "--no-progress"])
    assert e.value.code == 2 and "--sigma" in capsys.readouterr().err


def test_figures_from_existing_edit_sets_match_the_sets_and_replay(tmp_path, capsys):
    """fig3, fig5 and table2 drawn again from edit sets made before: the table's numbers are the sets'
    own, the figure replays, and sets that do not fit the figure are refused in one line."""
    sets = {}
    for box, method in (("heart", "lo"), ("heart", "lo+dir"), ("lung_lower_right", "lo+dir")):
        sets[box, method] = tmp_path / f"{box}_{method}"
        assert main(["edit", "--seed", "3-4", "--box", box, "--method", method, "--max-steps", "3",
                     "--out", str(sets[box, method]), "--no-progress"]) == 0
    cardio = [str(sets["heart", m]) for m in ("lo", "lo+dir")]
    everything = [str(p) for p in sets.values()]

    assert main(["figure", "fig3", "--from", *everything, "--out", str(tmp_path / "f3"), "--no-progress"]) == 0
    png = np.asarray(Image.open(tmp_path / "f3" / "fig3.png").convert("L"), dtype=float)
    assert png.shape[1] > png.shape[0] and png.std() > 20  # three rows of 13 films
    prov = json.loads((tmp_path / "f3" / "provenance.json").read_text())
    assert prov["request"]["sources"] == [str(Path(p).resolve()) for p in everything]
    assert prov["generator"]["sha256"] == json.loads((sets["heart", "lo"] / "provenance.json").read_text())[
        "generator"]["sha256"]
    capsys.readouterr()
    assert main(["replay", str(tmp_path / "f3"), "--no-progress"]) == 0
    assert "the figure replays" in capsys.readouterr().out

    assert main(["figure", "table2", "--from", *everything, "--out", str(tmp_path / "t2"), "--no-progress"]) == 0
    df = pd.read_csv(tmp_path / "t2" / "table2.csv").set_index(["disease", "method", "seed"])
    for (_, method), path in sets.items():
        m = json.loads((path / "metrics.json").read_text())
        for seed, row in zip((3, 4), m["per_reference"]):
            assert df.loc[(m["disease"], method, seed), "PV"] == pytest.approx(row["PV"])
    # a table made from an earlier table (and one more set) holds both
    assert main(["figure", "table2", "--from", str(tmp_path / "t2"), "--out", str(tmp_path / "t2b"),
                 "--no-progress"]) == 0
    assert len(pd.read_csv(tmp_path / "t2b" / "table2.csv")) == len(df) == 6

    assert main(["figure", "fig5", "--from", *cardio, "--out", str(tmp_path / "f5"), "--no-progress"]) == 0
    capsys.readouterr()
    refused = {"fig5 of two diseases": ["fig5", "--from", *everything],
               "the same edit twice": ["fig3", "--from", cardio[0], cardio[0]],
               "not a set": ["fig3", "--from", str(tmp_path)],
               "seeds with sets": ["fig3", "--from", *cardio, "--seed", "1"],
               "a checkpoint with sets": ["fig3", "--from", *cardio, "--checkpoint", "phantom"]}
    for why, args in refused.items():
        assert main(["figure", *args, "--out", str(tmp_path / "bad"), "--no-progress"]) == 2, why
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (why, err)
    assert not (tmp_path / "bad").exists()
