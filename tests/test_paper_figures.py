"""The paper's figures in one command (issue 35, item 5): PNG, PDF and SVG with their provenance."""
import json

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
