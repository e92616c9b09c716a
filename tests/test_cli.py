import numpy as np
import pytest
from PIL import Image

from cxr_workbench.checkpoints import save_generator
from conftest import tiny_generator
from cxr_workbench.cli import main, seed_list


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
